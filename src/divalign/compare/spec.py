"""Compare specs: which variants × seeds `divalign compare` trains, and how it evaluates them (`EvaluationSpec`, the
contract with :mod:`divalign.compare.calibration`). Read and checked by :mod:`divalign.compare.spec_file`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CompareError(ValueError):
    """A compare spec that cannot run, with the file and key at fault in the message."""


@dataclass(frozen=True)
class EvaluationSpec:
    """How every trained model is sampled and scored for the calibrated comparison (`evaluation:` in a spec)."""

    prompts: str  # evaluation prompts (anything divalign.prompts.load_prompts reads)
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
    # the frontier figure's temperatures (None: calibration's default)
    temperature_grid: tuple[float, ...] | None = None
    tolerance: float = 0.02  # relative tolerance on the matched value
    max_bisection_steps: int = 8
    seed: int = 0  # sampling seed (same noise rule as divalign eval)
    batch_size: int = 8
    n_bootstrap: int = 2000
    # where sampled axes are cached (None: REPORT_DIR/calibration[/STAGE]/samples); specs that name one directory reuse
    # each other's samples of the same checkpoint (the cache key hashes its files and the settings that shape samples)
    samples_dir: str | None = None

    def samples_root(self, out_dir: Path) -> Path:
        """The sample cache's root for a calibration writing to `out_dir`: `samples_dir`, else OUT_DIR/samples."""
        return Path(self.samples_dir) if self.samples_dir is not None else Path(out_dir) / "samples"


@dataclass(frozen=True)
class CompareSpec:
    """A validated spec: variants (each a list of stage mappings, as a pipeline file's `stages`), seeds, reference."""

    path: Path
    name: str
    output_root: Path
    variants: dict[str, list[dict[str, Any]]]
    seeds: tuple[int, ...]
    reference: str
    evaluation: EvaluationSpec
    base_model: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    accelerate_config: str | None = None
    launch_args: tuple[str, ...] | None = None
    wandb_group: str | None = None
    # the reference variant's stage names to compare at (each variant read at its stage in the same position);
    # None: the last stage only, as one comparison
    evaluate_stages: tuple[str, ...] | None = None
    report_root: Path | None = None  # `report_dir:`; None: OUTPUT_ROOT/report

    @property
    def group(self) -> str:
        """The W&B group every cell's run joins."""
        return self.wandb_group or self.name

    @property
    def report_dir(self) -> Path:
        """Where the report is written: `report_dir` (two specs sharing an output root keep their own reports), else
        OUTPUT_ROOT/report."""
        return self.report_root if self.report_root is not None else self.output_root / "report"
