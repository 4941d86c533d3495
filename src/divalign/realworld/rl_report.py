"""What the real world adds to `divalign compare`'s SFT-then-RL report: the seen and the held-out categories apart
(``OUT/results_rl.md`` and ``OUT/results_rl.json``).

Read from compare's ``report_rl/results.json`` alone (each stage's per-prompt outcomes and calibrated values), so
every number here can be recomputed from it: what each later stage changed of each start on either split, and the
calibrated differences from the reference start on either split at every stage.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..compare.outcomes import per_prompt_changes
from ..markdown_table import interval, markdown_table, number
from ..strict_json import nan_array, strict_json
from .report import SPLITS, evaluation_keys, split_differences, split_indices, split_section
from .world import RealWorld

CHANGED = ("pass_at_1", "entropy")  # pass@k sits at 1 and coverage needs valid-answer lists these prompts lack


def _split_mean(per_seed: Mapping[str, Sequence[float | None]]) -> float | None:
    """Per prompt the mean over seeds, then the mean over the prompts (None if none is defined)."""
    values = np.nanmean(np.array([nan_array(v) for v in per_seed.values()]), axis=0)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def _subset(per_prompt: Mapping[str, Any], index: Sequence[int]) -> dict[str, Any]:
    """`{variant: {seed: {outcome: [per prompt]}}}` on the prompts at `index` only."""
    return {
        variant: {
            s: {name: [values[i] for i in index] for name, values in by_name.items()} for s, by_name in seeds.items()
        }
        for variant, seeds in per_prompt.items()
    }


def stage_split_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], index: Sequence[int], n_bootstrap: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per start and outcome on the prompts at `index`: the mean before and after, and (after − before) paired over
    those prompts at each seed both stages share, and pooled over seeds."""
    first, second = _subset(before["per_prompt"], index), _subset(after["per_prompt"], index)
    changes = per_prompt_changes(first, second, CHANGED, n_bootstrap, seed)
    for variant, by_name in changes.items():
        for name, change in by_name.items():
            seeds = change["per_seed"]  # the seeds both stages share
            means = {
                "before": _split_mean({s: first[variant][s][name] for s in seeds}),
                "after": _split_mean({s: second[variant][s][name] for s in seeds}),
            }
            by_name[name] = {**means, **change}
    return changes


def rl_splits(
    report: Mapping[str, Any], evaluation: Mapping[str, Any], keys: Sequence[str], world: RealWorld
) -> dict[str, Any]:
    """Every consecutive pair of stages' changes (bootstrapped as `evaluation` says), and every stage's calibrated
    differences, on either split."""
    stages = report["stages"]
    names = list(stages)
    indices = split_indices(keys, world)
    changes = {
        f"{a} -> {b}": {
            split: stage_split_changes(
                stages[a]["outcomes"], stages[b]["outcomes"], index, evaluation["n_bootstrap"], evaluation["seed"]
            )
            for split, index in indices.items()
        }
        for a, b in itertools.pairwise(names)
    }
    calibrated = {
        name: split_differences(s["calibration"], keys, world) for name, s in stages.items() if s.get("calibration")
    }
    return {"prompts_per_split": {k: len(v) for k, v in indices.items()}, "changes": changes, "calibrated": calibrated}


def _change_rows(changes: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for split, by_variant in changes.items():
        for variant, by_outcome in by_variant.items():
            p1, ent = by_outcome["pass_at_1"], by_outcome["entropy"]
            moved = f"{number(p1['before'])} → {number(p1['after'])}"
            rows.append([split, variant, moved, interval(p1["pooled"]), interval(ent["pooled"])])
    return rows


def _markdown(splits: Mapping[str, Any], reference: str, metric: str, compare_md: str) -> list[str]:
    counts = ", ".join(f"{n} prompts of the {SPLITS[s]}" for s, n in splits["prompts_per_split"].items())
    lines = [
        "# Real pretrained model: SFT, then RL, on the seen and the held-out categories",
        "",
        f"Compare's own report (every stage's outcomes and calibrated comparison on all prompts): [{compare_md}]"
        f"({compare_md}). Below, the same per-prompt values averaged over each split's evaluation prompts ({counts}).",
        "",
    ]
    header = ["categories", "start", "pass@1 before → after", "pass@1 change [95 % CI]", "entropy change (nats)"]
    for pair, changes in splits["changes"].items():
        before, after = pair.split(" -> ")
        heading = f"## What `{after}` changed of each start after `{before}`"
        lines += [f"{heading} (after − before at T = 1, paired over prompts, pooled over seeds)", ""]
        lines += [*markdown_table(header, _change_rows(changes)), ""]
    for stage, calibrated in splits["calibrated"].items():
        heading = f"Calibrated differences from {reference}'s start after `{stage}`, on each split"
        lines += split_section(heading, calibrated, reference, metric)
    return lines


def write_rl_report(out: Path, report_json: Path, world: RealWorld) -> Path:
    """`OUT/results_rl.md` and `OUT/results_rl.json` from compare's SFT-then-RL report at `report_json`."""
    report = json.loads(report_json.read_text(encoding="utf-8"))
    if not report.get("stages"):
        raise RuntimeError(f"{report_json}: no evaluated stages")
    name, first = next(iter(report["stages"].items()))
    calibration = first.get("calibration")
    if not calibration:
        raise RuntimeError(f"{report_json}: no calibrated comparison at stage {name}")
    splits = rl_splits(report, calibration["evaluation"], evaluation_keys(calibration), world)
    payload = {"compare_report": str(report_json), "world": world.describe(), **splits}
    text = json.dumps(strict_json(payload), indent=1, ensure_ascii=False, allow_nan=False)
    (out / "results_rl.json").write_text(text, encoding="utf-8")
    compare_md = os.path.relpath(report_json.with_suffix(".md"), out)
    lines = _markdown(splits, report["reference"], calibration["diversity_metric"], compare_md)
    path = out / "results_rl.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
