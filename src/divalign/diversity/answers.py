"""Answer-level diversity and correctness: unique final answers and unbiased pass@k (Chen et al., arXiv 2107.03374)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####\s*(.+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox``), matching nested braces (which a regex cannot)."""
    starts = [match.end() for match in _BOXED.finditer(text)]
    if not starts:
        return None
    depth = 1
    for position in range(starts[-1], len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[starts[-1] : position]
    return None  # unbalanced: the text was cut off inside the box


def extract_final_answer(text: str) -> str:
    """Heuristic final answer: last \\boxed{...}, else text after "####" (GSM8K), else the last number, else the
    last non-empty line. Normalised (whitespace collapsed, trailing period and thousands commas dropped)."""
    answer = last_boxed(text)
    if answer is None and (hashes := _HASHES.findall(text)):
        answer = hashes[-1]
    if answer is None and (numbers := _NUMBER.findall(text)):
        answer = numbers[-1]
    if answer is None:
        lines = [line for line in text.splitlines() if line.strip()]
        answer = lines[-1] if lines else ""
    answer = " ".join(answer.split()).rstrip(".")
    return answer.replace(",", "") if _NUMBER.fullmatch(answer) else answer


def unique_answers(texts: Sequence[str]) -> float:
    """Number of distinct final answers among the samples (Karouzos et al., arXiv 2604.16027, count answer modes)."""
    return float(len({extract_final_answer(t) for t in texts})) if texts else math.nan


def final_answer_matches(completion: str, answer: str | None) -> bool:
    """Ready-made verifier for `divalign eval --verifier`: the extracted final answer equals the reference one."""
    if answer is None:
        return False
    return extract_final_answer(completion) == extract_final_answer(str(answer))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 − C(n − c, k) / C(n, k) from n samples with c correct (Chen et al. 2021, eq. 1).

    Computed as a running product, which stays exact in floating point where the binomials would overflow.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples, got n={n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
    return 1.0 - prob_all_wrong
