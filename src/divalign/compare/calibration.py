"""`divalign compare`'s calibrated comparison: every model read at the temperature where it matches the reference.

Raising a model's sampling temperature buys diversity at some quality, so "B is more diverse than CE" means little
until B is read at CE's quality, and "B keeps more quality" until it is read at CE's diversity. Per seed, each
model's temperature is found on the calibration prompts: by bisection where its mean diversity equals the
reference's at `reference_temperature` (the same seed's reference cell; `statistics.bisect_temperature`), and as the
hottest temperature whose mean quality still holds the reference's (`statistics.highest_temperature_holding`). The evaluation prompts (disjoint) are then sampled at those temperatures, the reference at
its own, and the other axis's difference is reported, paired over prompts, per seed and pooled over seeds, with
`scipy.stats.bootstrap` CIs. A fixed temperature grid on the evaluation prompts gives the frontier figure and the
dominance statements.

Models are sampled and scored exactly as `divalign eval` does (`evaluation.sampling`, `evaluation.quality`,
`diversity.score_groups`: same noise rule, same quality grammar); each (model, prompt set, temperature) is cached as
JSON under `out_dir/samples/<variant>/seed<seed>/<hash of the inputs>/` (`sampled.py`), so a rerun of the report
reads instead of sampling, and loads no model.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..markdown_table import interval, markdown_table, mean_std
from ..strict_json import nan_array, strict_json
from .spec import EvaluationSpec
from .statistics import (
    Axes,
    Bisection,
    Point,
    bisect_temperature,
    difference_ci,
    dominance,
    frontier,
    highest_temperature_holding,
    seed_differences,
    single_point_label,
)

DEFAULT_GRID = (0.5, 0.7, 1.0, 1.3, 1.6, 1.9)
PROMPT_SETS = ("calibration", "evaluation")
_OTHER = {"diversity": "quality", "quality": "diversity"}


class Model(Protocol):
    """What the comparison reads of a model: its axes on a prompt set ("calibration" or "evaluation") at a
    temperature."""

    def axes(self, prompt_set: str, temperature: float) -> Axes: ...


# --- the comparison, on any models -----------------------------------------------------------------------------


def _bisection_dict(bisection: Bisection) -> dict[str, Any]:
    return {
        "target": bisection.target,
        "tolerance": bisection.tolerance,
        "outcome": bisection.outcome,
        "temperature": bisection.temperature,
        "value": bisection.value,
        "reason": bisection.reason,
        "bracket": list(bisection.bracket),
        "closest": bisection.closest,
        "evaluations": [list(e) for e in bisection.evaluations],
    }


def _matched_temperature(bisection: Bisection) -> tuple[float | None, str]:
    """The temperature to read a model at: the match; the upper end of the range where the quality target holds all
    the way (flagged "range end"); the closest measured one when the steps ran out with the target inside the range
    (flagged "approximate"); none when the target lies outside the range (never extrapolated)."""
    if bisection.reached:
        return bisection.temperature, "matched"
    if bisection.outcome == "range end":
        return bisection.temperature, "range end"
    if bisection.outcome == "steps exhausted":
        return bisection.closest, "approximate"
    return None, "not reached"


def match(model: Model, reference_eval: Axes, axis: str, target: float, evaluation: EvaluationSpec) -> dict[str, Any]:
    """Find the temperature where `model`'s calibration mean of `axis` meets `target` — diversity by bisection, quality
    as the hottest temperature that still holds it (`highest_temperature_holding`: quality is flat near its best at
    low temperatures) — then read both axes on the evaluation prompts at that temperature: the other axis's
    difference from the reference is the result, this axis's is the check that the match holds on unseen prompts."""
    low, high = evaluation.temperature_range
    search = bisect_temperature if axis == "diversity" else highest_temperature_holding
    bisection = search(
        lambda t: model.axes("calibration", t).mean(axis),
        target,
        low,
        high,
        evaluation.tolerance,
        evaluation.max_bisection_steps,
        start=evaluation.reference_temperature if low < evaluation.reference_temperature < high else None,
    )
    temperature, status = _matched_temperature(bisection)
    out: dict[str, Any] = {"bisection": _bisection_dict(bisection), "temperature": temperature, "status": status}
    if temperature is None:
        return out
    mine = model.axes("evaluation", temperature)
    for name in (axis, _OTHER[axis]):
        ours, theirs = getattr(mine, name), getattr(reference_eval, name)
        interval = difference_ci(ours, theirs, True, evaluation.n_bootstrap, evaluation.seed)
        out[f"{name}_difference"] = interval.as_dict()
        out[f"{name}_per_prompt"] = np.asarray(ours, dtype=np.float64).tolist()
    return out


