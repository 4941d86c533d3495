"""The settings of the training-time diversity evaluation: a recipe's `diversity:` block as `DiversityConfig`, every
value checked when it is built (types, ranges, metric names, the thresholds, the quality, parsed here once for the
whole run).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..diversity import DEFAULT_TRAINING_METRICS
from ..diversity.profile import DEFAULT_PROFILE, get_profile
from ..diversity.training_metrics import check_training_metrics
from ..generation import SamplingSettings
from .field_types import check_field_type
from .state import retained_metrics

if TYPE_CHECKING:
    from ..rewards.quality import Quality


@dataclass
class DiversityConfig:
    """Settings of the in-training diversity evaluation (the recipe's `diversity:` block)."""

    prompts: str = field(
        metadata={
            "help": "Probe prompts: a .jsonl/.json/.txt/.csv/.parquet file, a dataset saved with `save_to_disk`, a "
            "data folder or a Hub dataset id (read with `prompts_split` and `prompts_column`); records hold a "
            "`prompt` (text or chat messages) or a `messages` conversation, whose trailing non-user turns are dropped. "
            "The same loader as `divalign eval --prompts`."
        }
    )
    prompts_split: str = field(default="test", metadata={"help": "Split to read when `prompts` is a dataset."})
    prompts_column: str | None = field(
        default=None, metadata={"help": "Column holding the prompts; default: `prompt`, else `messages`."}
    )
    num_prompts: int = field(default=32, metadata={"help": "Use the first `num_prompts` probe prompts."})
    samples_per_prompt: int = field(default=8, metadata={"help": "Completions sampled per prompt (K >= 2)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Maximum new tokens per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass in (0, 1]; 1 disables it."})
    every_steps: int = field(default=100, metadata={"help": "Evaluate every `every_steps` optimizer steps."})
    table_every_steps: int = field(
        default=500,
        metadata={
            "help": "Add the samples to the run's W&B table (one table that grows) every `table_every_steps` steps "
            "and at step 0; 0 = never. Every evaluation's samples also go to `diversity_samples.jsonl` in output_dir."
        },
    )
    evaluate_last_step: bool = field(
        default=True, metadata={"help": "Also evaluate at the last training step when it is off the cadence."}
    )
    embedding_model: str | None = field(
        default="auto",
        metadata={
            "help": "Sentence-embedding model for the semantic metrics: `auto` = the metric profile's "
            "(divalign: all-MiniLM-L6-v2, karouzos2026: all-mpnet-base-v2); null to load none."
        },
    )
    profile: str = field(
        default=DEFAULT_PROFILE,
        metadata={
            "help": "Metric conventions: `divalign` (the default), `karouzos2026` (Karouzos et al., arXiv 2604.16027: "
            "EAD over words, think-stripped texts, all-mpnet-base-v2) or `tofu2026` (the TOFU paper's lowercased "
            "self-BLEU on 0-100); recorded in the W&B run config as `diversity_profile`."
        },
    )
    metrics: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRAINING_METRICS), metadata={"help": "Metrics to compute and log."}
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "Sampling seed (>= 0). A sample's noise depends only on the seed, the prompt's index, the "
            "sample's index and max_new_tokens: the same at every evaluation and on any number of processes."
        },
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "Prompts per `generate` call (each expanded to `samples_per_prompt` rows); changes speed and "
            "memory, not the samples."
        },
    )
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={
            "help": "Under DeepSpeed ZeRO-3: gather the policy's weights once per evaluation and generate on each "
            "rank locally (TRL's `unwrap_model_for_generation` semantics; needs the whole model in one device's "
            "memory). false keeps the slow lock-step generation over sharded weights (`synced_gpus`, every layer "
            "gathered at every decoded token), for models too big to gather. Same samples either way."
        },
    )
    quality: str | dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "The samples' quality, logged next to their diversity: a reward of the rewards registry by name "
            "(what GRPO recipes' `rewards:` name, e.g. `math_answer` with the probe prompts' `answer` column, "
            "`toy_validity` with their `valid_answers`), a one-key mapping `{name: settings}`, `reward_model:PATH` or a "
            "local reward-model directory (a sequence-classification checkpoint with its head), or `MODULE:FUNCTION`, "
            "`fn(completion, answer) -> float` of your own (MODULE installed or a .py file in the current directory): "
            "the grammar of `divalign eval --quality`. Logs `diversity/quality/mean`; with a verifier (0/1 scores, or a `correct_threshold`) also "
            "`diversity/quality/pass_at_1`, `pass_at_k`, `diversity/correct_only/<metric>` (prompts with at least two "
            "correct samples) and, against step 0, `diversity/quality_control/<metric>` and "
            "`diversity/narrowing/<metric>` (Karouzos et al., arXiv 2604.16027; the code of `divalign eval`)."
        },
    )
    correct_threshold: float | None = field(
        default=None,
        metadata={
            "help": "A sample whose quality is at least this counts as correct (for a reward model's scores); "
            "default: a verifier's verdict (score 1), and no correctness for other rewards."
        },
    )
    alert_below: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Per metric, a retained ratio (`diversity/retained/<metric>`, the value over its step-0 value) "
            "in (0, 1]: the first evaluation below it sends a W&B alert (`wandb.alert`, when the run reports to W&B) "
            "and prints a line, e.g. `{ead: 0.7}`. Metrics where higher means more diverse only."
        },
    )
    stop_below: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Per metric, a retained ratio in (0, 1]: at the first evaluation below it training stops, every "
            "process at the same step, with a checkpoint of that step, and says why (printed, in trainer_state.json, "
            "as a W&B alert and, under `divalign train`, which then saves the final model, in "
            "divalign_finished.json)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            raise ValueError(f"diversity.metrics must be a list of metric names, got the string {self.metrics!r}")
        self.metrics = list(self.metrics)
        if isinstance(self.prompts, os.PathLike):
            self.prompts = os.fspath(self.prompts)
        for name, hint in typing.get_type_hints(type(self)).items():
            check_field_type("diversity.", name, getattr(self, name), hint)
        self._check_ranges()
        get_profile(self.profile)  # an unknown name raises, listing the valid ones
        self._check_metrics()
        self._check_quality()
        for name in ("alert_below", "stop_below"):
            self._check_thresholds(name)

    def _check_ranges(self) -> None:
        """Value checks that a type check cannot express."""
        if not self.prompts.strip():
            raise ValueError("diversity.prompts must name a prompts file or dataset, got an empty string")
        for name in ("num_prompts", "every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"diversity.{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise ValueError(
                f"diversity.samples_per_prompt must be >= 2 (diversity needs several samples per prompt), "
                f"got {self.samples_per_prompt}"
            )
        if self.table_every_steps < 0:
            raise ValueError(f"diversity.table_every_steps must be >= 0 (0 = off), got {self.table_every_steps}")
        self.sampling.check(prefix="diversity.")

    @property
    def sampling(self) -> SamplingSettings:
        """The sampling settings of every evaluation (neutral: temperature and top-p only)."""
        return SamplingSettings(
            num_samples=self.samples_per_prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def _check_metrics(self) -> None:
        """Known metric names, computable from what the callback has (token ids, vocabulary size, embedder)."""
        if not self.metrics:
            raise ValueError("diversity.metrics must name at least one metric")
        check_training_metrics(
            self.metrics,
            self.embedding_model,
            unknown="Unknown diversity metric(s) {names}; valid metrics: {valid}",
            offline="Diversity metric(s) {names} need a verifier or an NLI model: use `divalign eval`",
            semantic="Diversity metric(s) {names} need diversity.embedding_model, which is not set",
        )

    def _check_quality(self) -> None:
        """The quality parsed once for the run (:attr:`parsed_quality`), as `divalign eval --quality` parses it (a
        reward's settings and a reward model's local path checked, a function of your own imported, no model
        loaded); a threshold needs one."""
        self._parsed_quality: Quality | None = None
        if self.quality is not None:
            from ..rewards.quality import Quality  # torch, math_verify: loaded only when a quality is asked for

            self._parsed_quality = Quality(self.quality, self.correct_threshold)
        if self.correct_threshold is not None:
            if self.quality is None:
                raise ValueError("diversity.correct_threshold needs diversity.quality (whose scores it thresholds)")
            if not math.isfinite(self.correct_threshold):
                raise ValueError(f"diversity.correct_threshold must be a finite number, got {self.correct_threshold}")

    @property
    def parsed_quality(self) -> Quality | None:
        """The :class:`~divalign.rewards.quality.Quality` that ``quality`` names, with ``correct_threshold``: built once,
        when this config was, and used by every check and evaluation of the run; ``None`` without a quality."""
        return self._parsed_quality

    def _check_thresholds(self, name: str) -> None:
        """Retained-ratio thresholds: metrics computed here where higher means more diverse, ratios in (0, 1]."""
        thresholds = getattr(self, name)
        eligible = retained_metrics(self.metrics)
        for metric, value in thresholds.items():
            if metric not in eligible:
                raise ValueError(
                    f"diversity.{name}: {metric!r} has no retained ratio; name one of the metrics computed here where "
                    f"higher means more diverse: {eligible}"
                )
            if not 0 < value <= 1:
                raise ValueError(
                    f"diversity.{name}.{metric} must be a retained ratio in (0, 1] (the share of the step-0 value), "
                    f"got {value}"
                )

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> DiversityConfig:
        """Build from a recipe's `diversity:` mapping; unknown keys and bad values raise `ValueError`."""
        if not isinstance(config, Mapping):
            raise ValueError(f"The diversity block must be a mapping, got {type(config).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in config if key not in valid]
        if unknown:
            raise ValueError(f"Unknown key(s) in the diversity block: {unknown}; valid keys: {valid}")
        if "prompts" not in config:
            raise ValueError("The diversity block needs `prompts` (a prompts file or dataset)")
        return cls(**config)
