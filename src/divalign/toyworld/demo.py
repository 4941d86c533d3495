"""``make demo``: CE, TOFU, GEM and TRL's DFT SFT compared by `divalign compare` on a world with a known truth, offline
on a CPU.

    python -m divalign.toyworld.demo [--out runs/demo] [--quick] [--fresh]

1. builds the toy world (:mod:`divalign.toyworld.world`; with the DPO/GRPO data and the evaluation and calibration
   prompts, :mod:`divalign.toyworld.preference_data`) and pretrains a tiny Llama on its plain corpus
   (:mod:`divalign.toyworld.pretrain`; cached);
2. runs `divalign compare` (:func:`divalign.compare.workflow.run_compare`) on ``recipes/compare/toy.yaml``: every
   variant × seed cell through `divalign train`, then the calibrated comparison (``OUT/compare/report/``). With
   another ``--out``, or ``--quick``, the spec and its recipes are derived from the shipped ones into ``OUT/spec/``
   (their paths under ``OUT``; ``--quick``: CE and TOFU × 2 seeds, few steps and samples), so a quick run never
   touches the full one;
3. adds what only the toy world can (:mod:`divalign.toyworld.truth_table`): every cell's final model scored exactly
   against the truth, seen and held-out, per variant mean ± std over seeds, beside the truth, the SFT data and the
   base model: ``OUT/results.md``, ``OUT/results.json`` (both point at the compare report) and
   ``OUT/validity_vs_coverage.png``.

Finished cells, samples and the base model are reused when the demo is run again; ``--fresh`` deletes ``--out``
first.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from divalign.compare import demo_run
from divalign.compare.demo_run import REPO_ROOT
from divalign.quiet import quiet_loading_bars
from divalign.strict_json import strict_json
from divalign.toyworld.plots import plot_validity_coverage
from divalign.toyworld.preference_data import write_preference_data
from divalign.toyworld.pretrain import PretrainConfig, pretrain
from divalign.toyworld.report import write_report
from divalign.toyworld.truth_table import base_rows, cell_rows, reference_rows, variant_summary
from divalign.toyworld.world import ToyWorld, WorldConfig

SPEC = Path("recipes/compare/toy.yaml")  # relative to REPO_ROOT, as its own paths are
DEFAULT_OUT = Path("runs/demo")
QUICK_HELP = "CE and TOFU x 2 seeds, fewer pretraining and SFT steps, few samples (a smoke run)"
QUICK_OUT = Path("runs/demo-quick")
# The matrices are tiny: a second thread buys little and thrashes when the CPU is shared
THREADS_ENV = {"OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Plan:
    """How much work the demo does: the base model's pretraining, and changes to the shipped spec's keys."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    variants: tuple[str, ...] | None = None  # None: the spec's (the reference is always kept)
    seeds: tuple[int, ...] | None = None  # None: the spec's
    overrides: dict[str, Any] = field(default_factory=dict)  # added to the spec's `overrides`
    diversity_every_steps: int | None = None  # the recipes' diversity callback
    evaluation: dict[str, Any] = field(default_factory=dict)  # replace keys of the spec's `evaluation`
    truth_k: int = 32  # the K of the truth table's expected coverage@K


FULL = Plan()
QUICK = Plan(
    PretrainConfig(steps=300),
    variants=("tofu",),  # with the reference: two variants x two seeds, the cells' seed spread in the truth table
    seeds=(0, 1),
    overrides={"max_steps": 40},
    diversity_every_steps=20,
    evaluation={"samples": 8, "max_bisection_steps": 3, "temperature_grid": [0.7, 1.0, 1.3], "n_bootstrap": 200},
)


def derive_spec(out: Path, plan: Plan) -> Path:
    """``OUT/spec/toy.yaml``: the shipped spec with every path under ``out`` and the plan's changes."""
    return demo_run.derive_spec(SPEC, out, plan)


def build(out: Path, plan: Plan, timings: dict[str, float]) -> ToyWorld:
    """The world's files (SFT data, prompt sets, DPO/GRPO data) and the pretrained base model under ``out``."""
    world = ToyWorld(WorldConfig())
    world.write(out / "world")
    write_preference_data(world, out / "world")  # also prompts_eval/prompts_calibration, the spec's prompt sets
    tick = time.time()
    pretrain(world, out / "base_model", plan.pretrain)
    timings["pretrain"] = time.time() - tick
    return world