def grid_points(model: Model, grid: Sequence[float]) -> list[Point]:
    """The model's mean (diversity, quality) on the evaluation prompts at each grid temperature."""
    points = []
    for t in grid:
        axes = model.axes("evaluation", t)
        points.append(Point(float(t), axes.mean("diversity"), axes.mean("quality")))
    return points


def compare_seed(
    models: Mapping[str, Model],
    reference: str,
    evaluation: EvaluationSpec,
    grid: Sequence[float],
    direction: int = 1,
    release: Callable[[str], None] = lambda name: None,
) -> dict[str, Any]:
    """One seed: the reference's targets, every other model matched on each axis, every model's grid points and
    frontier, and the dominance between models. `release(name)` is called when a model is no longer needed."""
    ref = models[reference]
    t_ref = evaluation.reference_temperature
    calibration = ref.axes("calibration", t_ref)
    targets = {axis: calibration.mean(axis) for axis in ("diversity", "quality")}
    reference_eval = ref.axes("evaluation", t_ref)
    points = {reference: grid_points(ref, grid)}
    release(reference)
    matched: dict[str, Any] = {}
    for name, model in models.items():
        if name == reference:
            continue
        matched[name] = {
            f"at_{axis}": match(model, reference_eval, axis, targets[axis], evaluation)
            if math.isfinite(targets[axis])
            else {"status": f"the reference's {axis} is undefined on the calibration prompts", "temperature": None}
            for axis in ("diversity", "quality")
        }
        points[name] = grid_points(model, grid)
        release(name)
    return {
        "targets": targets,
        "reference_evaluation": {
            axis: np.asarray(getattr(reference_eval, axis), dtype=np.float64).tolist() for axis in targets
        },
        "matched": matched,
        **_points_summary(points, direction),
    }


def _points_summary(points: Mapping[str, list[Point]], direction: int) -> dict[str, Any]:
    return {
        "grid": {name: [dataclasses.asdict(p) for p in pts] for name, pts in points.items()},
        "frontiers": {name: frontier(pts, direction) for name, pts in points.items()},
        "dominance": {
            f"{a} over {b}": dominance(points[a], points[b], direction) for a in points for b in points if a != b
        },
    }


def pool_seeds(per_seed: Mapping[int, dict[str, Any]], evaluation: EvaluationSpec) -> dict[str, Any]:
    """Per model and matched axis: the other axis's paired difference at each seed and pooled over seeds (only
    seeds where the model could be matched; `unmatched_seeds` lists the others)."""
    names = sorted({name for result in per_seed.values() for name in result["matched"]})
    pooled: dict[str, Any] = {}
    for name in names:
        pooled[name] = {}
        for axis in ("diversity", "quality"):
            other = _OTHER[axis]
            pairs, unmatched = {}, []
            for seed, result in sorted(per_seed.items()):
                entry = result["matched"].get(name, {}).get(f"at_{axis}", {})
                if entry.get("temperature") is None:
                    unmatched.append(seed)
                    continue
                pairs[seed] = (entry[f"{other}_per_prompt"], result["reference_evaluation"][other])
            summary = seed_differences(pairs, evaluation.n_bootstrap, evaluation.seed).as_dict() if pairs else {}
            pooled[name][f"at_{axis}"] = {"difference_of": other, **summary, "unmatched_seeds": unmatched}
    return pooled


def seed_mean_points(per_seed: Mapping[int, dict[str, Any]]) -> dict[str, list[Point]]:
    """Each model's grid points averaged over the seeds that have it."""
    collected: dict[str, dict[float, list[tuple[float, float]]]] = {}
    for result in per_seed.values():
        for name, pts in result["grid"].items():
            for p in pts:
                collected.setdefault(name, {}).setdefault(p["temperature"], []).append((p["diversity"], p["quality"]))
    return {
        name: [Point(t, *(float(np.nanmean(v)) for v in zip(*vals, strict=True))) for t, vals in sorted(by_t.items())]
        for name, by_t in collected.items()
    }


