"""The toy world's exact quality–diversity frontier: does TOFU/GEM beat cross-entropy with its temperature raised?

Diversity can be bought with sampling temperature. In the toy world every valid answer's probability is exact at any
temperature T (``P_T(answer + EOS | prompt)``, the product of ``softmax(z / T)`` over its tokens), so each model's
frontier — validity (quality) against the expected coverage@K of the valid answers (diversity) — needs no sampling.
The models are compared with `divalign.evaluation.frontier`, the same code as ``divalign eval --temperatures``: each
frontier (its Pareto-efficient temperatures) interpolated linearly in coverage, the validity difference read inside
the coverage range both frontiers reach, 95 % CIs from a bootstrap over prompts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from divalign.evaluation.frontier import FrontierCurve, matched_difference, plot_frontiers
from divalign.toyworld.evaluate import PromptFormat, exact_per_prompt, load_model
from divalign.toyworld.world import ToyWorld

TEMPERATURES: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0)
QUALITY, DIVERSITY = "validity", "coverage"
QUALITY_LABEL, DIVERSITY_LABEL = "validity", "coverage@K"


def model_curve(
    path: Path,
    tokenizer_path: Path,
    world: ToyWorld,
    fmt: PromptFormat,
    num_samples: int,
    temperatures: Sequence[float] = TEMPERATURES,
) -> FrontierCurve:
    """One model's exact per-prompt validity and coverage@K on the SFT prompts at each temperature."""
    model, tokenizer = load_model(path, tokenizer_path)
    by_t = exact_per_prompt(model, tokenizer, world, world.seen_prompts, fmt, num_samples, temperatures)
    return FrontierCurve(
        temperatures=list(temperatures),
        quality=np.array([[getattr(m, QUALITY) for m in by_t[t]] for t in temperatures]),
        diversity=np.array([[getattr(m, DIVERSITY) for m in by_t[t]] for t in temperatures]),
    )


def compare(
    curves: Mapping[str, FrontierCurve], reference: str, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Validity difference of every other model vs `reference` at matched coverage@K (with bootstrap CIs)."""
    return {
        name: dataclasses.asdict(matched_difference(curves[reference], curve, n_bootstrap=n_bootstrap, seed=seed))
        for name, curve in curves.items()
        if name != reference
    }


def toy_frontier(
    models: Mapping[str, tuple[Path, PromptFormat]],
    base_dir: Path,
    world: ToyWorld,
    num_samples: int,
    reference: str,
    seed_models: Mapping[str, Mapping[int, Path]] | None = None,
) -> dict[str, Any]:
    """The frontier of every model and the comparisons vs `reference`; with `seed_models` (per loss, per SFT seed),
    also each seed's mean validity difference vs the reference loss at the same seed."""
    curves = {
        name: model_curve(path, base_dir, world, fmt, num_samples)
        for name, (path, fmt) in tqdm(models.items(), desc="exact frontiers", unit="model")
    }
    result: dict[str, Any] = {
        "temperatures": list(TEMPERATURES),
        "quality": QUALITY_LABEL,
        "diversity": DIVERSITY_LABEL,
        "reference": reference,
        "points": {
            name: {
                f"{t:g}": {"quality": q, "diversity": d} for t, d, q in zip(c.temperatures, *c.points(), strict=True)
            }
            for name, c in curves.items()
        },
        "comparisons": compare(curves, reference),
    }
    if seed_models:
        result["seed_spread"] = _seed_spread(seed_models, base_dir, world, num_samples, reference)
    return result


def _seed_spread(
    seed_models: Mapping[str, Mapping[int, Path]], base_dir: Path, world: ToyWorld, num_samples: int, reference: str
) -> dict[str, dict[str, float]]:
    """Per loss: the mean (over the shared coverage range) validity difference vs the reference loss, per seed."""
    runs = [(name, seed, path) for name, by_seed in seed_models.items() for seed, path in by_seed.items()]
    curves: dict[str, dict[int, FrontierCurve]] = {name: {} for name in seed_models}
    for name, seed, path in tqdm(runs, desc="exact frontiers of the SFT seeds", unit="model"):
        curves[name][seed] = model_curve(path, base_dir, world, "chat", num_samples)
    spread: dict[str, dict[str, float]] = {}
    for name, by_seed in curves.items():
        if name == reference:
            continue
        spread[name] = {
            str(seed): matched_difference(curves[reference][seed], curve, n_bootstrap=0).mean
            for seed, curve in by_seed.items()
            if seed in curves[reference]
        }
    return spread


def plot(frontier: Mapping[str, Any], path: Path) -> Path:
    """frontier.png: one exact frontier per model, labelled by temperature."""
    curves = {
        name: (
            [float(t) for t in points],
            [p["diversity"] for p in points.values()],
            [p["quality"] for p in points.values()],
        )
        for name, points in frontier["points"].items()
    }
    title = "Toy world, SFT prompts: exact frontier across sampling temperatures"
    return plot_frontiers(curves, path, f"expected {DIVERSITY_LABEL} of the valid answers", QUALITY_LABEL, title)
