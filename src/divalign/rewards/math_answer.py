"""Verifiable math reward: 1 when the completion's final answer equals the reference answer, else 0.

The final answer is read the way math RL recipes ask models to write it: the last ``\\boxed{...}`` (DeepSeekMath,
Shao et al., arXiv 2402.03300; MATH, Hendrycks et al., NeurIPS 2021), else a ``final answer: X`` line, else a
GSM8K-style ``#### X`` line (Cobbe et al., arXiv 2110.14168). Unlike the heuristic of
:func:`divalign.diversity.extract_final_answer`, there is no fallback to "the last number": an answer the model did not
mark earns nothing, otherwise the policy learns to end on a number instead of to answer.

Two marked answers are equal when their exact values agree (integers, decimals, fractions, thousands separators), or
else when Hugging Face's ``math_verify`` (what TRL's ``accuracy_reward`` uses) finds the two LaTeX expressions
equivalent (``\\frac{\\sqrt{2}}{2}`` and ``\\frac{1}{\\sqrt{2}}``). ``math_verify`` reads the answers this module
extracted, not the whole completion: ``accuracy_reward``, which parses whole completions and references, misses "The
final answer is 5.0", a GSM8K ``#### 72`` reference and ``\\boxed{x^{2}+1}`` against ``x^{2} + 1``
(tests/test_rewards.py).
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from typing import Any

from math_verify import parse, verify

from ..diversity.answers import last_boxed
from .base import completion_text

_FINAL_LINE = re.compile(r"final\s+answer\s*(?:is|:)\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"^\s*####\s*(.+)$", re.MULTILINE)
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEXT_WRAPPER = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}")
_GROUPED_NUMBER = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:/[+-]?\d+(?:\.\d*)?)?$")


def extract_answer(text: str) -> str | None:
    """The marked final answer of ``text``: last ``\\boxed{}``, else "final answer: X", else "#### X"; or None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_FINAL_LINE, _HASHES):
        found = pattern.findall(text)
        if found:
            return found[-1]
    return None


def _strip_latex(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip().strip("$").strip()  # "$42$." as well as "$42.$"
    answer = answer.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    answer = answer.replace("\\$", "").replace("\\%", "").rstrip("%")
    answer = _TEXT_WRAPPER.sub(r"\1", answer)
    # \frac{a}{b} may nest inside another \frac; substitute until nothing changes
    while (replaced := _LATEX_FRACTION.sub(r"(\1)/(\2)", answer)) != answer:
        answer = replaced
    answer = answer.strip().rstrip(".").strip()
    while answer.startswith("{") and answer.endswith("}") and last_boxed("\\boxed" + answer) == answer[1:-1]:
        answer = answer[1:-1].strip()  # {5} or {{5}}: braces around the whole answer carry nothing
    return answer


def _as_number(answer: str) -> Fraction | None:
    """Exact value of an integer, decimal or simple fraction (``1,234``, ``2.0``, ``3/4``, ``(3)/(4)``); else None."""
    compact = answer.replace(" ", "").replace("(", "").replace(")", "")
    if _GROUPED_NUMBER.match(compact):
        compact = compact.replace(",", "")
    if not _PLAIN_NUMBER.match(compact):
        return None
    numerator, _, denominator = compact.partition("/")
    try:
        value = Fraction(numerator)
        return value / Fraction(denominator) if denominator else value
    except (ValueError, ZeroDivisionError):
        return None


def normalize_answer(answer: str) -> Fraction | str:
    """A comparable form: the exact number when the answer is numeric, else the answer without spaces or LaTeX glue."""
    cleaned = _strip_latex(answer)
    number = _as_number(cleaned)
    return number if number is not None else cleaned.replace(" ", "")


def reference_answer(reference: Any) -> str:
    """The reference's final answer: the marked part of a worked solution (MATH, GSM8K), else the whole text."""
    text = str(reference)
    marked = extract_answer(text)
    return marked if marked is not None else text


def _as_latex(answer: str) -> str:
    """A marked answer as one inline-math expression for ``math_verify``: ``$...$`` around it, once."""
    return "$" + answer.strip().rstrip(".").strip().strip("$").strip() + "$"


def equivalent_expressions(predicted: str, reference: str) -> bool:
    """Whether ``math_verify`` parses both answers and finds them equal. Its timeouts use ``signal.alarm``, which
    works only in the main thread: elsewhere they are off (as in TRL's ``accuracy_reward``)."""
    main_thread = threading.current_thread() is threading.main_thread()
    parse_timeout, verify_timeout = (10, 5) if main_thread else (None, None)
    gold = parse(_as_latex(reference), parsing_timeout=parse_timeout)
    answer = parse(_as_latex(predicted), parsing_timeout=parse_timeout)
    return bool(gold) and bool(answer) and verify(gold, answer, timeout_seconds=verify_timeout)


def answers_match(completion: str, reference: Any) -> bool:
    predicted = extract_answer(completion)
    if predicted is None or reference is None:
        return False
    gold = reference_answer(reference)
    # The exact values settle plain numbers without sympy (about 0.03 ms a pair against math_verify's 2.5 ms, for
    # every completion of every GRPO step); math_verify decides what they cannot: other forms of one expression
    return normalize_answer(predicted) == normalize_answer(gold) or equivalent_expressions(predicted, gold)


class MathAnswerReward:
    """1.0 when the completion's marked final answer equals the dataset's reference answer, else 0.0.

    Args:
        answer_column: the dataset column holding the reference; by default `answer`, else `solution`.
    """

    __name__ = "math_answer"
    binary = True  # 0/1 verdicts: a sample is correct or not (pass@k, correct-only diversity)
    COLUMNS = ("answer", "solution")

    def __init__(self, answer_column: str | None = None) -> None:
        self.answer_column = answer_column

    def required_columns(self) -> list[tuple[str, ...]]:
        return [(self.answer_column,)] if self.answer_column else [(c,) for c in self.COLUMNS]

    def _references(self, columns: dict[str, Any]) -> list[Any]:
        names = [self.answer_column] if self.answer_column else list(self.COLUMNS)
        for name in names:
            if name in columns:
                return list(columns[name])
        raise ValueError(f"math_answer needs a dataset column {' or '.join(map(repr, names))}; got {sorted(columns)}")

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        references = self._references(kwargs)
        return [float(answers_match(completion_text(c), r)) for c, r in zip(completions, references, strict=True)]
