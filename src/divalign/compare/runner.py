"""Run a compare spec's cells through `divalign pipeline`'s own runner, and say where each cell stands.

A cell is a pipeline (:mod:`divalign.compare.cells`), so it is launched, skipped when finished with the same inputs,
resumed when interrupted and refused when its inputs changed exactly as `divalign pipeline` does it, holding the
cell directory's run lock; ``--force`` moves aside only the results whose inputs changed. Every launch joins the
spec's W&B group (``WANDB_RUN_GROUP``) with the variant as its job type.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..pipeline.runner import Launcher, PipelineRunner, StageResult, subprocess_launcher
from ..pipeline.spec import PipelineError
from .cells import Cell
from .spec import CompareError, CompareSpec

FINISHED, INTERRUPTED, NOT_STARTED, REFUSED = "finished", "interrupted", "not started", "refused"


@dataclass
class CellStatus:
    """Where a cell stands: finished (with its stages' results), interrupted, not started, or refused (why)."""

    cell: Cell
    state: str
    results: list[StageResult] = field(default_factory=list)
    detail: str = ""

    @property
    def finished(self) -> bool:
        return self.state == FINISHED


def grouped(launcher: Launcher, group: str, variant: str) -> Launcher:
    """``launcher`` with the spec's W&B group and the variant as job type in every launch's environment."""

    def launch(command: list[str], env: dict[str, str]) -> int:
        return launcher(command, {**env, "WANDB_RUN_GROUP": group, "WANDB_JOB_TYPE": variant})

    return launch


def cell_command(spec: CompareSpec, cell: Cell) -> str:
    """The command that runs ``cell`` on its own (a cluster job's)."""
    return shlex.join(["divalign", "compare", str(spec.path), "--cell", cell.name])


class CompareRunner:
    """Runs (or, with ``dry_run``, plans) cells of ``spec``; ``force`` reruns cells whose inputs changed."""

    def __init__(
        self,
        spec: CompareSpec,
        cells: list[Cell],
        *,
        force: bool = False,
        dry_run: bool = False,
        launcher: Launcher = subprocess_launcher,
        log: Callable[[str], None] = print,
    ):
        self.spec = spec
        self.cells = cells
        self.force = force
        self.dry_run = dry_run
        self.launcher = launcher
        self.log = log

    def _pipeline_runner(self, cell: Cell, dry_run: bool, log: Callable[[str], None]) -> PipelineRunner:
        return PipelineRunner(
            cell.pipeline,
            dry_run=dry_run,
            launcher=grouped(self.launcher, self.spec.group, cell.variant),
            log=log,
            replace_stale=self.force,
        )

    def _refused(self, cell: Cell, error: PipelineError) -> CompareError:
        # The pipeline's advice names its own flag; a cell is forced with --force, which spares the unchanged results
        forcing = "--force-rerun" in str(error) and not self.force
        hint = (
            " (with `divalign compare`, pass --force: it moves aside only the results whose inputs changed)"
            if forcing
            else ""
        )
        return CompareError(f"cell {cell.name}: {error}{hint}")

    def run_cell(self, cell: Cell) -> list[StageResult]:
        """Train ``cell`` (or, in a dry run, print its commands); returns its stages' results."""
        self.log(
            f"[divalign compare {self.spec.name}] cell {cell.name} (seed {cell.seed}): {cell_command(self.spec, cell)}"
        )
        try:
            return self._pipeline_runner(cell, self.dry_run, self.log).run()
        except PipelineError as error:
            raise self._refused(cell, error) from error

    def status(self, cell: Cell) -> CellStatus:
        """Where ``cell`` stands, found by a dry run of its pipeline (which launches nothing and writes nothing)."""
        lines: list[str] = []
        try:
            results = self._pipeline_runner(cell, True, lines.append).run()
        except PipelineError as error:
            return CellStatus(cell, REFUSED, detail=str(self._refused(cell, error)))
        if all(result.run_id != "planned" for result in results):
            return CellStatus(cell, FINISHED, results)
        if any("': resuming: " in line for line in lines):
            return CellStatus(cell, INTERRUPTED, detail="resumes from its last checkpoint")
        return CellStatus(cell, NOT_STARTED)

    def check_all(self) -> list[CellStatus]:
        """Every cell's status; a refused cell (changed inputs, a stage a diversity threshold stopped) fails here,
        before any cell trains."""
        statuses = [self.status(cell) for cell in self.cells]
        refused = [s.detail for s in statuses if s.state == REFUSED]
        if refused:
            raise CompareError("\n".join(refused))
        return statuses


def model_path(status: CellStatus) -> Path:
    """The model a finished cell compares: its last stage's output (merged when that stage saved a LoRA adapter)."""
    from ..pipeline.runner import merge_adapter

    last = status.results[-1]
    return merge_adapter(last.output_dir) if last.is_adapter else last.output_dir
