"""Compare specs: which variants × seeds `divalign compare` trains, and how it evaluates them.

A spec is a YAML file; every check here is cheap and offline, so a bad variant, seed list or reference is refused
before any cell trains. Paths in a spec are relative to the working directory, like recipe paths.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvaluationSpec:
    """How every trained model is sampled and scored for the calibrated comparison (`evaluation:` in a spec)."""

    prompts: str  # evaluation prompts (anything divalign.evaluation.prompts.load_prompts reads)
    calibration_prompts: str  # calibration prompts, disjoint from `prompts` (checked: overlap is refused)
    prompts_column: str | None = None
    answer_column: str | None = None
    samples: int = 8  # samples per prompt
    max_new_tokens: int = 64
    quality: str | None = None  # same grammar as `divalign eval --quality`
    verifier: str | None = None  # same as `divalign eval --verifier` (quality = verified fraction)
    diversity_metric: str = "semantic_clusters"  # a metric name `divalign eval --metrics` accepts
    reference_temperature: float = 1.0
    temperature_range: tuple[float, float] = (0.3, 2.5)  # bisection bounds
    tolerance: float = 0.02  # relative tolerance on the matched value
    max_bisection_steps: int = 8
    seed: int = 0  # sampling seed (same noise rule as divalign eval)
    batch_size: int = 8
    n_bootstrap: int = 2000
