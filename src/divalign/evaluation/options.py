"""`EvalOptions`: how `divalign eval` (and a pipeline's lineage eval) samples, scores and writes, as one object built
once — from the command line (:meth:`EvalOptions.from_args`) or from keyword arguments — and passed whole to
`evaluate_lineage`. An option is a field here and a flag in `command.py`; the flag's default is the field's
(:func:`flag_defaults`)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..diversity import DEFAULT_NLI_MODEL
from ..diversity.clusters import DEFAULT_CLUSTER_THRESHOLD
from ..diversity.profile import DEFAULT_PROFILE
from ..subcommand import split_names

if TYPE_CHECKING:
    from .frontier_sweep import AnswerVerifier, QualityScorer

# The fields whose `divalign eval` flag has another name (``--samples``, ``--bootstrap``, ``--out``)
FLAG_NAMES = {"num_samples": "samples", "n_bootstrap": "bootstrap", "out_dir": "out"}


@dataclass(frozen=True)
class EvalOptions:
    """The settings of one lineage evaluation (the models and the prompt source are its arguments, not options).

    `prompts_split` / `prompts_column` / `answer_column` / `num_prompts` pick the prompts and their reference answers.
    `num_samples` completions per prompt of at most `max_new_tokens`, at `temperature` (the main tables), `top_p`,
    `top_k` and `seed`, `batch_size` prompts per call, on `backend` and `device`. `verifier` is `module:function` or
    a callable `fn(completion, reference_answer) -> bool`; the reference is the prompt's answer column. `quality` (a
    reward name of `divalign.rewards`, `reward_model:PATH`, a JSON `{name: settings}`, `module:function` or a
    callable `fn(completion, answer) -> float`; `divalign.evaluation.quality`) scores every sample: each model's mean
    at `temperature` is reported next to its diversity. With `temperatures` every model is also sampled at each of
    them, and its quality (the mean score of `quality`, else the verifier's accuracy) is set against the diversity
    metric `frontier_metric`. `reference` names the model the others are compared with (the matched-diversity
    differences and the quality-control/narrowing split); default: the first. `metrics` (default: the profile's
    evaluation set) under `profile`, the metric conventions (`divalign.diversity.profile.PROFILES`);
    `embedding_model` defaults to the profile's embedder; `cluster_threshold` is the cosine at which samples share a
    semantic cluster; `nli_model` serves the NLI metrics; `n_bootstrap` resamples give the 95% intervals. `out_dir`
    must be empty or absent, unless `move_aside` moves the earlier one aside.
    """

    prompts_split: str = "test"
    prompts_column: str | None = None
    answer_column: str | None = None
    num_prompts: int | None = None
    num_samples: int = 16
    max_new_tokens: int = 256
    temperature: float = 1.0
    temperatures: Sequence[float] | None = None
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    metrics: Sequence[str] | None = None
    profile: str = DEFAULT_PROFILE
    embedding_model: str | None = None
    cluster_threshold: float = DEFAULT_CLUSTER_THRESHOLD
    nli_model: str = DEFAULT_NLI_MODEL
    verifier: str | AnswerVerifier | None = None
    quality: str | QualityScorer | None = None
    frontier_metric: str | None = None
    reference: str | None = None
    backend: str = "auto"
    batch_size: int = 8
    device: str | None = None
    n_bootstrap: int = 1000
    out_dir: str | Path = "eval_results"
    move_aside: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalOptions:
        """The options of parsed `divalign eval` flags; ``--metrics`` may also be comma separated."""
        values = {
            field.name: getattr(args, FLAG_NAMES.get(field.name, field.name)) for field in dataclasses.fields(cls)
        }
        return cls(**{**values, "metrics": split_names(values["metrics"])})


DEFAULTS = EvalOptions()


def flag_defaults() -> dict[str, Any]:
    """The defaults of `divalign eval`'s flags, under their argparse names: the fields' own."""
    return {
        FLAG_NAMES.get(field.name, field.name): getattr(DEFAULTS, field.name)
        for field in dataclasses.fields(EvalOptions)
    }
