"""Figures of the toy demo: truth metrics along training, and the validity-vs-coverage trade-off."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the demo runs headless
import matplotlib.pyplot as plt

# One trajectory: step -> split -> metric -> value
Trajectory = Mapping[int, Mapping[str, Mapping[str, float]]]

TRAJECTORY_METRICS: tuple[tuple[str, str], ...] = (
    ("validity", "validity (valid mass)"),
    ("coverage", "expected coverage@K (answers)"),
    ("entropy", "entropy of valid answers (nats)"),
    ("kl", "KL(truth ‖ model) (nats)"),
)
SPLIT_STYLES: dict[str, str] = {"seen": "-", "heldout": "--"}


def plot_trajectories(trajectories: Mapping[str, Trajectory], truth_entropy: float, out: str | Path) -> Path:
    """Exact truth metrics vs step for each run: seen prompts solid, held-out prompts dashed."""
    fig, axes = plt.subplots(1, len(TRAJECTORY_METRICS), figsize=(5 * len(TRAJECTORY_METRICS), 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (metric, title) in zip(axes, TRAJECTORY_METRICS, strict=True):
        for color, (run, trajectory) in zip(colors, trajectories.items(), strict=False):
            steps = sorted(trajectory)
            for split, style in SPLIT_STYLES.items():
                values = [trajectory[s][split][metric] for s in steps]
                ax.plot(steps, values, style, color=color, marker="o", ms=3, label=f"{run} ({split})")
        if metric == "entropy":
            ax.axhline(truth_entropy, color="black", lw=0.8, ls=":", label="truth")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


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
