"""The statistics of `divalign compare`'s calibrated comparison, pure numpy/scipy: a bisection of a monotone measure
over sampling temperature, 95 % CIs from `scipy.stats.bootstrap` (paired over prompts, BCa), per-seed and pooled
differences, and dominance between two models' sampled (diversity, quality) points.

A CI is BCa unless BCa is undefined for the data (scipy warns and returns NaN: e.g. a jackknife with no spread); the
percentile interval is used then and the result says so. Data with no spread at all get the zero-width interval of
their one value, also said.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..diversity.bootstrap import bootstrap_interval
from ..evaluation.frontier import efficient

_ROUNDING = 1e-12  # a spread this small (relative) is float rounding: (x + 0.3) - x is not exactly 0.3 for every x


@dataclass(frozen=True)
class Axes:
    """Per-prompt diversity and quality of one model at one temperature on one prompt set (NaN: undefined)."""

    diversity: np.ndarray
    quality: np.ndarray

    def mean(self, axis: str) -> float:
        values = np.asarray(getattr(self, axis), dtype=np.float64)
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else math.nan


# --- bisection -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bisection:
    """Where a measure of temperature meets `target`.

    `outcome`: "reached" (some measured temperature's value lies within the tolerance of the target; `temperature`
    and `value` are that point), "out of range" (the target lies outside the values at the range's ends: `bracket`
    is the range, never extrapolated), "steps exhausted" (`bracket` is the last interval whose ends' values enclose
    the target), "undefined" (the measure was NaN somewhere) or, from `highest_temperature_holding` only, "range
    end" (the target still holds at the range's upper end: `temperature` is that end); `temperature` is None unless
    reached or at the range end, and `reason` says it in words. `closest` is the measured temperature whose value is nearest to
    the target, whatever happened; `evaluations` lists every (temperature, value) measured, in order.
    """

    target: float
    tolerance: float
    outcome: str
    temperature: float | None
    value: float | None
    reason: str
    bracket: tuple[float, float]
    closest: float
    evaluations: list[tuple[float, float]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.outcome == "reached"


def within(value: float, target: float, tolerance: float) -> bool:
    """`value` matches `target` up to the relative `tolerance` (|value − target| ≤ tolerance·|target|; a target of 0
    must be met exactly)."""
    return math.isfinite(value) and abs(value - target) <= tolerance * abs(target)


def _check_search(
    name: str, target: float, low: float, high: float, tolerance: float, max_steps: int, start: float | None
) -> None:
    """The arguments every temperature search shares; `name` ("bisection", "search") says whose they are."""
    if not (0 < low < high) or not math.isfinite(high):
        raise ValueError(f"temperature range must satisfy 0 < low < high, got ({low}, {high})")
    if start is not None and not low < start < high:
        raise ValueError(f"the {name}'s start {start} must lie inside the range ({low}, {high})")
    if tolerance < 0 or max_steps < 0:
        raise ValueError(f"need tolerance >= 0 and max_steps >= 0, got {tolerance} and {max_steps}")
    if not math.isfinite(target):
        raise ValueError(f"the {name}'s target must be a finite number, got {target}")


class _Trace:
    """What one temperature search measured, in order, and its result from them."""

    def __init__(self, measure: Callable[[float], float], target: float, tolerance: float) -> None:
        self.measure, self.target, self.tolerance = measure, target, tolerance
        self.evaluations: list[tuple[float, float]] = []

    def at(self, t: float) -> float:
        value = float(self.measure(t))
        self.evaluations.append((t, value))
        return value

    def result(
        self, outcome: str, t: float | None, reason: str, bracket: tuple[float, float], closest: float
    ) -> Bisection:
        value = dict(self.evaluations)[t] if t is not None else None
        evaluations = list(self.evaluations)
        return Bisection(self.target, self.tolerance, outcome, t, value, reason, bracket, closest, evaluations)


def bisect_temperature(
    measure: Callable[[float], float],
    target: float,
    low: float,
    high: float,
    tolerance: float = 0.02,
    max_steps: int = 8,
    start: float | None = None,
) -> Bisection:
    """The temperature in [low, high] at which `measure` (increasing or decreasing in temperature) equals `target`
    within the relative `tolerance`, by bisection: the two ends are measured, then up to `max_steps` midpoints.
    With `start` (a first guess inside the range, e.g. the reference's temperature: a model like the reference
    matches near it), `start` is measured first and, if it misses, splits the range in place of the first midpoint."""
    _check_search("bisection", target, low, high, tolerance, max_steps, start)
    trace = _Trace(measure, target, tolerance)
    at = trace.at

    def done(outcome: str, t: float | None, reason: str, bracket: tuple[float, float]) -> Bisection:
        finite = [(abs(v - target), t) for t, v in trace.evaluations if math.isfinite(v)]
        return trace.result(outcome, t, reason, bracket, min(finite)[1] if finite else low)

    f_start = at(start) if start is not None else math.nan
    if start is not None and within(f_start, target, tolerance):
        return done("reached", start, "reached", (low, high))
    f_low, f_high = at(low), at(high)
    if not (math.isfinite(f_low) and math.isfinite(f_high)):
        return done("undefined", None, "the measure is undefined at an end of the range", (low, high))
    for t, v in ((low, f_low), (high, f_high)):
        if within(v, target, tolerance):
            return done("reached", t, "reached", (low, high))
    if not min(f_low, f_high) <= target <= max(f_low, f_high):
        side = "below" if target < min(f_low, f_high) else "above"
        reason = (
            f"target {target:.4g} lies {side} the values at the range's ends "
            f"({f_low:.4g} at T={low:g}, {f_high:.4g} at T={high:g})"
        )
        return done("out of range", None, reason, (low, high))
    if start is not None and math.isfinite(f_start):
        if (f_low - target) * (f_start - target) < 0:
            high, f_high = start, f_start
        else:
            low, f_low = start, f_start
    # Keep the target between the bracket's ends' values: true even if sampling noise bends the measure.
    for _ in range(max_steps):
        mid = (low + high) / 2
        f_mid = at(mid)
        if not math.isfinite(f_mid):
            return done("undefined", None, f"the measure is undefined at T={mid:g}", (low, high))
        if within(f_mid, target, tolerance):
            return done("reached", mid, "reached", (low, high))
        if (f_low - target) * (f_mid - target) < 0:
            high, f_high = mid, f_mid
        else:
            low, f_low = mid, f_mid
    reason = f"not within {tolerance:g} of {target:.4g} after {max_steps} steps (target between T={low:g} and {high:g})"
    return done("steps exhausted", None, reason, (low, high))


def holds(value: float, target: float, tolerance: float) -> bool:
    """`value` is at least `target` up to the relative `tolerance` (value ≥ target − tolerance·|target|)."""
    return math.isfinite(value) and value >= target - tolerance * abs(target)


def highest_temperature_holding(
    measure: Callable[[float], float],
    target: float,
    low: float,
    high: float,
    tolerance: float = 0.02,
    max_steps: int = 8,
    start: float | None = None,
    resolution: float = 0.05,
) -> Bisection:
    """A temperature at the hot end of those in [low, high] at which `measure` (a quality: higher is better) still
    holds `target` within the relative `tolerance`: the boundary between a temperature that holds it and a hotter
    one that does not is bisected until they lie `resolution` apart with the holding end within the tolerance (or
    the steps run out), and that holding end is the answer.

    Quality is rarely monotone in temperature: it is often flat near its best at low temperatures and falls beyond;
    every temperature on the flat part matches the target within its noise, and a plain bisection lands anywhere on
    it (the least diverse end as readily as the most). Of all the temperatures at which the model keeps the target
    quality, the hottest is its most diverse, so that is the one the comparison reads. The upper end is measured
    first: if it holds, the outcome is "range end" (`temperature` is `high`: the model keeps the quality all the
    way, and its diversity there is a lower bound). Otherwise a holding temperature is sought at `start`, then at
    `low` ("out of range" if neither holds); the boundary is then bisected. "reached": the hottest holding temperature
    measured lies within the tolerance of the target; "steps exhausted": it holds the target with room to spare
    (quality falls faster than the bracket shrank; `closest` is that temperature). `bracket` is the last (holding,
    not holding) pair."""
    _check_search("search", target, low, high, tolerance, max_steps, start)
    trace = _Trace(measure, target, tolerance)
    at, done, evaluations = trace.at, trace.result, trace.evaluations

    f_high = at(high)
    if holds(f_high, target, tolerance):
        reason = f"holds {target:.4g} up to the range's upper end ({f_high:.4g} at T={high:g})"
        return done("range end", high, reason, (low, high), high)
    holding = None
    for t in (start, low):
        if t is not None and holds(at(t), target, tolerance):
            holding = t
            break
    if holding is None:
        measured = ", ".join(f"{v:.4g} at T={t:g}" for t, v in evaluations)
        reason = f"target {target:.4g} is not held at any measured T ({measured})"
        return done("out of range", None, reason, (low, high), low)
    # even where `holding` already matches, the search goes on hotter: the same quality with more diversity
    lo, hi = holding, high
    for _ in range(max_steps):
        if hi - lo <= resolution and within(dict(evaluations)[lo], target, tolerance):
            break
        mid = (lo + hi) / 2
        if holds(at(mid), target, tolerance):
            lo = mid
        else:
            hi = mid
    if within(dict(evaluations)[lo], target, tolerance):
        return done("reached", lo, "reached", (lo, hi), lo)
    reason = f"not within {tolerance:g} of {target:.4g} after {max_steps} steps (held at T={lo:g}, not at T={hi:g})"
    return done("steps exhausted", None, reason, (lo, hi), lo)


# --- confidence intervals --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """An estimate (a mean or a difference of means over prompts) with its 95 % CI. `method`: "BCa", "percentile"
    (BCa undefined for these data), "no spread" (every value equal: the zero-width interval) or "none" (fewer than
    two prompts: no CI); `note` says why when it is not BCa."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    method: str
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "estimate": self.estimate,
            "ci_low": self.low,
            "ci_high": self.high,
            "n": self.n,
            "method": self.method,
            "note": self.note,
        }


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def mean_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0) -> Interval:
    """The mean over prompts (NaN values left out) and its 95 % bootstrap CI over prompts."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    return _interval((x,), lambda v, axis=-1: np.mean(v, axis=axis), x, False, n_resamples, seed)


def difference_ci(
    model: Sequence[float], reference: Sequence[float], paired: bool = True, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """mean(model) − mean(reference) with its 95 % bootstrap CI. `paired`: the i-th values share a prompt and are
    resampled together (prompts where either is NaN are left out); otherwise each side is resampled on its own."""
    a, b = np.asarray(model, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"a paired difference needs one value per prompt on each side, got {a.size} and {b.size}")
        keep = ~(np.isnan(a) | np.isnan(b))
        a, b = a[keep], b[keep]
        spread = a - b
    else:
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        spread = np.concatenate([a - a.mean(), b - b.mean()]) if a.size and b.size else np.zeros(0)
    n = min(a.size, b.size)
    return _interval((a, b), _mean_difference, spread, paired, n_resamples, seed, n=n)


def _interval(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    spread: np.ndarray,
    paired: bool,
    n_resamples: int,
    seed: int,
    n: int | None = None,
) -> Interval:
    n = min(s.size for s in samples) if n is None else n
    if n == 0:
        return Interval(None, None, None, 0, "none", "no prompt with a defined value")
    estimate = float(statistic(*samples))
    if n < 2:
        return Interval(estimate, None, None, n, "none", "one prompt: no CI")
    if np.ptp(spread) <= _ROUNDING * max(1.0, float(np.abs(spread).max())):
        note = "every prompt gives the same value: no spread to resample, the interval is that value"
        return Interval(estimate, estimate, estimate, n, "no spread", note)
    found = bootstrap_interval(samples, statistic, paired=paired, n_resamples=n_resamples, seed=seed)
    return Interval(estimate, found.low, found.high, n, found.method, found.note)


# --- seeds -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedDifferences:
    """A paired difference (model − reference, per prompt) at each seed and pooled over seeds.

    `per_seed[s]`: the mean over prompts at seed s with its CI over prompts. `pooled`: per prompt, the mean over
    seeds of its difference, then the mean over prompts with its CI over prompts (the prompts are shared by every
    seed, so they stay the resampling unit). `seed_mean` ± `seed_std`: of the per-seed estimates (std with ddof 1,
    None with one seed)."""

    per_seed: dict[int, Interval]
    pooled: Interval
    seed_mean: float | None
    seed_std: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "per_seed": {str(s): i.as_dict() for s, i in self.per_seed.items()},
            "pooled": self.pooled.as_dict(),
            "seed_mean": self.seed_mean,
            "seed_std": self.seed_std,
        }


def seed_differences(
    per_seed: Mapping[int, tuple[Sequence[float], Sequence[float]]], n_resamples: int = 2000, seed: int = 0
) -> SeedDifferences:
    """`per_seed[s] = (model, reference)`: per-prompt values at seed s, the same prompts in the same order at every
    seed."""
    if not per_seed:
        raise ValueError("seed_differences needs at least one seed")
    sizes = {s: len(pair[0]) for s, pair in per_seed.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every seed must cover the same prompts; prompts per seed: {sizes}")
    intervals = {s: difference_ci(m, r, True, n_resamples, seed) for s, (m, r) in sorted(per_seed.items())}
    model = np.array([m for m, _ in per_seed.values()], dtype=np.float64)
    reference = np.array([r for _, r in per_seed.values()], dtype=np.float64)
    undefined = np.isnan(model) | np.isnan(reference)
    model[undefined] = reference[undefined] = np.nan  # a seed counts for a prompt only where its pair is defined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a prompt undefined at every seed stays NaN, then left out
        # per prompt, mean over seeds of each side = the mean over seeds of the paired difference
        pooled = difference_ci(np.nanmean(model, axis=0), np.nanmean(reference, axis=0), True, n_resamples, seed)
    estimates = [i.estimate for i in intervals.values() if i.estimate is not None]
    seed_mean = float(np.mean(estimates)) if estimates else None
    seed_std = float(np.std(estimates, ddof=1)) if len(estimates) > 1 else None
    return SeedDifferences(intervals, pooled, seed_mean, seed_std)


# --- dominance and frontiers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One model's mean (diversity, quality) over prompts at one temperature."""

    temperature: float
    diversity: float
    quality: float


