"""A reward of the registry, or a function of your own, as the quality of sampled completions: the one grammar and
the one ``Quality`` object behind the ``quality:`` of a recipe's ``diversity:`` block (the training callback, parsed
once per run by its config), ``divalign eval --quality`` and ``--verifier`` (the frontier, and quality next to
diversity) and a compare spec's ``evaluation.quality``.

The value takes the forms a GRPO recipe's ``rewards:`` entries take, names a reward model, or a function:

    quality: toy_validity                           # a registry name, default settings
    quality: {math_answer: {answer_column: answer}} # a name and its settings (also as a JSON string)
    quality: reward_model:models/my_rm              # a sequence-classification checkpoint (the `reward_model` reward)
    quality: models/my_rm                           # the same, as a local directory
    quality: myquality:score                        # fn(completion, answer) -> float, MODULE installed or a .py file
                                                    # in the current directory

The reward is called as TRL calls it (``prompts``, ``completions``, ``completion_ids`` and the prompt records' other
fields as dataset columns, one value per completion) and scores each sample. When the policy read its prompts
through a chat template, the reward sees the conversation the policy took part in: a plain prompt is one user turn,
each completion one assistant turn (a reward model then renders it with its own chat template). A function of your
own gets each sample's text and its prompt's reference answer. A verifier (a reward with ``binary = True``:
``math_answer``, ``toy_validity``, a one-check ``format``) gives 0/1 verdicts: a sample is correct when it scores 1.
Another reward defines correctness only through a threshold. Every score must be a number (None or NaN: the sample
has no score); anything else, an infinite score or a reward that raises is refused naming the prompt and sample.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..user_code import load_callable
from .base import completion_text
from .registry import REWARDS, RewardSpec, build, parse_reward
from .reward_model import check_reward_model_reference

if TYPE_CHECKING:
    from ..prompts import PromptRecord

WHERE = "diversity.quality"
REWARD_MODEL_PREFIX = "reward_model:"
# What the reward call passes itself: a prompt record's field of the same name is never a dataset column
_CALL_ARGUMENTS = ("prompts", "completions", "completion_ids")
# Group-relative rewards: a sample's score depends on its rollout siblings, and scoring gathers across processes
GROUP_REWARDS = ("darling",)
ANSWER_COLUMNS = ("answer", "solution")  # a function's reference answer, as the prompt loader reads it


@dataclass(frozen=True)
class FunctionSpec:
    """A quality function of your own: ``fn(completion, answer) -> float``, named by its ``MODULE:FUNCTION``. With
    ``verdict``, a verifier: its truth as a 0/1 score, its errors its own (`divalign.user_code.checked_verifier`)."""

    name: str
    fn: Callable[[str, str | None], Any]
    verdict: bool = False


def parse_quality(value: Any, where: str = WHERE) -> RewardSpec | FunctionSpec:
    """The reward a quality value names: a registry name, a one-key mapping ``{name: settings}`` (or its JSON),
    ``reward_model:PATH``, the path of a local reward-model directory, or ``MODULE:FUNCTION`` (imported now; a
    Python callable is taken as it is, a :class:`FunctionSpec` too). Errors start with ``where`` (the recipe key or
    flag) and say what it accepts; a reward model's local path must hold a checkpoint."""
    if isinstance(value, FunctionSpec):
        return value
    if callable(value):
        return FunctionSpec(getattr(value, "__name__", "quality"), value)
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: invalid JSON ({err})") from err
    if isinstance(value, str) and value not in REWARDS:
        entry = _string_entry(value, where)
        if isinstance(entry, FunctionSpec):
            return entry
        value = entry
    spec = parse_reward(value, where)
    if spec.name in GROUP_REWARDS:
        raise ValueError(
            f"{where}: {spec.name!r} scores a sample against its rollout group (its quality times the sample's "
            "distinctness within the group), not on its own, and diversity is what the quality is set against; name "
            f"its quality reward instead (e.g. {spec.kwargs.get('quality', 'math_answer')!r})"
        )
    if spec.name == "reward_model" and isinstance(spec.kwargs.get("model"), str) and spec.kwargs["model"]:
        check_reward_model_reference(spec.kwargs["model"], where)
    return spec