def compare_models(
    models: Mapping[str, Mapping[int, Model]],
    reference: str,
    evaluation: EvaluationSpec,
    grid: Sequence[float] = DEFAULT_GRID,
    direction: int = 1,
    release: Callable[[str, int], None] = lambda name, seed: None,
) -> dict[str, Any]:
    """The whole comparison on any `models[variant][seed]`: per seed (seeds the reference has), pooled over seeds,
    and the grid's frontiers and dominance on the seed means."""
    if reference not in models:
        raise ValueError(f"the reference variant {reference!r} has no finished model; variants: {sorted(models)}")
    seeds = sorted(models[reference])
    per_seed = {}
    for seed in seeds:
        cells = {name: by_seed[seed] for name, by_seed in models.items() if seed in by_seed}
        per_seed[seed] = compare_seed(
            cells, reference, evaluation, grid, direction, lambda name, s=seed: release(name, s)
        )
    without_reference = {
        name: sorted(set(by_seed) - set(seeds)) for name, by_seed in models.items() if set(by_seed) - set(seeds)
    }
    means = seed_mean_points(per_seed)
    return {
        "reference": reference,
        "reference_temperature": evaluation.reference_temperature,
        "temperature_grid": [float(t) for t in grid],
        "seeds": {str(s): r for s, r in per_seed.items()},
        "pooled": pool_seeds(per_seed, evaluation),
        "seed_mean": _points_summary(means, direction),
        "seeds_without_reference": without_reference,
    }


# --- on trained checkpoints --------------------------------------------------------------------------------------


def _nanmean(values: Sequence[float | None]) -> float:
    arr = nan_array(values)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _matched_points(per_seed: Mapping[str, dict[str, Any]]) -> dict[str, list[Point]]:
    """Each model's evaluation means at its matched temperatures (both axes, every seed)."""
    out: dict[str, list[Point]] = {}
    for result in per_seed.values():
        for name, entry in result["matched"].items():
            for hit in (entry["at_diversity"], entry["at_quality"]):
                if hit.get("temperature") is None:
                    continue
                d, q = (_nanmean(hit[f"{a}_per_prompt"]) for a in ("diversity", "quality"))
                out.setdefault(name, []).append(Point(hit["temperature"], d, q))
    return out


