"""`divalign compare SPEC`: train every variant × seed of a spec and compare them, calibrated, against a reference.

Each cell (``VARIANT-seedN``) is a pipeline run by `divalign pipeline`'s runner (:mod:`.cells`, :mod:`.runner`); the
report (:mod:`.report`) gathers the finished cells and sets each variant against the reference at the temperatures
where their diversity, then their quality, match (:mod:`.calibration`). Format: recipes/compare/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from .command import add_parser, run
from .spec import CompareError, CompareSpec, EvaluationSpec, load_compare

# The runner loads the launch checks (torch, TRL) and the calibration the samplers: imported on first use, so that
# `divalign --help` registers the subcommand without them
_LAZY = {
    **dict.fromkeys(("Cell", "build_cells"), ".cells"),
    **dict.fromkeys(("CellStatus", "CompareRunner"), ".runner"),
    **dict.fromkeys(("write_report",), ".report"),
    **dict.fromkeys(("calibrated_comparison", "calibration_markdown"), ".calibration"),
}

__all__ = [
    "Cell",
    "CellStatus",
    "CompareError",
    "CompareRunner",
    "CompareSpec",
    "EvaluationSpec",
    "add_parser",
    "build_cells",
    "calibrated_comparison",
    "calibration_markdown",
    "load_compare",
    "run",
    "run_compare",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_compare(
    path: str,
    *,
    cell: str | None = None,
    report: bool = False,
    list_cells: bool = False,
    dry_run: bool = False,
    force: bool = False,
    log: Callable[[str], None] = print,
    **runner_kwargs: Any,
) -> list[Any]:
    """Validate the spec at ``path`` (every cell, before anything trains), then run what the flags ask; returns the
    cells' statuses (the cells run, for ``cell``; all cells, for a report or a full run)."""
    from .cells import build_cells, find_cell
    from .report import default_calibration, write_report
    from .runner import CompareRunner

    spec = load_compare(path)
    cells = build_cells(spec)
    if list_cells:
        for item in cells:
            log(item.name)
        return []
    calibrate, markdown = runner_kwargs.pop("calibration", None) or default_calibration()
    runner = CompareRunner(spec, cells, force=force, dry_run=dry_run, log=log, **runner_kwargs)
    if cell is not None:
        chosen = find_cell(cells, cell, spec)
        runner.run_cell(chosen)
        return [runner.status(chosen)] if not dry_run else []
    if not report:
        if dry_run:
            _dry_run(runner, spec, cells, log)
            return []
        runner.check_all()
        for item in cells:
            runner.run_cell(item)
    statuses = [runner.status(item) for item in cells]
    if dry_run:
        return statuses
    json_path, md_path = write_report(spec, statuses, calibrate, markdown)
    missing = [s.cell.name for s in statuses if not s.finished]
    if missing:
        log(f"[divalign compare {spec.name}] missing cells (not in the report): {', '.join(missing)}")
    log(f"[divalign compare {spec.name}] report: {md_path} ({json_path.name})")
    return statuses


def _dry_run(runner: Any, spec: CompareSpec, cells: list[Any], log: Callable[[str], None]) -> None:
    """Every cell's commands; the cells that would be refused are listed, then fail the dry run together."""
    refused = []
    for item in cells:
        try:
            runner.run_cell(item)
        except CompareError as error:
            log(f"[divalign compare {spec.name}] cell {item.name}: refused")
            refused.append(str(error))
    if refused:
        raise CompareError("\n".join(refused))
    log(f"[divalign compare {spec.name}] dry run: {len(cells)} cells, nothing was launched")
