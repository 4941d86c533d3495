"""The truth table of a toy-world `divalign compare` run: what only a world with a known answer distribution can add.

Every finished cell's final model is scored exactly against the truth (:mod:`divalign.toyworld.truth_metrics`:
validity, expected coverage@K, entropy over the valid answers, KL, tail share; the chat format, seen and held-out
categories apart), then summarised per variant as the mean ± sample std over its seeds. The truth itself, the SFT
data's sharpened truth and the base model (in its pretraining format and in the chat format) are scored alongside.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from divalign.toyworld.evaluate import PromptFormat, evaluate_model, mean_metrics
from divalign.toyworld.truth_metrics import exact_metrics
from divalign.toyworld.world import Prompt, ToyWorld, sharpen

SPLITS: tuple[str, ...] = ("seen", "heldout")
Scores = dict[str, dict[str, float]]  # split -> metric -> value


def _splits(world: ToyWorld) -> dict[str, list[Prompt]]:
    return {"seen": world.seen_prompts, "heldout": world.heldout_prompts}


def _score_distribution(world: ToyWorld, prompts: Sequence[Prompt], k: int, transform: Callable) -> dict[str, float]:
    tail_rank = world.config.tail_start_rank
    rows = [
        exact_metrics(dict(zip(p.answers, transform(p.probs), strict=True)), p.truth(), k=k, tail=p.answers[tail_rank:])
        for p in prompts
    ]
    return mean_metrics(rows)


def reference_rows(world: ToyWorld, k: int) -> dict[str, Scores]:
    """The truth itself (both splits) and the SFT data's sharpened truth (seen only), scored as if they were models."""
    alpha = world.config.sft_sharpening
    return {
        "truth": {split: _score_distribution(world, ps, k, list) for split, ps in _splits(world).items()},
        f"SFT data (truth^{alpha:g})": {
            "seen": _score_distribution(world, world.seen_prompts, k, lambda q: sharpen(q, alpha))
        },
    }


def score_model(path: str | Path, world: ToyWorld, k: int, fmt: PromptFormat, tokenizer_path: str | Path) -> Scores:
    """One saved model's exact metrics on the seen and the held-out prompts (no sampling)."""
    scores = evaluate_model(path, world, fmt, k, sample=False, tokenizer_path=tokenizer_path)
    return {split: scores[split]["exact"] for split in SPLITS}


def base_rows(base_dir: Path, world: ToyWorld, k: int) -> dict[str, Scores]:
    """The base model asked in its pretraining format (what it knows) and in the chat format (before any SFT)."""
    return {f"base ({fmt} format)": score_model(base_dir, world, k, fmt, base_dir) for fmt in ("plain", "chat")}


def cell_rows(cells: Sequence[Mapping[str, Any]], root: Path, base_dir: Path, world: ToyWorld, k: int) -> dict:
    """Exact metrics of every finished cell of a compare report's ``cells`` (``model`` paths relative to ``root``):
    ``{cell: {"variant", "seed", "model", "exact": {split: metrics}}}``."""
    finished = [cell for cell in cells if cell["state"] == "finished"]
    rows = {}
    for cell in tqdm(finished, desc="score the cells against the truth", unit="model"):
        model = root / cell["model"]
        rows[cell["cell"]] = {
            "variant": cell["variant"],
            "seed": cell["seed"],
            "model": str(model),
            "exact": score_model(model, world, k, "chat", base_dir),
        }
    return rows


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def variant_summary(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant (in the cells' order): its seeds and, per split and metric, the mean and sample std over them."""
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows.values():
        by_variant.setdefault(row["variant"], []).append(row)
    summary = {}
    for variant, cells in by_variant.items():
        summary[variant] = {"seeds": [cell["seed"] for cell in cells]}
        for split in SPLITS:
            metrics = cells[0]["exact"][split]
            summary[variant][split] = {m: _mean_std([cell["exact"][split][m] for cell in cells]) for m in metrics}
    return summary
