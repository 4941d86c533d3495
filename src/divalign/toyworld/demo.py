"""``make demo``: SFT collapse and its recovery, measured against a known truth, offline on a CPU.

    python -m divalign.toyworld.demo [--out runs/demo] [--quick]

1. builds the toy world (:mod:`divalign.toyworld.world`) and pretrains a tiny Llama on its plain corpus
   (:mod:`divalign.toyworld.pretrain`; cached);
2. fine-tunes it three times with ``python -m divalign.train recipes/toy/{ce,tofu,gem}_sft.yaml``, identical but for
   the loss, W&B in offline mode and the diversity callback on;
3. scores the base model and the three SFT models against the truth on the SFT prompts and on held-out prompts
   (exact answer probabilities and samples), along training too (one checkpoint every ``save_steps``);
4. draws the exact quality–diversity frontier (validity vs coverage@K across sampling temperatures) of the base
   model and the three SFT models, and compares TOFU/GEM with CE at matched coverage (:mod:`divalign.toyworld.frontier`);
5. evaluates the CE → TOFU → GEM lineage with ``divalign eval`` (``lineage_eval/``: lexical metrics, semantic clusters,
   cross-model homogeneity, within-prompt spread; :mod:`divalign.toyworld.lineage`);
6. writes ``results.md``, ``results.json`` and figures to ``--out`` (among them ``quality_diversity.png``: each SFT
   run's validity against its EAD at every diversity evaluation, the recipes' ``quality: toy_validity``).

Finished stages are reused when the demo is run again with the same settings; ``--fresh`` redoes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from divalign.launch.checkpoints import checkpoint_step, checkpoints
from divalign.quiet import quiet_loading_bars
from divalign.toyworld import frontier as toy_frontier
from divalign.toyworld.evaluate import evaluate_model, load_model, mean_metrics, score_split
from divalign.toyworld.lineage import evaluate_sft_lineage
from divalign.toyworld.plots import plot_trajectories, plot_validity_coverage
from divalign.toyworld.preference_data import write_preference_data
from divalign.toyworld.pretrain import PretrainConfig, pretrain
from divalign.toyworld.report import write_report
from divalign.toyworld.truth_metrics import entropy, exact_metrics
from divalign.toyworld.world import ToyWorld, WorldConfig, sharpen

REPO_ROOT = Path(__file__).resolve().parents[3]
RECIPES: dict[str, str] = {"CE": "ce_sft.yaml", "TOFU": "tofu_sft.yaml", "GEM": "gem_sft.yaml"}
OFFLINE_ENV: dict[str, str] = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
PLAIN_SUFFIX = ", plain format"


@dataclass(frozen=True)
class DemoPlan:
    """How much work the demo does; ``None`` keeps the recipe's value."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    max_steps: int | None = None
    save_steps: int | None = None
    diversity_every_steps: int | None = None
    num_samples: int = 32  # samples per prompt, and the K of the exact expected coverage
    extra_seeds: tuple[int, ...] = (1, 2)  # further SFT seeds (same world and base model) for the seed spread
    lineage_samples: int = 16  # samples per prompt of the `divalign eval` lineage evaluation


FULL = DemoPlan()
QUICK = DemoPlan(
    PretrainConfig(steps=300),
    max_steps=40,
    save_steps=10,
    diversity_every_steps=20,
    num_samples=16,
    extra_seeds=(),
    lineage_samples=8,
)


# ----- stage 2: SFT through divalign.train -----
def _recipe_copy(recipe: Path, out: Path, plan: DemoPlan) -> Path:
    """The recipe with its nested diversity-prompts path pointed at ``out`` (flags cannot reach nested keys)."""
    config = yaml.safe_load(recipe.read_text())
    if config.get("diversity"):
        config["diversity"]["prompts"] = str(out / "world" / "prompts_probe.jsonl")
        if plan.diversity_every_steps is not None:
            config["diversity"]["every_steps"] = plan.diversity_every_steps
    copy = out / "recipes" / recipe.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    return copy


def _overrides(out: Path, run_dir: Path, plan: DemoPlan, seed: int | None) -> list[str]:
    flags = {
        "output_dir": run_dir,
        "model_name_or_path": out / "base_model",
        "dataset_name": out / "world" / "sft.jsonl",
        "max_steps": plan.max_steps,
        "save_steps": plan.save_steps,
    }
    if seed is not None:  # a seed-spread run: final model only, no trajectory
        flags.update(seed=seed, save_strategy="no", save_steps=None)
    return [item for key, value in flags.items() if value is not None for item in (f"--{key}", str(value))]


def _finished(run_dir: Path, argv: list[str]) -> bool:
    stamp = run_dir / "demo_command.json"
    return (run_dir / "model.safetensors").exists() and stamp.exists() and json.loads(stamp.read_text()) == argv


