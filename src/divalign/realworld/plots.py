"""Figures of the real-model demo: the verifier's frontier per split, and the training curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import frontier

SPLIT_TITLES: dict[str, str] = {"seen": "seen categories (SFT prompts)", "heldout": "held-out categories"}


def write_figures(out: Path, analysis: Mapping[str, Mapping[str, Any]], runs: Mapping[str, Path]) -> list[Path]:
    """`frontier_<split>.png` per split (each loss's seed-mean curve and the base model) and `training_curves.png`
    (loss and callback diversity of the first seed's runs)."""
    figures = [
        frontier.plot(
            data["curves"],
            out / f"frontier_{split}.png",
            f"SmolLM2-135M-Instruct, {SPLIT_TITLES[split]}\n(labels: sampling temperature; thick: efficient frontier)",
        )
        for split, data in analysis.items()
    ]
    from divalign.plotting import plot_runs

    first_seed = [path for name, path in runs.items() if path.parent == out]
    figures.append(plot_runs(first_seed, out / "training_curves.png"))
    return figures
