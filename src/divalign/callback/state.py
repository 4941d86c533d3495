"""The diversity callback's saved state: the step-0 reference of its evaluations, and what is measured against it.

Every later evaluation is compared with the starting model's: each diversity metric as a ratio to its step-0 value
(``diversity/retained/<metric>``, the number a user watches: the share of the base model's EAD a run kept), the split of
the change into quality control and narrowing (:func:`divalign.diversity.quality_split.split_drop`, the code
`divalign eval` uses), and the ``alert_below`` / ``stop_below`` thresholds on the retained ratios.

The reference lives in the trainer state (``trainer_state.json``, under ``stateful_callbacks`` →
:data:`STATE_KEY`), which every checkpoint saves, so a resumed run compares with the step 0 of its first attempt. The
same record keeps the alerts already sent and, when a threshold stopped training, why.

Retained ratios are kept for the metrics where higher means more diverse (distinct-n, EAD, SBERT, Vendi): the ratio
of a lower-is-more-diverse score (duplicate rate, compression ratio, self-BLEU) would read backwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..diversity.registry import REGISTRY
from ..strict_json import strict_json

STATE_KEY = "divalign_diversity"  # the record's key in TrainerState.stateful_callbacks (not a callback class name)
PerPrompt = dict[str, dict[str, list[float]]]  # "all" / "correct_only" -> metric -> one value per probe prompt


def retained_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics among ``metrics`` that get a retained ratio (higher = more diverse)."""
    return [m for m in metrics if REGISTRY[m].direction > 0]


@dataclass
class Reference:
    """The step-0 evaluation: each metric's mean over prompts, and its per-prompt values on all samples and, with a
    quality that decides correctness, on correct samples only."""

    step: int
    means: dict[str, float]
    per_prompt: PerPrompt

    def retained(self, means: Mapping[str, float]) -> dict[str, float]:
        """``value / step-0 value`` of every metric with a retained ratio (NaN when the step-0 value is 0 or NaN)."""
        out = {}
        for name in retained_metrics(list(self.means)):
            base, now = self.means[name], means.get(name, math.nan)
            out[name] = now / base if base and not math.isnan(base) else math.nan
        return out


def _floats(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


@dataclass
class Crossing:
    """A retained ratio below its threshold at one evaluation."""

    kind: str  # "alert" or "stop"
    metric: str
    retained: float
    threshold: float
    step: int

    def message(self) -> str:
        action = "training stops here" if self.kind == "stop" else "training goes on"
        return (
            f"step {self.step}: diversity/retained/{self.metric} = {self.retained:.3f} is below "
            f"{self.kind}_below {self.threshold:g} ({self.metric} fell to {100 * self.retained:.1f} % of its step-0 "
            f"value); {action}"
        )


def crossings(kind: str, thresholds: Mapping[str, float], retained: Mapping[str, float], step: int) -> list[Crossing]:
    """The ``thresholds`` (metric → lowest acceptable retained ratio) that ``retained`` falls below."""
    return [
        Crossing(kind, metric, retained[metric], threshold, step)
        for metric, threshold in thresholds.items()
        if not math.isnan(retained.get(metric, math.nan)) and retained[metric] < threshold
    ]


def inactive_thresholds(reference: Reference, thresholds: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Why each threshold (``{"alert": alert_below, "stop": stop_below}``) on a metric whose step-0 value is NaN or 0
    can never fire: its retained ratio is undefined for the whole run, so the user must hear it at step 0."""
    notes = []
    for kind, by_metric in thresholds.items():
        for metric, threshold in by_metric.items():
            base = reference.means.get(metric, math.nan)
            if math.isnan(base) or base == 0:
                notes.append(
                    f"diversity {kind}_below {{{metric}: {threshold:g}}} can never fire in this run: {metric} is "
                    f"{'NaN' if math.isnan(base) else 0} at step {reference.step} (its reference), so "
                    f"diversity/retained/{metric} is undefined at every evaluation"
                )
    return notes


@dataclass
class TrackingRecord:
    """What the callback keeps in the trainer state: the reference, the metrics already alerted on, and the stop."""

    reference: Reference | None = None
    alerted: list[str] = field(default_factory=list)
    stopped: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        reference = None
        if self.reference is not None:
            reference = {  # NaN as null: strict JSON in trainer_state.json
                "step": self.reference.step,
                "means": strict_json(self.reference.means),
                "per_prompt": strict_json(self.reference.per_prompt),
            }
        return {"reference": reference, "alerted": list(self.alerted), "stopped": self.stopped}

    @classmethod
    def from_json(cls, record: Mapping[str, Any] | None) -> TrackingRecord:
        if not record:
            return cls()
        raw = record.get("reference")
        reference = None
        if raw:
            reference = Reference(
                step=int(raw["step"]),
                means={k: _floats([v])[0] for k, v in raw["means"].items()},
                per_prompt={
                    view: {k: _floats(v) for k, v in values.items()} for view, values in raw["per_prompt"].items()
                },
            )
        return cls(reference, list(record.get("alerted") or []), record.get("stopped"))

    def stop_with(self, crossing: Crossing) -> None:
        self.stopped = {**asdict(crossing), "reason": crossing.message()}


def read_record(state: Any) -> TrackingRecord:
    """The record a trainer state holds (a resumed run's: its checkpoint's), empty when there is none."""
    return TrackingRecord.from_json((getattr(state, "stateful_callbacks", None) or {}).get(STATE_KEY))


def write_record(state: Any, record: TrackingRecord) -> None:
    """Keep ``record`` in the trainer state, which every checkpoint and ``save_state`` write to trainer_state.json."""
    if state.stateful_callbacks is None:
        state.stateful_callbacks = {}
    state.stateful_callbacks[STATE_KEY] = record.to_json()


def stop_reason(state: Any) -> str | None:
    """Why a diversity threshold stopped the run whose trainer state this is, or ``None``."""
    stopped = read_record(state).stopped
    return None if not stopped else stopped["reason"]
