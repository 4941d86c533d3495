"""The frontier's quality (`divalign eval --temperatures ... --quality SPEC`): one score per sample.

Open-ended prompts have no verifier, so the quality comes from what divalign already has for GRPO and for the
training callback's `quality:` (`divalign.rewards.quality`, the one scorer of both):

- `NAME`: a reward of the registry (`divalign.rewards`: `format`, `length_penalty`, `math_answer`, ...) with its
  default settings, called as GRPO calls it — when the policy has a chat template, on the conversation it took part
  in (a plain prompt one user turn, each sample one assistant turn) — with `completion_ids` (the policy's tokens
  before the stop token) and the prompt row's other fields as dataset columns;
- `reward_model:PATH`: the registry's reward model, a sequence-classification checkpoint (its first logit) scoring
  the conversation rendered by its own chat template (the texts joined when it has none);
- `{"NAME": {settings}}`: a registry reward with settings, as a recipe's `rewards:` entry (JSON);
- `MODULE:FUNCTION`: `fn(completion, answer) -> float` of your own; MODULE is installed or a file in the current
  directory.

A registry name wins over a module of the same name. `darling` is refused: it multiplies quality by each sample's
distinctness within its group, and a frontier sets quality against diversity. A prompt's quality is the mean over
its samples of the scores that are not None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .prompts import PromptRecord, load_callable

# One prompt's samples → one float (or NaN) each: (record, texts, token ids, whether the policy used a chat template)
GroupScorer = Callable[[PromptRecord, Sequence[str], Sequence[Sequence[int]], bool], list[float]]


@dataclass(frozen=True)
class Quality:
    """A named per-sample quality: `score(record, texts, token_ids, chat)` gives one float (or NaN) per sample."""

    name: str
    score: GroupScorer


def accuracy(verifier: Callable[[str, str | None], bool]) -> Quality:
    """The verifier's verdicts as 0/1 (the default quality of a frontier with `--verifier`)."""
    return Quality(
        "accuracy", lambda record, texts, ids, chat: [float(bool(verifier(t, record.answer))) for t in texts]
    )


def load_quality(spec: str | Callable[[str, str | None], float], records: Sequence[PromptRecord]) -> Quality:
    """The quality `spec` names (see the module docstring), checked against the prompts' fields and, for a reward
    model, loaded — before any sampling."""
    from ..rewards import REWARDS  # torch, math_verify: loaded only when a frontier asks for a quality

    if callable(spec):
        return _per_sample(getattr(spec, "__name__", "quality"), spec)
    name, sep, argument = spec.partition(":")
    if sep and name and argument and name not in REWARDS and not spec.lstrip().startswith("{"):
        return _per_sample(spec, load_callable(spec, "--quality"))
    return _registry_quality(spec, records)


def _per_sample(name: str, fn: Callable[[str, str | None], float]) -> Quality:
    return Quality(name, lambda record, texts, ids, chat: [_number(fn(t, record.answer)) for t in texts])


def _registry_quality(spec: str, records: Sequence[PromptRecord]) -> Quality:
    from ..rewards.quality import Quality as RewardQuality

    where = f"--quality {spec!r}"
    value: Any = spec
    if spec.lstrip().startswith("{"):
        try:
            value = json.loads(spec)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: invalid JSON ({err})") from err
    reward = RewardQuality(value, where=where)
    reward.check_columns([record.columns for record in records], "the prompts")
    reward.load()

    def score(record: PromptRecord, texts: Sequence[str], ids: Sequence[Sequence[int]], chat: bool) -> list[float]:
        (scores,) = reward.score([record.prompt], [texts], [ids], [record.columns], chat=chat)
        return scores

    return Quality(reward.name, score)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
