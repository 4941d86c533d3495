"""``make demo-real-rl``: SFT, then RL on the real model, after ``make demo-real``.

    python -m divalign.realworld.rl_demo [--out runs/demo-real] [--quick]

1. writes the GRPO prompts into ``OUT/world/grpo.jsonl`` (:mod:`divalign.realworld.grpo_data`: every phrasing of the
   seen categories; the held-out ones stay out of RL);
2. runs `divalign compare` on ``recipes/compare/real_rl.yaml``: the SFT stages of ``make demo-real``'s cells are
   reused (same recipes, seeds and launch), the same verifier-rewarded GRPO stage runs after each, and the report
   compares every start after SFT and after GRPO (``OUT/compare/report_rl/``), reading the SFT models' samples from
   the demo's cache;
3. adds the seen and the held-out categories apart (:mod:`divalign.realworld.rl_report`: ``OUT/results_rl.md``).

With another ``--out``, or ``--quick`` (after ``python -m divalign.realworld.demo --quick``: its CE and GEM cells, 2
GRPO steps each), the spec is derived into ``OUT/spec/`` as the demo's is.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from ..compare import demo_run
from ..compare.demo_run import REPO_ROOT
from ..compare.spec_file import load_compare
from ..compare.workflow import run_compare
from .demo import DEFAULT_OUT, FULL, QUICK, QUICK_OUT
from .grpo_data import WORLD_FILE, write_grpo_data
from .rl_report import write_rl_report
from .world import RealWorld

RL_SPEC = Path("recipes/compare/real_rl.yaml")  # relative to REPO_ROOT, as its own paths are
# the quick demo's SFT cells (same plan: reused, not retrained), CE and GEM only; its `max_steps: 2` holds for GRPO
# (the frontier grid at T=1 only: the GRPO models are sampled at the temperatures the calibration needs, no others)
QUICK_RL = dataclasses.replace(QUICK, variants=("gem",), evaluation={**QUICK.evaluation, "temperature_grid": [1.0]})


def run_rl_demo(out: str | Path | None = None, quick: bool = False) -> Path:
    """GRPO prompts, then `divalign compare` on the RL spec; returns the report's results.md."""
    out = Path(out if out is not None else QUICK_OUT if quick else DEFAULT_OUT).resolve()
    if not (out / "world" / WORLD_FILE).is_file():
        demo = "python -m divalign.realworld.demo" + (" --quick" if quick else "")
        raise FileNotFoundError(f"{out}: no world and SFT cells there; run `{demo} --out {out}` first")
    with demo_run.offline_environment(out):
        write_grpo_data(out / "world")
        shipped = not quick and out == (REPO_ROOT / DEFAULT_OUT).resolve()
        spec = REPO_ROOT / RL_SPEC if shipped else demo_run.derive_spec(RL_SPEC, out, QUICK_RL if quick else FULL)
        with demo_run.working_directory(REPO_ROOT):
            statuses = run_compare(str(spec), log=lambda line: print(line, flush=True))
            results = (load_compare(spec).report_dir / "results.md").resolve()
            missing = [s.cell.name for s in statuses if not s.finished]
            if missing:
                raise RuntimeError(f"divalign compare {spec}: cells not finished: {', '.join(missing)}")
            # the report names the shipped spec's prompt files relative to the repository root
            splits = write_rl_report(out, results.with_suffix(".json"), RealWorld((QUICK if quick else FULL).world))
    print(f"[demo-real-rl] report: {results}\n[demo-real-rl] seen and held-out categories: {splits}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divalign.realworld.rl_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"the demo's output (default: {DEFAULT_OUT}; --quick: {QUICK_OUT})")
    parser.add_argument("--quick", action="store_true", help="after the quick demo: CE and GEM, 2 GRPO steps")
    args = parser.parse_args(argv)
    try:
        run_rl_demo(args.out, args.quick)
    except FileNotFoundError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
