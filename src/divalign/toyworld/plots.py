"""The toy demo's figure: validity against expected coverage of the valid answers, per model and split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the demo runs headless
import matplotlib.pyplot as plt


def plot_validity_coverage(
    points: Mapping[str, Mapping[str, Mapping[str, float]]],
    out: str | Path,
    splits: Sequence[str] = ("seen", "heldout"),
) -> Path:
    """Scatter of validity (quality) vs expected coverage (diversity), one marker per model and split."""
    fig, ax = plt.subplots(figsize=(6, 5))
    markers = {"seen": "o", "heldout": "s"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (model, by_split) in zip(colors, points.items(), strict=False):
        for split in splits:
            m = by_split[split]
            ax.scatter(
                m["coverage"], m["validity"], color=color, marker=markers[split], s=50, label=f"{model} ({split})"
            )
    ax.set_xlabel("expected coverage@K of the valid answers (diversity)")
    ax.set_ylabel("validity = probability of a valid answer (quality)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)
