"""`evaluate_stages`: the comparison read at several stages of every cell (e.g. after SFT and after the GRPO stage
that follows it), each variant against the reference variant's cell at the same stage.

A stage is named as the reference variant names it; every variant is read at its own stage in the same position
(checked when the spec is read). Per stage the report holds the calibrated comparison
(:mod:`divalign.compare.calibration`), the outcomes at the reference temperature (:mod:`divalign.compare.outcomes`)
and, for a stage that logged a reward, its training curves over every cell in one figure; then what each later stage
changed of each variant's outcomes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..pipeline.runner import StageResult, merge_adapter
from .curves_figure import plot_stage_curves
from .outcomes import changes_markdown, outcomes_markdown, stage_changes
from .runner import CellStatus
from .spec import CompareSpec

Outcomes = Callable[..., dict[str, Any]]


def stage_position(spec: CompareSpec, name: str) -> int:
    """The position of the reference's stage `name` in every cell."""
    return [stage["name"] for stage in spec.variants[spec.reference]].index(name)


def result_model(result: StageResult) -> Path:
    """The model a finished stage holds (merged when it saved a LoRA adapter)."""
    return merge_adapter(result.output_dir) if result.is_adapter else result.output_dir


def stage_results(statuses: list[CellStatus], position: int) -> dict[str, dict[int, StageResult]]:
    """variant -> seed -> the finished cells' results at stage `position`."""
    out: dict[str, dict[int, StageResult]] = {}
    for status in statuses:
        if status.finished:
            out.setdefault(status.cell.variant, {})[status.cell.seed] = status.results[position]
    return out


def stage_sections(
    spec: CompareSpec,
    statuses: list[CellStatus],
    calibrate: Callable[..., dict[str, Any]],
    outcomes: Outcomes | None,
    calibration_dir: str,
) -> dict[str, dict[str, Any]]:
    """Per name in `evaluate_stages`: the stage each variant is read at, its calibrated comparison (samples cached
    under REPORT_DIR/<calibration_dir>/<stage>/), its outcomes and its training-curves figure (an RL stage's)."""
    sections: dict[str, dict[str, Any]] = {}
    for name in spec.evaluate_stages or ():
        position = stage_position(spec, name)
        results = stage_results(statuses, position)
        models = {v: {s: result_model(r) for s, r in by_seed.items()} for v, by_seed in results.items()}
        out_dir = spec.report_dir / calibration_dir / name
        section: dict[str, Any] = {
            "position": position,
            "stages": {variant: stages[position]["name"] for variant, stages in spec.variants.items()},
            "models": {v: {str(s): str(p) for s, p in by_seed.items()} for v, by_seed in models.items()},
            "calibration": _linked(calibrate(models, spec.reference, spec.evaluation, out_dir), spec.report_dir),
        }
        if outcomes is not None:
            section["outcomes"] = outcomes(models, spec.reference, spec.evaluation, out_dir)
        dirs = {v: {s: r.output_dir for s, r in by_seed.items()} for v, by_seed in results.items()}
        figure = plot_stage_curves(
            dirs, spec.report_dir / f"{name}_curves.png", title=f"{name}: training curves per start and seed"
        )
        if figure is not None:
            section["curves_figure"] = os.path.relpath(figure, spec.report_dir)
        sections[name] = section
    return sections


def _linked(calibration: dict[str, Any], report_dir: Path) -> dict[str, Any]:
    """The calibration's figure linked from the report's markdown (its own link is from out_dir's parent, the report
    directory only when out_dir is REPORT_DIR/calibration)."""
    if calibration.get("figure"):
        calibration["figure_link"] = os.path.relpath(calibration["figure"], report_dir)
    return calibration


def changes_between(spec: CompareSpec, sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """For each pair of consecutive evaluated stages with outcomes: what the later one changed of each variant."""
    names = [n for n in sections if "per_prompt" in sections[n].get("outcomes", {})]
    return {
        f"{before} -> {after}": stage_changes(
            sections[before]["outcomes"], sections[after]["outcomes"], spec.evaluation
        )
        for before, after in pairwise(names)
    }


def _demoted(markdown: str) -> str:
    """A section's headings one level down, under the stage's own heading."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())


def stages_markdown(report: Mapping[str, Any], markdown: Callable[[dict[str, Any]], str]) -> list[str]:
    """The report's lines for the stages: per stage a section (outcomes, calibrated comparison, curves), then the
    changes from stage to stage."""
    lines: list[str] = []
    reference = report["reference"]
    for name, section in report["stages"].items():
        read = ", ".join(f"{variant}: `{stage}`" for variant, stage in section["stages"].items())
        lines += [
            f"## After stage `{name}`",
            "",
            f"Each variant's stage at position {section['position'] + 1}: {read}.",
            "",
        ]
        if section.get("outcomes") is not None:
            lines += ["### Outcomes", "", outcomes_markdown(section["outcomes"], reference).rstrip(), ""]
        lines += [_demoted(markdown(section["calibration"])).rstrip(), ""]
        if section.get("curves_figure"):
            lines += [f"![{name} training curves]({section['curves_figure']})", ""]
    for pair, changes in report.get("stage_changes", {}).items():
        before, after = pair.split(" -> ")
        k = report["stages"][after]["outcomes"]["k"]
        lines += [f"## From `{before}` to `{after}`", "", changes_markdown(changes, before, after, k).rstrip(), ""]
    return lines
