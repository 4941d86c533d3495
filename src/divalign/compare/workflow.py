"""What `divalign compare` does with its flags: check the spec and every cell, then run all cells and the report, one
``--cell``, the ``--report`` alone, the ``--dry-run`` or ``--list-cells``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cells import Cell, build_cells, find_cell
from .report import default_calibration, default_outcomes, write_report
from .runner import CompareRunner
from .spec import CompareError, CompareSpec
from .spec_file import load_compare


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
    spec = load_compare(path)
    cells = build_cells(spec)
    if list_cells:
        for item in cells:
            log(item.name)
        return []
    calibration = runner_kwargs.pop("calibration", None)  # (calibrate, markdown): a test's stand-in
    # with a stand-in calibration no samples are cached: the outcomes only where a test passes its own
    outcomes = runner_kwargs.pop("outcomes", None if calibration else default_outcomes())
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
    json_path, md_path = write_report(spec, statuses, *(calibration or default_calibration()), outcomes=outcomes)
    missing = [s.cell.name for s in statuses if not s.finished]
    if missing:
        log(f"[divalign compare {spec.name}] missing cells (not in the report): {', '.join(missing)}")
    log(f"[divalign compare {spec.name}] report: {md_path} ({json_path.name})")
    return statuses


def _dry_run(runner: CompareRunner, spec: CompareSpec, cells: list[Cell], log: Callable[[str], None]) -> None:
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
