"""The report step of `divalign compare`: gather the finished cells, say which are missing, run the calibrated
comparison on the finished ones and write ``OUTPUT_ROOT/report/results.json`` and ``results.md``.

The comparison itself (``calibrated_comparison``, ``calibration_markdown``) is :mod:`divalign.compare.calibration`;
it is passed in, so the report can run with another (a test's). Nothing here depends on the order the cells ran in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..launch.output_dir import finished_run
from ..markdown_table import markdown_table
from ..strict_json import strict_json
from .runner import FINISHED, CellStatus, cell_command, model_path
from .spec import CompareSpec
from .stages import Outcomes, changes_between, stage_sections, stages_markdown

Calibrate = Callable[..., dict[str, Any]]
Markdown = Callable[[dict[str, Any]], str]
CALIBRATION_DIR = "calibration"


def _cell_row(spec: CompareSpec, status: CellStatus) -> dict[str, Any]:
    cell = status.cell
    row: dict[str, Any] = {"cell": cell.name, "variant": cell.variant, "seed": cell.seed, "state": status.state}
    if status.finished:
        row["model"] = str(model_path(status))
        row["steps"] = [int((finished_run(r.output_dir) or {}).get("global_step") or 0) for r in status.results]
    else:
        row["command"] = cell_command(spec, cell)
        if status.detail:
            row["detail"] = status.detail
    return row


def finished_models(statuses: list[CellStatus]) -> dict[str, dict[int, Path]]:
    """variant -> seed -> model directory, for the finished cells."""
    models: dict[str, dict[int, Path]] = {}
    for status in statuses:
        if status.finished:
            models.setdefault(status.cell.variant, {})[status.cell.seed] = model_path(status)
    return models


def _why_not(spec: CompareSpec, models: dict[str, dict[int, Path]]) -> str | None:
    if spec.reference not in models:
        return f"no cell of the reference {spec.reference!r} has finished"
    if not [variant for variant in models if variant != spec.reference]:
        return f"no cell of a variant other than the reference {spec.reference!r} has finished"
    return None


def build_report(
    spec: CompareSpec, statuses: list[CellStatus], calibrate: Calibrate, outcomes: Outcomes | None = None
) -> dict[str, Any]:
    """The report's content: cells (finished and missing), and the calibrated comparison of the finished ones (with
    `evaluate_stages`: at each named stage, with the `outcomes` there, :mod:`divalign.compare.stages`)."""
    models = finished_models(statuses)
    report: dict[str, Any] = {
        "spec": str(spec.path),
        "name": spec.name,
        "wandb_group": spec.group,
        "reference": spec.reference,
        "variants": list(spec.variants),
        "seeds": list(spec.seeds),
        "cells": [_cell_row(spec, status) for status in statuses],
        "missing": [status.cell.name for status in statuses if status.state != FINISHED],
    }
    skipped = _why_not(spec, models)
    if spec.evaluate_stages is not None:
        report["evaluate_stages"] = list(spec.evaluate_stages)
        if skipped is not None:
            report["stages"], report["calibration_skipped"] = {}, skipped
            return report
        report["stages"] = stage_sections(spec, statuses, calibrate, outcomes, CALIBRATION_DIR)
        report["stage_changes"] = changes_between(spec, report["stages"])
        return report
    if skipped is not None:
        report["calibration"], report["calibration_skipped"] = None, skipped
        return report
    out_dir = spec.report_dir / CALIBRATION_DIR
    report["calibration"] = calibrate(models, spec.reference, spec.evaluation, out_dir)
    return report


def _cell_line(row: dict[str, Any]) -> list[Any]:
    where = f"`{row['model']}`" if row["state"] == FINISHED else f"`{row['command']}`"
    state = f"{row['state']} ({row['detail']})" if row.get("detail") else row["state"]
    return [row["cell"], row["variant"], row["seed"], state, where]


def _markdown(report: dict[str, Any], markdown: Markdown) -> str:
    lines = [
        f"# divalign compare: {report['name']}",
        "",
        f"Spec `{report['spec']}`; reference `{report['reference']}`; seeds {', '.join(map(str, report['seeds']))}; "
        f"W&B group `{report['wandb_group']}`.",
        "",
        *markdown_table(["cell", "variant", "seed", "state", "model or command"], map(_cell_line, report["cells"])),
        "",
    ]
    if report["missing"]:
        lines += [
            f"Missing cells ({len(report['missing'])}), not in the comparison: {', '.join(report['missing'])}.",
            "",
        ]
    if report.get("calibration_skipped"):
        lines += [f"No calibrated comparison: {report['calibration_skipped']}.", ""]
    elif "stages" in report:
        lines += stages_markdown(report, markdown)
    else:
        lines += [markdown(report["calibration"]).rstrip(), ""]
    return "\n".join(lines)


def write_report(
    spec: CompareSpec,
    statuses: list[CellStatus],
    calibrate: Calibrate,
    markdown: Markdown,
    outcomes: Outcomes | None = None,
) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` in the spec's report directory; returns their paths."""
    report = strict_json(build_report(spec, statuses, calibrate, outcomes))
    spec.report_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = spec.report_dir / "results.json", spec.report_dir / "results.md"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    md_path.write_text(_markdown(report, markdown))
    return json_path, md_path


def default_calibration() -> tuple[Calibrate, Markdown]:
    """The calibrated comparison of :mod:`divalign.compare.calibration` (loaded when a report is written)."""
    from .calibration import calibrated_comparison, calibration_markdown

    return calibrated_comparison, calibration_markdown


def default_outcomes() -> Outcomes:
    """pass@1, pass@k, coverage and entropy from the calibration's cached samples (:mod:`divalign.compare.outcomes`)."""
    from .outcomes import stage_outcomes

    return stage_outcomes
