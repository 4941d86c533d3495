"""``results.md`` of the toy demo: model × truth metrics on seen and held-out prompts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# (key in the exact metrics, column header)
EXACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("validity", "validity"),
    ("coverage", "coverage@K"),
    ("mass_coverage", "mass coverage@K"),
    ("entropy", "entropy"),
    ("truth_entropy", "truth entropy"),
    ("kl", "KL(truth‖model)"),
    ("tail_mass", "tail share"),
)
SAMPLED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("validity", "validity"),
    ("coverage", "coverage"),
    ("distinct", "distinct valid"),
    ("entropy", "entropy (plug-in)"),
    ("kl", "KL (smoothed)"),
)
SPLIT_TITLES: dict[str, str] = {"seen": "SFT prompts (seen)", "heldout": "held-out prompts (categories never in SFT)"}


def _row(label: str, values: Mapping[str, float] | None, columns: tuple[tuple[str, str], ...]) -> str:
    cells = ["—" if values is None or key not in values else f"{values[key]:.3f}" for key, _ in columns]
    return f"| {label} | " + " | ".join(cells) + " |"


def _table(
    results: Mapping[str, Any], split: str, kind: str, columns: tuple[tuple[str, str], ...], truth_entropy: float
) -> list[str]:
    lines = ["| model | " + " | ".join(title for _, title in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, by_split in results.items():
        if split not in by_split or by_split[split][kind] is None:
            continue
        values = {**by_split[split][kind], "truth_entropy": truth_entropy}
        lines.append(_row(label, values, columns))
    return lines


def write_report(path: str | Path, payload: Mapping[str, Any], truth_entropy: float) -> Path:
    """Write the markdown report from the demo's ``results.json`` payload."""
    world, plan, results = payload["world"], payload["plan"], payload["results"]
    k = plan["num_samples"]
    lines = [
        "# Toy world: SFT diversity collapse vs the truth",
        "",
        f"World: {len(world['categories'])} categories × 3 phrasings, 24 answers each with Zipf(s={world['zipf_exponent']}) "
        f"frequencies; {world['num_heldout_categories']} categories held out of SFT. SFT data: "
        f"{world['sft_examples_per_prompt']} chat examples per seen prompt drawn from truth^{world['sft_sharpening']:g} "
        f"(tail = answers of rank > {world['tail_start_rank']}).",
        "",
        "**Exact** metrics score every valid answer's probability (answer + EOS | prompt) under the model: validity = "
        "total valid mass (quality); coverage@K = expected share of the 24 valid answers seen in K = "
        f"{k} samples (mass coverage@K weights them by the truth); entropy (nats) of the model's distribution over the "
        "valid answers; KL(truth‖model) with the invalid mass counted as a loss; tail share = share of the valid mass "
        "on the truth's tail answers. Means over prompts.",
        "",
    ]
    for split, title in SPLIT_TITLES.items():
        lines += [f"## Exact, {title}", "", *_table(results, split, "exact", EXACT_COLUMNS, truth_entropy), ""]
    lines += [f"## Sampled ({k} samples per prompt, temperature 1, no top-k/top-p)", ""]
    for split, title in SPLIT_TITLES.items():
        lines += [f"### {title}", "", *_table(results, split, "sampled", SAMPLED_COLUMNS, truth_entropy), ""]
    timings = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in payload["timings_s"].items())
    lines += [
        "## Run",
        "",
        f"Timings: {timings}.",
        "",
        "Figures: " + ", ".join(f"`{Path(f).name}`" for f in payload["figures"]),
        "",
    ]
    out = Path(path)
    out.write_text("\n".join(lines))
    return out