def run_sft(name: str, recipe: Path, out: Path, plan: DemoPlan, threads: int = 1, seed: int | None = None) -> Path:
    """Run one recipe in a subprocess (a fresh process per run, as a user would), unless already done.

    ``seed`` overrides the recipe's seed (for a pretrained model without dropout: the data order) and writes to
    ``out/seed<seed>/``.
    """
    run_dir = out / recipe.stem if seed is None else out / f"seed{seed}" / recipe.stem
    argv = [
        sys.executable,
        "-m",
        "divalign.train",
        str(_recipe_copy(recipe, out, plan)),
        *_overrides(out, run_dir, plan, seed),
    ]
    if _finished(run_dir, argv):
        print(f"[demo] {name}: reusing {run_dir}")
        return run_dir
    if run_dir.exists():  # an unfinished or differently configured run of this demo: start over
        shutil.rmtree(run_dir)
    print(f"[demo] {name} SFT{'' if seed is None else f' (seed {seed})'}: {' '.join(argv[1:])}", flush=True)
    env = {**os.environ, **OFFLINE_ENV, "WANDB_DIR": str(out), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(argv, check=True, env=env, cwd=REPO_ROOT)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "demo_command.json").write_text(json.dumps(argv))
    return run_dir


# ----- stage 3: evaluation -----
def trajectory(run_dir: Path, base_dir: Path, world: ToyWorld, num_samples: int) -> dict[int, dict]:
    """Exact truth metrics at step 0 (the base model in the chat format) and at every saved checkpoint."""
    points = {0: _exact_only(base_dir, base_dir, world, num_samples)}
    for path in checkpoints(run_dir):
        step = checkpoint_step(path)
        points[step] = _exact_only(path, base_dir, world, num_samples)
    return points


def _exact_only(path: Path, tokenizer_path: Path, world: ToyWorld, num_samples: int) -> dict[str, dict]:
    model, tokenizer = load_model(path, tokenizer_path)
    splits = (("seen", world.seen_prompts), ("heldout", world.heldout_prompts))
    return {
        split: score_split(model, tokenizer, world, prompts, "chat", num_samples, sample=False).exact
        for split, prompts in splits
    }


def seed_spread(out: Path, seed_runs: dict[str, dict[int, Path]], world: ToyWorld, plan: DemoPlan) -> dict:
    """Exact metrics of every SFT seed (chat format): ``{name: {seed: {split: metrics}}}``."""
    spread: dict[str, dict[int, dict]] = {}
    for name, by_seed in tqdm(seed_runs.items(), desc="score SFT seeds", unit="loss"):
        spread[name] = {
            seed: _exact_only(path, out / "base_model", world, plan.num_samples) for seed, path in by_seed.items()
        }
    return spread


def reference_rows(world: ToyWorld, k: int) -> dict[str, dict]:
    """The truth itself and the SFT data's sharpened truth, scored as if they were models (exact metrics)."""
    tail_rank = world.config.tail_start_rank

    def score(prompts, transform) -> dict[str, float]:
        rows = []
        for p in prompts:
            model = dict(zip(p.answers, transform(p.probs), strict=True))
            rows.append(exact_metrics(model, p.truth(), k=k, tail=p.answers[tail_rank:]))
        return mean_metrics(rows)

    alpha = world.config.sft_sharpening
    return {
        "truth": {s: {"exact": score(ps, list), "sampled": None} for s, ps in _splits(world)},
        f"SFT data (truth^{alpha:g})": {
            "seen": {"exact": score(world.seen_prompts, lambda q: sharpen(q, alpha)), "sampled": None}
        },
    }


def _splits(world: ToyWorld) -> tuple[tuple[str, list], ...]:
    return (("seen", world.seen_prompts), ("heldout", world.heldout_prompts))


def evaluate_all(out: Path, runs: dict[str, Path], world: ToyWorld, plan: DemoPlan) -> dict[str, dict]:
    """Exact + sampled metrics of the base model (both formats) and of every SFT model."""
    base = out / "base_model"
    jobs = [("base (plain format)", base, "plain"), ("base (chat format)", base, "chat")]
    jobs += [(f"{name} SFT", path, "chat") for name, path in runs.items()]
    # The SFT models asked in the pretraining format: how much of the base model's knowledge survived (forgetting)
    jobs += [(f"{name} SFT{PLAIN_SUFFIX}", path, "plain") for name, path in runs.items()]
    results = reference_rows(world, plan.num_samples)
    for label, path, fmt in tqdm(jobs, desc="score models against the truth", unit="model"):
        results[label] = evaluate_model(path, world, fmt, plan.num_samples, seed=0, tokenizer_path=base)
    return results


def frontier_of(
    out: Path, runs: dict[str, Path], seed_runs: dict[str, dict[int, Path]], world: ToyWorld, plan: DemoPlan
) -> dict:
    """The exact frontier of every SFT model (chat format) and the base model (its plain pretraining format), each
    compared with the first loss's (CE in the shipped demo); with several SFT seeds, the seed spread of that
    comparison."""
    base = out / "base_model"
    models = {f"{name} SFT": (path, "chat") for name, path in runs.items()}
    models["base (plain format)"] = (base, "plain")
    seed_models = {f"{name} SFT": by_seed for name, by_seed in seed_runs.items()}
    reference = next(iter(models))  # the first loss (CE in the shipped demo)
    return toy_frontier.toy_frontier(models, base, world, plan.num_samples, reference, seed_models=seed_models)