def _string_entry(value: str, where: str) -> dict[str, Any] | FunctionSpec:
    """``reward_model:PATH`` or a directory as the registry entry of the reward model; ``MODULE:FUNCTION`` as the
    function it names."""
    name, sep, argument = value.partition(":")
    if value.startswith(REWARD_MODEL_PREFIX) and argument:
        return {"reward_model": {"model": argument}}
    if sep and name in REWARDS:
        raise ValueError(
            f"{where}: only reward_model takes an argument after ':' (its checkpoint); settings of {name!r} go in a "
            f"mapping {{{name}: {{...}}}}"
        )
    if Path(value).expanduser().is_dir():
        return {"reward_model": {"model": value}}
    if sep and name and argument:
        return FunctionSpec(value, load_callable(value, where.removesuffix(f" {value!r}")))
    raise ValueError(
        f"{where}: {value!r} is neither a reward of the registry ({', '.join(REWARDS)}), reward_model:PATH, "
        "MODULE:FUNCTION nor a reward-model directory"
    )


class Quality:
    """The per-sample quality of a ``quality:`` value (see :func:`parse_quality`).

    Args:
        value: the ``quality:`` value.
        correct_threshold: a sample scoring at least this is correct; ``None``: a verifier's verdict (score 1), and
            no correctness for other rewards.
        where: the recipe key or flag that gave ``value``, first in every error.
    """

    def __init__(self, value: Any, correct_threshold: float | None = None, where: str = WHERE) -> None:
        self.spec = parse_quality(value, where)
        self.reward: Any = None if isinstance(self.spec, FunctionSpec) else build(self.spec)
        self.correct_threshold = correct_threshold
        self.where = where

    def load(self) -> None:
        """Load what the reward needs now (a reward model's weights), so a bad checkpoint fails before sampling."""
        if hasattr(self.reward, "load"):
            try:
                self.reward.load()
            except (OSError, ValueError) as err:
                raise ValueError(f"{self.where}: cannot load a sequence-classification model ({err})") from err

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def binary(self) -> bool:
        """Whether the scores are 0/1 verdicts."""
        return bool(getattr(self.reward, "binary", False) or getattr(self.spec, "verdict", False))

    @property
    def has_verdicts(self) -> bool:
        """Whether samples are correct or not: a verifier, or any reward with a ``correct_threshold``."""
        return self.binary or self.correct_threshold is not None

    def check_columns(self, columns: Sequence[Mapping[str, Any]], source: str) -> None:
        """Raise a ``ValueError`` naming ``source`` when a record lacks every column alternative the reward reads."""
        alternatives = self.reward.required_columns() if hasattr(self.reward, "required_columns") else [()]
        for index, record in enumerate(columns):
            if not any(set(option) <= set(record) for option in alternatives):
                wanted = " or ".join("+".join(repr(c) for c in option) for option in alternatives)
                raise ValueError(
                    f"{self.where}: {self.name!r} reads the column {wanted} of each prompt, but record {index} of "
                    f"{source} has only {sorted(record) or 'the prompt'}"
                )

    def score(
        self,
        prompts: Sequence[Any],
        groups: Sequence[Sequence[str]],
        token_ids: Sequence[Sequence[Sequence[int]]],
        columns: Sequence[Mapping[str, Any]],
        chat: bool = True,
        answers: Sequence[str | None] | None = None,
        first_index: int = 0,
    ) -> list[list[float]]:
        """Per prompt, the quality of each of its samples (NaN where the reward returns None or NaN), from one
        reward call over every sample. ``chat``: the policy read its prompts through a chat template, so a plain
        prompt was a user turn (chat-message prompts always are a conversation). ``answers``: each prompt's reference
        answer for a function of your own (default: its ``answer``, else ``solution`` column). ``first_index``: the
        index of ``prompts[0]`` among all prompts, for the errors, which name the prompt and the sample."""
        if isinstance(self.spec, FunctionSpec):
            if answers is None:
                answers = [_answer(record) for record in columns]
            return [
                [self._call_function(first_index + i, prompts[i], k, text, answers[i]) for k, text in enumerate(group)]
                for i, group in enumerate(groups)
            ]
        rows = [(i, k) for i, group in enumerate(groups) for k in range(len(group))]
        conversation = [_as_conversation(prompt, chat) for prompt in prompts]
        completions = [
            [{"role": "assistant", "content": groups[i][k]}] if conversation[i] is not None else groups[i][k]
            for i, k in rows
        ]
        names = sorted({key for record in columns for key in record} - set(_CALL_ARGUMENTS))
        extra = {name: [columns[i].get(name) for i, _ in rows] for name in names}
        try:
            scores = self.reward(
                prompts=[prompts[i] if conversation[i] is None else conversation[i] for i, _ in rows],
                completions=completions,
                completion_ids=[list(token_ids[i][k]) for i, k in rows],
                **extra,
            )
        except Exception as err:  # a reward's own failure: say which samples it was scoring
            span = _prompt_span(first_index, len(groups))
            raise ValueError(
                f"{self.where}: {self.name!r} raised {type(err).__name__} while scoring {span}: {err}"
            ) from err
        if isinstance(scores, (str, bytes, Mapping)) or not hasattr(scores, "__len__") or len(scores) != len(rows):
            raise ValueError(
                f"{self.where}: {self.name!r} returned {_preview(scores)} for {len(rows)} samples; expected one score "
                "per sample"
            )
        out: list[list[float]] = [[] for _ in groups]
        for (i, k), value in zip(rows, scores, strict=True):
            out[i].append(self._number(value, first_index + i, prompts[i], k, groups[i][k]))
        return out

    def score_record(
        self, index: int, record: PromptRecord, texts: Sequence[str], token_ids: Sequence[Sequence[int]], chat: bool
    ) -> list[float]:
        """The quality of each sample of one prompt record (its prompt, columns and reference answer), as `divalign
        eval` scores prompt by prompt; ``index`` is the prompt's, for the errors."""
        answers = [record.answer]
        (scores,) = self.score([record.prompt], [texts], [token_ids], [record.columns], chat, answers, index)
        return scores

    def _call_function(self, index: int, prompt: Any, k: int, text: str, answer: str | None) -> float:
        if self.spec.verdict:  # a checked verifier: its errors already name the sample
            return float(bool(self.spec.fn(text, answer)))
        try:
            value = self.spec.fn(text, answer)
        except Exception as err:  # the user's function: name the sample it failed on
            raise ValueError(
                f"{self.where}: {self.name!r} raised {type(err).__name__} on {_sample(index, prompt, k, text)}: {err}"
            ) from err
        return self._number(value, index, prompt, k, text)

    def _number(self, value: Any, index: int, prompt: Any, k: int, text: str) -> float:
        """A score as a float: None and NaN are the sample's missing score; a non-number or an infinity is refused."""
        if value is None:
            return math.nan
        number = None
        if not isinstance(value, (str, bytes)) and hasattr(value, "__float__"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = None
        if number is None:
            raise ValueError(
                f"{self.where}: {self.name!r} returned {_preview(value)} for {_sample(index, prompt, k, text)}; "
                "expected a number (or None where a sample has no score)"
            )
        if math.isinf(number):
            raise ValueError(
                f"{self.where}: {self.name!r} returned {number} for {_sample(index, prompt, k, text)}; expected a "
                "finite number (or None / NaN where a sample has no score)"
            )
        return number

    def verdicts(self, scores: Sequence[Sequence[float]]) -> list[list[bool]] | None:
        """Per sample, whether it is correct (see :attr:`has_verdicts`); ``None`` when correctness is not defined."""
        if not self.has_verdicts:
            return None
        threshold = self.correct_threshold if self.correct_threshold is not None else 1.0
        return [[not math.isnan(s) and s >= threshold for s in group] for group in scores]


def _answer(record: Mapping[str, Any]) -> str | None:
    value = next((record[c] for c in ANSWER_COLUMNS if record.get(c) is not None), None)
    return None if value is None else str(value)


def _preview(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.80}"


def _prompt_span(first: int, count: int) -> str:
    return f"the samples of prompt {first}" if count == 1 else f"the samples of prompts {first}-{first + count - 1}"


def _sample(index: int, prompt: Any, k: int, text: str) -> str:
    shown = prompt if isinstance(prompt, str) else completion_text(prompt)
    return f"prompt {index} ({shown!r:.60}), sample {k} ({text!r:.60})"


def _as_conversation(prompt: Any, chat: bool) -> list[dict[str, Any]] | None:
    """The prompt as the messages the policy answered (a plain prompt under a chat template is one user turn), or
    ``None`` for a plain-text prompt read as it is."""
    if not isinstance(prompt, str):
        return list(prompt)
    return [{"role": "user", "content": prompt}] if chat else None
