"""How small a difference a `divalign compare` report can resolve, from the per-prompt paired differences it saved.

At a matched axis, prompt p at seed s gives d[p, s] = model − reference on the other axis. The pooled estimate is the
mean over prompts of d̄[p] (the mean over seeds), so its 95 % CI's half-width is about z·SD(d̄)/√prompts: the
smallest difference the comparison resolves. SD(d̄)² splits into a between-prompt part (prompts differ; only more
prompts help) and a within-prompt part, the spread over seeds of d[p, s] (training and sampling noise: more seeds
divide it, more samples per prompt at most divide its sampling share) — which projects the half-width to other
numbers of prompts, seeds and samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..strict_json import finite_or_none, nan_array

Z95 = 1.959963984540054
_OTHER = {"diversity": "quality", "quality": "diversity"}


@dataclass(frozen=True)
class Power:
    """The spread of one comparison's per-prompt differences and the half-width of its pooled 95 % CI."""

    prompts: int
    seeds: int
    sd: float  # over prompts, of the per-prompt mean over seeds
    within: float  # mean over prompts of the variance over seeds of d[p, s] (NaN with one seed)

    @property
    def half_width(self) -> float:
        """≈ the pooled 95 % CI's half-width: the smallest difference this comparison resolves."""
        return Z95 * self.sd / math.sqrt(self.prompts)

    @property
    def between(self) -> float:
        """The variance over prompts that more seeds or samples do not shrink (all of it with one seed)."""
        if math.isnan(self.within):
            return self.sd**2
        return max(self.sd**2 - self.within / self.seeds, 0.0)

    def projected_half_width(self, prompts: int, seeds: int | None = None, samples_factor: float = 1.0) -> float:
        """The half-width with `prompts` prompts, `seeds` seeds and `samples_factor` times the samples per prompt (the
        within-prompt part taken as sampling noise, so this is a lower bound when more samples are asked for)."""
        seeds = seeds or self.seeds
        within = 0.0 if math.isnan(self.within) else self.within / (seeds * samples_factor)
        return Z95 * math.sqrt((self.between + within) / prompts)

    def prompts_for(self, difference: float, seeds: int | None = None, samples_factor: float = 1.0) -> int:
        """How many prompts bring the half-width down to `difference`."""
        seeds = seeds or self.seeds
        within = 0.0 if math.isnan(self.within) else self.within / (seeds * samples_factor)
        return math.ceil(Z95**2 * (self.between + within) / difference**2)


def power(differences: np.ndarray) -> Power:
    """`differences[p, s]`: prompt p's paired difference at seed s (NaN: undefined there; a prompt needs one seed)."""
    d = np.atleast_2d(np.asarray(differences, dtype=np.float64))
    d = d[~np.all(np.isnan(d), axis=1)]
    if d.shape[0] < 2:
        raise ValueError(f"power needs the differences of at least 2 prompts, got {d.shape[0]}")
    means = np.nanmean(d, axis=1)
    complete = d[~np.any(np.isnan(d), axis=1)]
    within = float(np.mean(np.var(complete, axis=1, ddof=1))) if d.shape[1] > 1 and len(complete) else math.nan
    return Power(prompts=int(d.shape[0]), seeds=int(d.shape[1]), sd=float(np.std(means, ddof=1)), within=within)


def paired_differences(results: Mapping[str, Any], model: str, axis: str) -> np.ndarray | None:
    """From a compare report's calibration results: `[prompt, seed]` differences of the other axis at `model`'s
    match on `axis` (seeds where it was not matched left out); None when no seed matched."""
    other = _OTHER[axis]
    columns = []
    for result in results["seeds"].values():
        entry = result["matched"].get(model, {}).get(f"at_{axis}", {})
        if entry.get("temperature") is None:
            continue
        columns.append(nan_array(entry[f"{other}_per_prompt"]) - nan_array(result["reference_evaluation"][other]))
    return np.stack(columns, axis=1) if columns else None


def report_power(results: Mapping[str, Any], target: float = 0.03) -> dict[str, dict[str, Any]]:
    """Per model and matched axis: prompts, seeds, the half-width the pooled CI resolves, and the prompts it would
    take (at these seeds and samples, and with twice the seeds) to resolve `target`."""
    out: dict[str, dict[str, Any]] = {}
    for model in results["pooled"]:
        out[model] = {}
        for axis in ("diversity", "quality"):
            d = paired_differences(results, model, axis)
            if d is None or np.sum(~np.all(np.isnan(d), axis=1)) < 2:
                out[model][f"at_{axis}"] = None
                continue
            p = power(d)
            out[model][f"at_{axis}"] = {
                "difference_of": _OTHER[axis],
                "prompts": p.prompts,
                "seeds": p.seeds,
                "sd": p.sd,
                "within_over_seeds": finite_or_none(p.within),
                "half_width": p.half_width,
                "target": target,
                "prompts_for_target": p.prompts_for(target),
                "prompts_for_target_twice_the_seeds": p.prompts_for(target, seeds=2 * p.seeds),
            }
    return out


def power_lines(power_by_model: Mapping[str, Mapping[str, Any]], reference: str, axes: Sequence[str]) -> list[str]:
    """Markdown bullets: what each pooled comparison resolves, and what `target` would take."""
    lines = []
    for model, by_axis in power_by_model.items():
        for axis in axes:
            p = by_axis.get(f"at_{axis}")
            if p is None:
                continue
            seeds = ""
            if p["within_over_seeds"] is not None:  # one seed: nothing tells what more seeds would remove
                seeds = f" ({p['prompts_for_target_twice_the_seeds']} with twice the seeds)"
            lines.append(
                f"- {model} at {reference}'s {axis}: the pooled CI of the {p['difference_of']} difference resolves "
                f"±{p['half_width']:.3f} ({p['prompts']} prompts × {p['seeds']} seed(s), SD {p['sd']:.3f} over "
                f"prompts); ±{p['target']:g} would take about {p['prompts_for_target']} prompts at these seeds and "
                f"samples{seeds}."
            )
    return lines
