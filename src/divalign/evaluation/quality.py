"""`divalign eval --quality SPEC`: one score per sample, reported next to diversity at `--temperature` and, with
`--temperatures`, set against it on the frontier.

Open-ended prompts have no verifier, so the quality comes from what divalign already has for GRPO and for the
training callback's `quality:` — one grammar and one scorer, `divalign.rewards.quality`:

- `NAME`: a reward of the registry (`divalign.rewards`: `format`, `length_penalty`, `math_answer`, ...) with its
  default settings, called as GRPO calls it — when the policy has a chat template, on the conversation it took part
  in (a plain prompt one user turn, each sample one assistant turn) — with `completion_ids` (the policy's tokens
  before the stop token) and the prompt row's other fields as dataset columns;
- `reward_model:PATH`: the registry's reward model, a sequence-classification checkpoint (its first logit) scoring
  the conversation rendered by its own chat template (the texts joined when it has none); a checkpoint without its
  classification head (a causal LM) is refused;
- `{"NAME": {settings}}`: a registry reward with settings, as a recipe's `rewards:` entry (JSON);
- `MODULE:FUNCTION`: `fn(completion, answer) -> float` of your own; MODULE is installed or a file in the current
  directory; `answer` is the prompt's reference answer (`--answer-column`).

A registry name wins over a module of the same name. `darling` is refused: it multiplies quality by each sample's
distinctness within its group, and a frontier sets quality against diversity. A prompt's quality is the mean over
its samples of the scores that are not None or NaN; a score that is not a number, or infinite, is refused.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .prompts import PromptRecord
from .sampling import Samples

# One prompt's samples → one float (or NaN) each: (prompt index, record, texts, token ids, whether the policy used
# a chat template)
GroupScorer = Callable[[int, PromptRecord, Sequence[str], Sequence[Sequence[int]], bool], list[float]]


@dataclass(frozen=True)
class Quality:
    """A named per-sample quality: `score(index, record, texts, token_ids, chat)` gives one float (or NaN) per
    sample."""

    name: str
    score: GroupScorer


def accuracy(verifier: Callable[[str, str | None], bool]) -> Quality:
    """The verifier's verdicts as 0/1 (the default quality of a frontier with `--verifier`)."""
    return Quality(
        "accuracy", lambda index, record, texts, ids, chat: [float(bool(verifier(t, record.answer))) for t in texts]
    )


def load_quality(spec: str | Callable[[str, str | None], Any], records: Sequence[PromptRecord]) -> Quality:
    """The quality `spec` names (see the module docstring; a Python callable is `fn(completion, answer)`), checked
    against the prompts' fields and, for a reward model, loaded — before any sampling."""
    from ..rewards.quality import Quality as RewardQuality  # torch, math_verify: loaded only when asked for

    reward = RewardQuality(spec, where="--quality" if callable(spec) else f"--quality {spec!r}")
    reward.check_columns([record.columns for record in records], "the prompts")
    reward.load()

    def score(
        index: int, record: PromptRecord, texts: Sequence[str], ids: Sequence[Sequence[int]], chat: bool
    ) -> list[float]:
        (scores,) = reward.score(
            [record.prompt], [texts], [ids], [record.columns], chat=chat, answers=[record.answer], first_index=index
        )
        return scores

    return Quality(reward.name, score)


def prompt_quality(quality: Quality, records: Sequence[PromptRecord], samples: Samples, label: str) -> list[float]:
    """Per prompt, the mean quality of its samples' scores (NaN when none has one); a bar (`label`) follows the
    scoring when it takes more than a few seconds (a reward model on a CPU), and a note on stderr says how many
    samples got no score (None or NaN), which the means leave out."""
    rows = zip(records, samples.texts, samples.token_ids, strict=True)
    bar = tqdm(rows, total=len(records), desc=f"{quality.name} of {label}", unit="prompt", delay=2.0)
    scores = [quality.score(i, record, texts, ids, samples.chat) for i, (record, texts, ids) in enumerate(bar)]
    missing = sum(1 for group in scores for s in group if math.isnan(s))
    total = sum(len(group) for group in scores)
    if missing:
        every = " (every one: its quality is n/a)" if missing == total else ""
        print(
            f"divalign eval: quality {quality.name!r} gave no score (None or NaN) for {missing} of {total} samples "
            f"of {label}{every}; a prompt's quality is the mean of its scored samples",
            file=sys.stderr,
        )
    return [_mean(group) for group in scores]


def _mean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan
