"""``results.md`` of the toy demo: the calibrated comparison's pooled result (read from `divalign compare`'s report)
and the truth table (every variant's exact metrics against the known answer distribution, mean ± std over seeds)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..markdown_table import interval, markdown_table, mean_std, number

# (key in the exact metrics, column header)
EXACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("validity", "validity"),
    ("coverage", "coverage@K"),
    ("mass_coverage", "mass coverage@K"),
    ("entropy", "entropy"),
    ("kl", "KL(truth‖model)"),
    ("tail_mass", "tail share"),
)
SPLIT_TITLES: dict[str, str] = {"seen": "SFT categories (seen)", "heldout": "held-out categories (never in SFT)"}


def mean_std_cell(value: Mapping[str, float | None]) -> str:
    """``mean ± std`` of a variant's seeds (the mean alone for one seed)."""
    if value["std"] is None:
        return number(value["mean"])
    return mean_std(value["mean"], value["std"])


def truth_table(payload: Mapping[str, Any], split: str) -> list[str]:
    """The reference rows (truth, SFT data, base model), then every variant's mean ± std over its seeds."""
    rows = [
        [label, "", *(number(scores[split][key]) for key, _ in EXACT_COLUMNS)]
        for label, scores in payload["references"].items()
        if split in scores
    ]
    for variant, summary in payload["variants"].items():
        seeds = ", ".join(str(s) for s in summary["seeds"])
        rows.append([f"{variant} SFT", seeds, *(mean_std_cell(summary[split][key]) for key, _ in EXACT_COLUMNS)])
    return markdown_table(["model", "seeds", *(title for _, title in EXACT_COLUMNS)], rows)


def _pooled_cells(pooled: Mapping[str, Any]) -> list[str]:
    """A variant's pooled difference and unmatched seeds at the reference's diversity, then at its quality."""
    cells = []
    for axis in ("diversity", "quality"):
        entry = pooled[f"at_{axis}"]
        cells += [interval(entry.get("pooled")), ", ".join(map(str, entry.get("unmatched_seeds", []))) or "—"]
    return cells


def calibrated_lines(payload: Mapping[str, Any]) -> list[str]:
    """The pooled calibrated differences of `divalign compare`'s report, one row per variant (its per-seed rows, the
    matched temperatures and the figure are in that report)."""
    compare = payload["compare"]
    link = os.path.relpath(compare["report_md"], Path(payload["out"]))
    calibration = compare.get("calibration")
    lines = [f"## Calibrated comparison (`divalign compare`; [{link}]({link}))", ""]
    if calibration is None:
        return [*lines, f"No calibrated comparison: {compare.get('calibration_skipped', 'no report')}.", ""]
    reference = calibration["reference"]
    lines += [
        f"Each variant against {reference} of the same seed, at the sampling temperature where its "
        f"{calibration.get('diversity_metric', 'diversity')} (diversity), then its {calibration.get('quality', 'quality')}"
        f" (quality), matches {reference}'s at T={calibration['reference_temperature']:g} on the calibration prompts; "
        "read on the evaluation prompts. Pooled over seeds (per prompt, the mean over seeds), 95 % CI over prompts; "
        "seeds where no temperature matched are left out and named.",
        "",
    ]
    header = ["variant", f"quality − {reference}'s at {reference}'s diversity", "unmatched seeds"]
    header += [f"diversity − {reference}'s at {reference}'s quality", "unmatched seeds"]
    rows = [[variant, *_pooled_cells(pooled)] for variant, pooled in calibration["pooled"].items()]
    return [*lines, *markdown_table(header, rows), ""]


def write_report(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write the markdown report from the demo's ``results.json`` payload."""
    world, k = payload["world"], payload["truth_k"]
    lines = [
        "# Toy world: CE, TOFU, GEM and DFT SFT, calibrated and against the truth",
        "",
        f"World: {len(world['categories'])} categories × 3 phrasings, 24 answers each with Zipf(s="
        f"{world['zipf_exponent']}) frequencies; {world['num_heldout_categories']} categories held out of SFT. SFT "
        f"data: {world['sft_examples_per_prompt']} chat examples per seen prompt drawn from "
        f"truth^{world['sft_sharpening']:g} (tail = answers of rank > {world['tail_start_rank']}). Spec: "
        f"`{payload['compare']['spec']}`.",
        "",
        *calibrated_lines(payload),
        "## Against the truth (exact, chat format, temperature 1)",
        "",
        "Every cell's final model scored exactly: validity = total probability of the valid answers (quality); "
        f"coverage@K = expected share of the 24 valid answers seen in K = {k} samples (mass coverage@K weights them "
        "by the truth); entropy (nats) of the model's distribution over the valid answers; KL(truth‖model) with the "
        "invalid mass counted as a loss; tail share = share of the valid mass on the truth's tail answers. Means over "
        "prompts; per variant the mean ± sample std over its seeds. Entropy and tail share describe only the valid "
        "mass: where validity is low, read coverage@K and KL. The base model in its pretraining format shows what it "
        "knows; in the chat format, where SFT starts.",
        "",
    ]
    for split, title in SPLIT_TITLES.items():
        lines += [f"### {title}", "", *truth_table(payload, split), ""]
    lines += run_lines(payload)
    out = Path(path)
    out.write_text("\n".join(lines))
    return out


def run_lines(payload: Mapping[str, Any]) -> list[str]:
    """A demo report's closing section: how long each stage of this invocation took, and the figures it wrote."""
    timings = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in payload["timings_s"].items())
    return [
        "## Run",
        "",
        f"Timings of this invocation (work reused from an earlier run counts ~0 s; `--fresh` redoes all): {timings}.",
        "",
        "Figures: " + ", ".join(f"`{Path(f).name}`" for f in payload["figures"]),
        "",
    ]