def calibrated_comparison(
    models: dict[str, dict[int, Path]],
    reference: str,
    evaluation: EvaluationSpec,
    out_dir: Path,
    grid: Sequence[float] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Compare every finished `models[variant][seed]` (a trained model directory) with the same seed's `reference`
    cell (see the module docstring). Samples are cached under `evaluation.samples_root(out_dir)`, the figure is
    `out_dir/calibrated_frontiers.png` (`figure_link`: its path from `out_dir`'s parent, where the report's markdown
    lies). `grid`: the frontier's temperatures (default: the evaluation's `temperature_grid` when it has one, else
    `DEFAULT_GRID`; the reference temperature is always added). Returns strict-JSON-able results (NaN/inf as
    None)."""
    from .frontier_figure import plot_calibrated_frontiers  # matplotlib only when a figure is drawn
    from .sampled import SampledModel, load_scoring  # torch and the scorers only for real checkpoints

    if not models.get(reference):
        raise ValueError(f"the reference variant {reference!r} has no finished cell; finished: {sorted(models)}")
    scoring = load_scoring(evaluation, device)
    out_dir = Path(out_dir)
    cells = {
        name: {
            seed: SampledModel(
                f"{name} (seed {seed})", Path(path), scoring, evaluation.samples_root(out_dir) / name / f"seed{seed}"
            )
            for seed, path in by_seed.items()
        }
        for name, by_seed in models.items()
    }
    if grid is None:
        grid = getattr(evaluation, "temperature_grid", None) or DEFAULT_GRID
    grid = sorted({float(t) for t in grid} | {float(evaluation.reference_temperature)})
    try:
        results = compare_models(
            cells, reference, evaluation, grid, scoring.direction, lambda name, seed: cells[name][seed].close()
        )
    finally:
        for by_seed in cells.values():
            for cell in by_seed.values():
                cell.close()
    figure = plot_calibrated_frontiers(
        seed_mean_points(results["seeds"]),
        out_dir / "calibrated_frontiers.png",
        scoring.metric,
        scoring.quality.name,
        scoring.direction,
        matched=_matched_points(results["seeds"]),
    )
    results.update(
        diversity_metric=scoring.metric,
        diversity_direction=scoring.direction,
        quality=scoring.quality.name,
        evaluation=dataclasses.asdict(evaluation),
        prompts={k: len(v) for k, v in scoring.prompts.items()},
        figure=str(figure),
        figure_link=os.path.relpath(figure, out_dir.parent),
    )
    return strict_json(results)


# --- the report's section ----------------------------------------------------------------------------------------


def _ci(ci: Mapping[str, Any] | None) -> str:
    return interval(ci, notes=True)


_STATUS_NOTE = {"approximate": " (approximate)", "range end": " (range end: quality still held there)"}


def _matched_rows(results: Mapping[str, Any], axis: str) -> list[str]:
    other = _OTHER[axis]
    reference = results["reference"]
    header = [
        "model",
        "seed",
        f"T at {reference}'s {axis}",
        f"{other} − {reference}'s [95 % CI]",
        f"{axis} − {reference}'s on the evaluation prompts (check)",
    ]
    rows = []
    for name, pooled in results["pooled"].items():
        for seed, result in results["seeds"].items():
            entry = result["matched"].get(name, {}).get(f"at_{axis}")
            if entry is None:
                continue
            if entry.get("temperature") is None:
                reason = entry.get("bisection", {}).get("reason", entry.get("status", ""))
                rows.append([name, seed, f"not matched: {reason}", "n/a", "n/a"])
                continue
            t = f"{entry['temperature']:.3g}" + _STATUS_NOTE.get(entry["status"], "")
            rows.append([name, seed, t, _ci(entry[f"{other}_difference"]), _ci(entry[f"{axis}_difference"])])
        summary = pooled[f"at_{axis}"]
        if summary.get("pooled"):
            spread = ""
            if summary.get("seed_std") is not None:
                spread = f"; over seeds {mean_std(summary['seed_mean'], summary['seed_std'], signed=True)}"
            rows.append([name, "pooled", "", f"{_ci(summary['pooled'])}{spread}", ""])
    return markdown_table(header, rows)


def _dominance_lines(summary: Mapping[str, Any], reference: str) -> list[str]:
    lines = []
    for pair, found in summary["dominance"].items():
        model, other = pair.split(" over ", 1)
        if found["beats_all"]:
            ts = ", ".join(f"T={t:g}" for t in found["beats_all"])
            lines.append(f"- {model} at {ts} beats every sampled point of {other} on both axes.")
        elif found["pairs"]:
            shown = ", ".join(f"{model} at T={a:g} beats {other} at T={b:g}" for a, b in found["pairs"][:6])
            more = f" (and {len(found['pairs']) - 6} more)" if len(found["pairs"]) > 6 else ""
            lines.append(f"- On both axes: {shown}{more}.")
    for name, front in summary["frontiers"].items():
        if front["single_point"]:
            where = single_point_label(front["efficient"])
            lines.append(
                f"- {name}'s frontier is a single point ({where}): every other grid temperature is matched or beaten "
                "on both axes by it, so along the grid temperature buys neither quality nor diversity; the matched "
                "comparisons above read the models at matched values and need no frontier."
            )
    return lines or ["- No sampled point of one model beats one of another's on both axes."]


def calibration_markdown(results: Mapping[str, Any]) -> str:
    """The report's section on the calibrated comparison: per model, the other axis's difference at the reference's
    diversity and at its quality (per seed and pooled, 95 % CIs), then dominance and frontier notes on the grid."""
    reference, t_ref = results["reference"], results["reference_temperature"]
    metric, quality = results.get("diversity_metric", "diversity"), results.get("quality", "quality")
    tolerance = results.get("evaluation", {}).get("tolerance")
    lines = [
        "## Calibrated comparison",
        "",
        f"Each model's sampling temperature is set by bisection on the calibration prompts so that its mean "
        f"{metric} (diversity), then separately its mean {quality} (quality), equals {reference}'s at T={t_ref:g} "
        f"(same seed; relative tolerance {tolerance}); for quality, the hottest temperature that still holds the "
        "reference's quality, since quality is often flat near its best at low temperatures and every temperature "
        "there matches it. The evaluation prompts are then sampled at that temperature; "
        f"differences are model − {reference}, paired over prompts, with 95 % BCa bootstrap CIs (scipy), per seed "
        "and pooled (per prompt, the mean over seeds). The check column shows how well the matched axis holds on "
        "the evaluation prompts.",
        "",
        f"### At {reference}'s diversity: quality difference",
        "",
        *_matched_rows(results, "diversity"),
        "",
        f"### At {reference}'s quality: diversity difference",
        "",
        *_matched_rows(results, "quality"),
        "",
        f"### Fixed grid (T = {', '.join(f'{t:g}' for t in results['temperature_grid'])}; seed means)",
        "",
        *_dominance_lines(results["seed_mean"], reference),
    ]
    if results.get("figure_link"):
        lines += ["", f"![calibrated frontiers]({results['figure_link']})"]
    return "\n".join(lines) + "\n"