def compare(spec: Path, timings: dict[str, float]) -> dict[str, Any]:
    """`divalign compare SPEC` (run from the repository root, where the shipped spec's paths start): every cell,
    then the report; returns the report's results.json, with where it lies."""
    from divalign.compare.spec_file import load_compare
    from divalign.compare.workflow import run_compare

    tick = time.time()
    statuses = run_compare(str(spec), log=lambda line: print(line, flush=True))
    missing = [s.cell.name for s in statuses if not s.finished]
    if missing:
        raise RuntimeError(f"divalign compare {spec}: cells not finished: {', '.join(missing)}")
    timings["compare (cells and report)"] = time.time() - tick
    report_dir = (REPO_ROOT / load_compare(spec).report_dir).resolve()
    report = json.loads((report_dir / "results.json").read_text())
    return {**report, "report_md": str(report_dir / "results.md"), "report_json": str(report_dir / "results.json")}


def truth(out: Path, world: ToyWorld, report: dict[str, Any], plan: Plan, timings: dict[str, float]) -> dict:
    """The truth table: the reference rows and every finished cell scored exactly, then per variant over seeds."""
    tick = time.time()
    references = {**reference_rows(world, plan.truth_k), **base_rows(out / "base_model", world, plan.truth_k)}
    cells = cell_rows(report["cells"], REPO_ROOT, out / "base_model", world, plan.truth_k)
    timings["truth metrics"] = time.time() - tick
    return {"references": references, "cells": cells, "variants": variant_summary(cells)}


def _figure(out: Path, table: dict[str, Any]) -> Path:
    points = {label: dict(scores) for label, scores in table["references"].items() if "heldout" in scores}
    for variant, summary in table["variants"].items():
        points[f"{variant} SFT"] = {s: {m: v["mean"] for m, v in summary[s].items()} for s in ("seen", "heldout")}
    return plot_validity_coverage(points, out / "validity_vs_coverage.png")


def run_demo(out: str | Path | None = None, quick: bool = False, fresh: bool = False, plan: Plan | None = None) -> Path:
    """World, base model, `divalign compare`, the truth table; returns ``OUT/results.md``. ``plan`` replaces the
    full or quick plan (a test's smaller one)."""
    began = time.time()
    out = demo_run.output_directory(out, quick, fresh, DEFAULT_OUT, QUICK_OUT)
    plan = plan or (QUICK if quick else FULL)
    quiet_loading_bars()  # a dozen tiny models load here: a line per stage, not a bar per model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    timings: dict[str, float] = {}
    try:
        with demo_run.offline_environment(out, THREADS_ENV), demo_run.working_directory(REPO_ROOT):
            world = build(out, plan, timings)
            shipped = plan == FULL and out == (REPO_ROOT / DEFAULT_OUT).resolve()
            spec = REPO_ROOT / SPEC if shipped else derive_spec(out, plan)
            report = compare(spec, timings)
            table = truth(out, world, report, plan, timings)
    finally:
        torch.set_num_threads(threads)
    figure = _figure(out, table)
    timings["total"] = time.time() - began
    payload = {
        "out": str(out),
        "world": asdict(world.config),
        "plan": asdict(plan),
        "truth_k": plan.truth_k,
        "compare": {
            "spec": str(spec),
            "report_md": report["report_md"],
            "report_json": report["report_json"],
            "calibration": report.get("calibration") and _pooled(report["calibration"]),
            "calibration_skipped": report.get("calibration_skipped"),
        },
        **table,
        "timings_s": timings,
        "figures": [str(figure)],
    }
    (out / "results.json").write_text(json.dumps(strict_json(payload), indent=1, allow_nan=False))
    results = write_report(out / "results.md", payload)
    print(f"[demo] done in {timings['total']:.0f}s\n[demo] table: {results}\n[demo] compare: {report['report_md']}")
    return results


def _pooled(calibration: dict[str, Any]) -> dict[str, Any]:
    """What results.md shows of the calibrated comparison: the reference, the axes and the pooled differences."""
    keys = ("reference", "reference_temperature", "diversity_metric", "quality", "pooled")
    return {key: calibration.get(key) for key in keys}


def main(argv: Sequence[str] | None = None) -> int:
    return demo_run.demo_main(argv, run_demo, __spec__.name, __doc__, (DEFAULT_OUT, QUICK_OUT), QUICK_HELP)


if __name__ == "__main__":
    sys.exit(main())