def beats(a: Point, b: Point, diversity_direction: int = 1) -> bool:
    """`a` is strictly better than `b` on both axes (diversity in the metric's `diversity_direction`: +1 higher is
    more diverse, −1 lower is)."""
    return (a.diversity - b.diversity) * diversity_direction > 0 and a.quality > b.quality


def _matches_or_beats(a: Point, b: Point, direction: int) -> bool:
    da, db = a.diversity * direction, b.diversity * direction
    return da >= db and a.quality >= b.quality and (da > db or a.quality > b.quality)


def dominance(model: Sequence[Point], other: Sequence[Point], diversity_direction: int = 1) -> dict[str, object]:
    """Which of `model`'s points beat which of `other`'s on both axes: `pairs` lists (model's T, other's T) for every
    such pair, `beats_all` the temperatures of `model` whose point beats every point of `other`."""
    finite = [p for p in model if math.isfinite(p.diversity) and math.isfinite(p.quality)]
    theirs = [p for p in other if math.isfinite(p.diversity) and math.isfinite(p.quality)]
    pairs = [[a.temperature, b.temperature] for a in finite for b in theirs if beats(a, b, diversity_direction)]
    beats_all = [a.temperature for a in finite if theirs and all(beats(a, b, diversity_direction) for b in theirs)]
    return {"pairs": pairs, "beats_all": beats_all}