# ----- the whole demo -----
def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    fresh: bool = False,
    recipes_dir: str | Path | None = None,
    threads: int = 1,
    seeds: int | None = None,
) -> Path:
    """Build, pretrain, fine-tune three ways, evaluate, report; returns the path of ``results.md``."""
    began = time.time()
    quiet_loading_bars()  # dozens of tiny models load here: a line per stage, not a bar per model
    out = Path(out).resolve()
    if fresh and out.exists():
        shutil.rmtree(out)
    plan = QUICK if quick else FULL
    if seeds is not None:
        plan = replace(plan, extra_seeds=tuple(range(1, seeds)))
    recipes = Path(recipes_dir) if recipes_dir else REPO_ROOT / "recipes" / "toy"
    # The matrices are tiny: extra threads buy little and thrash when the CPU is shared, so one thread by default
    torch.set_num_threads(threads)
    timings: dict[str, float] = {}

    world = ToyWorld(WorldConfig())
    world.write(out / "world")
    write_preference_data(world, out / "world")  # DPO/GRPO data for recipes/toy/pipeline.yaml
    tick = time.time()
    pretrain(world, out / "base_model", plan.pretrain)
    timings["pretrain"] = time.time() - tick

    runs, seed_runs = {}, {}
    for name, file in RECIPES.items():
        tick = time.time()
        runs[name] = run_sft(name, recipes / file, out, plan, threads)
        timings[f"{name} SFT"] = time.time() - tick
        recipe_seed = int(yaml.safe_load((recipes / file).read_text()).get("seed", 42))
        seed_runs[name] = {recipe_seed: runs[name]}
        for seed in plan.extra_seeds:
            tick = time.time()
            seed_runs[name][seed] = run_sft(name, recipes / file, out, plan, threads, seed=seed)
            timings[f"{name} SFT seed {seed}"] = time.time() - tick

    tick = time.time()
    results = evaluate_all(out, runs, world, plan)
    trajectories = {
        name: trajectory(path, out / "base_model", world, plan.num_samples)
        for name, path in tqdm(runs.items(), desc="score checkpoints", unit="run")
    }
    spread = seed_spread(out, seed_runs, world, plan) if plan.extra_seeds else {}
    timings["evaluation"] = time.time() - tick
    tick = time.time()
    frontier = frontier_of(out, runs, seed_runs if plan.extra_seeds else {}, world, plan)
    timings["frontier"] = time.time() - tick
    tick = time.time()
    print(f"[demo] divalign eval of the SFT lineage into {out / 'lineage_eval'}", flush=True)
    lineage = evaluate_sft_lineage(out, runs, plan.lineage_samples)
    timings["lineage eval"] = time.time() - tick
    timings["total"] = time.time() - began

    figures = [*_figures(out, runs, results, trajectories, world), toy_frontier.plot(frontier, out / "frontier.png")]
    payload = {
        "world": asdict(world.config),
        "plan": asdict(plan),
        "results": results,
        "trajectories": trajectories,
        "seed_spread": spread,
        "frontier": frontier,
        "lineage": lineage,
        "timings_s": timings,
        "figures": [str(f) for f in figures],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    report = write_report(out / "results.md", payload, truth_entropy=_truth_entropy(world))
    print(f"[demo] done in {timings['total']:.0f}s\n[demo] table: {report}")
    for figure in figures:
        print(f"[demo] figure: {figure}")
    return report


def _truth_entropy(world: ToyWorld) -> float:
    return entropy(world.prompts[0].probs)  # every prompt shares the Zipf profile, only the answer order differs


def _figures(out: Path, runs: dict[str, Path], results: dict, trajectories: dict, world: ToyWorld) -> list[Path]:
    from divalign.plotting import plot_quality_diversity, plot_runs

    figures = [
        plot_trajectories(trajectories, _truth_entropy(world), out / "truth_metrics_vs_step.png"),
        plot_validity_coverage(
            {
                label: {s: r[s]["exact"] for s in ("seen", "heldout")}
                for label, r in results.items()
                if "heldout" in r and not label.endswith(PLAIN_SUFFIX)
            },
            out / "validity_vs_coverage.png",
        ),
    ]
    try:
        figures.append(plot_runs(list(runs.values()), out / "training_curves.png"))
        # validity (the recipes' diversity quality) against EAD at every callback evaluation
        figures.append(plot_quality_diversity(list(runs.values()), out / "quality_diversity.png", "ead"))
    except (FileNotFoundError, ValueError) as error:  # no trainer_state.json (e.g. save_strategy: no)
        print(f"[demo] no training-curve figure: {error}")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divalign.toyworld.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="fewer pretraining and SFT steps (CI smoke run)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first instead of reusing finished stages")
    parser.add_argument("--recipes-dir", default=None, help="directory of the toy recipes (default: recipes/toy)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default: 1)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="SFT seeds per loss for the seed spread (default: 3, --quick: 1)"
    )
    args = parser.parse_args(argv)
    run_demo(args.out, args.quick, args.fresh, args.recipes_dir, args.threads, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
