"""`divalign eval --quality SPEC` (or `--verifier`'s accuracy): each prompt's quality, reported next to diversity at
`--temperature` and, with `--temperatures`, set against it on the frontier.

The quality is the one `Quality` of :mod:`divalign.rewards.quality`, the grammar of the training callback's `quality:`
too (a registry reward by name or with settings as JSON, `reward_model:PATH`, `MODULE:FUNCTION` as `fn(completion,
answer) -> float` with the prompt's reference answer from `--answer-column`); a registry reward sees the conversation
the policy took part in when it has a chat template, with `completion_ids` and the prompt row's other fields as dataset
columns. A prompt's quality is the mean over its samples of the scores that are not None or NaN.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..prompts import PromptRecord
from .sampling import Samples

if TYPE_CHECKING:
    from ..rewards.quality import Quality


def accuracy(verifier: Callable[[str, str | None], bool]) -> Quality:
    """The verifier's verdicts as 0/1 (the default quality of a frontier with `--verifier`)."""
    from ..rewards.quality import FunctionSpec, Quality  # torch, math_verify: loaded only when asked for

    return Quality(FunctionSpec("accuracy", verifier, verdict=True))


def load_quality(spec: str | Callable[[str, str | None], Any], records: Sequence[PromptRecord]) -> Quality:
    """The quality `spec` names (a Python callable is `fn(completion, answer)`), checked against the prompts' fields
    and, for a reward model, loaded — before any sampling."""
    from ..rewards.quality import Quality  # torch, math_verify: loaded only when asked for

    quality = Quality(spec, where="--quality" if callable(spec) else f"--quality {spec!r}")
    quality.check_columns([record.columns for record in records], "the prompts")
    quality.load()
    return quality


def prompt_quality(quality: Quality, records: Sequence[PromptRecord], samples: Samples, label: str) -> list[float]:
    """Per prompt, the mean quality of its samples' scores (NaN when none has one); a bar (`label`) follows the
    scoring when it takes more than a few seconds (a reward model on a CPU), and a note on stderr says how many
    samples got no score (None or NaN), which the means leave out."""
    rows = zip(records, samples.texts, samples.token_ids, strict=True)
    bar = tqdm(rows, total=len(records), desc=f"{quality.name} of {label}", unit="prompt", delay=2.0)
    scores = [quality.score_record(i, record, texts, ids, samples.chat) for i, (record, texts, ids) in enumerate(bar)]
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