def frontier(points: Sequence[Point], diversity_direction: int = 1) -> dict[str, object]:
    """A model's efficient points (no other of its temperatures matches or beats them on both axes) and its dominated
    ones, each with the temperatures that beat it. `single_point`: one temperature beats or matches every other
    — raising or lowering the temperature from it buys neither quality nor diversity, and the frontier is a point."""
    finite = [p for p in points if math.isfinite(p.diversity) and math.isfinite(p.quality)]
    signed = [p.diversity * diversity_direction for p in finite]
    d, q = efficient(signed, [p.quality for p in finite])
    kept = {(float(x), float(y)) for x, y in zip(d, q, strict=True)}
    efficient_t = [p.temperature for p, s in zip(finite, signed, strict=True) if (s, p.quality) in kept]
    dominated = {
        f"{p.temperature:g}": [b.temperature for b in finite if _matches_or_beats(b, p, diversity_direction)]
        for p in finite
        if p.temperature not in efficient_t
    }
    return {
        "efficient": efficient_t,
        "dominated": dominated,
        "single_point": len(kept) == 1 and len(finite) > 1,
        "undefined": [p.temperature for p in points if p not in finite],
    }


def single_point_label(temperatures: Sequence[float]) -> str:
    """ "T=1", or "T=0.7, 1 (one and the same point)" when several temperatures give the single efficient point."""
    ts = ", ".join(f"{t:g}" for t in temperatures)
    return f"T={ts}" + (" (one and the same point)" if len(temperatures) > 1 else "")
