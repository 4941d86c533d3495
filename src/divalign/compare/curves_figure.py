"""One figure of a stage's training curves across a comparison's cells: per logged key a panel, per variant a colour,
per seed a line (e.g. the GRPO stage after every SFT start: its reward, its sampled diversity and the diversity it
retained of its start). Read from each stage directory's `trainer_state.json` (:mod:`divalign.run_history`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..run_history import Curves, load_curves

# What an RL stage's curves are read for, first match in each group: the reward, the probe-sampled diversity, the
# share of its start's diversity it kept (`diversity/retained/*`), and the rollout groups' diversity
RL_KEYS: tuple[tuple[str, ...], ...] = (
    ("reward",),
    ("diversity/ead", "diversity/distinct_1"),
    ("diversity/retained/ead", "diversity/retained/distinct_1"),
    ("diversity/rollout/distinct_1", "diversity/rollout/ead"),
)


def logged_keys(curves: Sequence[Curves], groups: Sequence[Sequence[str]] = RL_KEYS) -> list[str]:
    """Per group, its first key that some run logged; groups no run logged are left out."""
    present = {key for c in curves for key in c}
    return [next(k for k in group if k in present) for group in groups if any(k in present for k in group)]


def _curves(run_dir: Path) -> Curves:
    """A run's curves; none when it has no trainer_state.json (a stage trained without the Trainer's log)."""
    try:
        return load_curves(run_dir)
    except FileNotFoundError:
        return {}


def plot_stage_curves(
    runs: Mapping[str, Mapping[int, Path]],
    out: Path,
    groups: Sequence[Sequence[str]] = RL_KEYS,
    title: str = "",
    needs: str | None = "reward",
) -> Path | None:
    """Draw `runs[variant][seed]` (stage directories) into `out`; None when no run logged `needs` (by default the
    reward: an RL stage) or any key of `groups`."""
    curves = {v: {s: _curves(d) for s, d in sorted(by_seed.items())} for v, by_seed in runs.items()}
    logged = [c for by_seed in curves.values() for c in by_seed.values()]
    keys = logged_keys(logged, groups)
    if not keys or (needs is not None and not any(needs in c for c in logged)):
        return None
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    fig = Figure(figsize=(4.2 * len(keys), 3.6))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        for index, (variant, by_seed) in enumerate(curves.items()):
            for n, c in enumerate(by_seed.values()):
                points = c.get(key, [])
                if points:
                    steps, values = zip(*points, strict=True)
                    label = variant if n == 0 else None
                    ax.plot(steps, values, color=f"C{index}", linewidth=1.2, alpha=0.8, label=label)
        ax.set_title(key, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", title="start (one line a seed)")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
