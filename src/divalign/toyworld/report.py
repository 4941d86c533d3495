"""``results.md`` of the toy demo: model × truth metrics on seen and held-out prompts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from divalign.evaluation.frontier import MatchedDifference, difference_table

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


SPREAD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("validity", "validity"),
    ("coverage", "coverage@K"),
    ("entropy", "entropy"),
    ("kl", "KL"),
)


def _mean_std(values: list[float]) -> str:
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
    return f"{mean:.3f} ± {std:.3f}"


def spread_table(spread: Mapping[str, Mapping[Any, Mapping[str, Mapping[str, float]]]]) -> list[str]:
    """Mean ± sample std over SFT seeds of the exact metrics, seen and held-out side by side."""
    header = [f"{split} {title}" for split in SPLIT_TITLES for _, title in SPREAD_COLUMNS]
    lines = ["| loss | seeds | " + " | ".join(header) + " |", "|---" * (len(header) + 2) + "|"]
    for name, by_seed in spread.items():
        cells = [
            _mean_std([metrics[split][key] for metrics in by_seed.values()])
            for split in SPLIT_TITLES
            for key, _ in SPREAD_COLUMNS
        ]
        seeds = ", ".join(str(seed) for seed in by_seed)
        lines.append(f"| {name} SFT | {seeds} | " + " | ".join(cells) + " |")
    return lines


def summary_lines(results: Mapping[str, Any], reference: str = "base (plain format)") -> list[str]:
    """One computed sentence per SFT model: its exact validity and its entropy / coverage as a share of the base's."""
    lines = []
    for label, by_split in results.items():
        if not label.endswith(" SFT"):
            continue
        parts = []
        for split in ("seen", "heldout"):
            model, base = by_split[split]["exact"], results[reference][split]["exact"]
            parts.append(
                f"{split}: validity {model['validity']:.2f}, entropy {model['entropy'] / base['entropy']:.0%} and "
                f"coverage@K {model['coverage'] / base['coverage']:.0%} of the base model's"
            )
        lines.append(f"- **{label}** — " + "; ".join(parts) + ".")
    return lines


def frontier_lines(frontier: Mapping[str, Any], k: int) -> list[str]:
    """The exact frontier's points and the validity difference vs the reference model at matched coverage@K."""
    reference, names = frontier["reference"], list(frontier["points"])
    temperatures = frontier["temperatures"]
    lines = [
        "## Quality–diversity frontier (exact, SFT prompts; `frontier.png`)",
        "",
        f"Validity and expected coverage@{k} of every model sampled at temperature T (exact: the answers' "
        "probabilities under softmax(z / T)); base model in its pretraining format, SFT models in the chat format. "
        "Diversity bought with temperature is the baseline TOFU and GEM must beat.",
        "",
        "| model | " + " | ".join(f"T={t:g}" for t in temperatures) + " |",
        "|---" * (len(temperatures) + 1) + "|",
    ]
    for name in names:
        cells = [frontier["points"][name][f"{t:g}"] for t in temperatures]
        lines.append(f"| {name} | " + " | ".join(f"{c['quality']:.3f} / {c['diversity']:.3f}" for c in cells) + " |")
    lines += [
        "",
        "Cells: validity / coverage@K.",
        "",
        f"### At matched coverage@{k}, validity difference vs {reference}",
        "",
    ]
    comparisons = {name: MatchedDifference(**c) for name, c in frontier["comparisons"].items()}
    lines += difference_table(reference, comparisons, f"coverage@{k}", "validity")
    if frontier.get("seed_spread"):
        lines += [
            "",
            f"Mean difference over the shared coverage range, per SFT seed (each vs {reference} of the same seed):",
            "",
        ]
        for name, by_seed in frontier["seed_spread"].items():
            values = [v for v in by_seed.values()]
            lines.append(
                f"- {name}: "
                + ", ".join(f"seed {s} {v:+.3f}" for s, v in by_seed.items())
                + f" (mean ± std {_mean_std(values)})"
            )
    return [*lines, ""]


def lineage_lines(lineage: Mapping[str, Any]) -> list[str]:
    """The lineage evaluation's semantic views: clusters vs distinct answers, spread, and the homogeneity matrix."""
    directory = Path(lineage["dir"]).name
    lines = [
        f"## Lineage evaluation (`divalign eval`; `{directory}/results.md`, `{directory}/homogeneity.png`)",
        "",
        f"{lineage['num_prompts']} SFT prompts × {lineage['num_samples']} samples (chat format, temperature 1), "
        f"metric profile `{lineage['profile']}`, embeddings all-MiniLM-L6-v2. An answer is one item, so the semantic "
        "clusters of a prompt's samples should be its distinct answers.",
        "",
        "| model | distinct answers / prompt | semantic clusters / prompt | prompts where they agree | SBERT diversity "
        "| within-prompt share of spread |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in lineage["models"].items():
        lines.append(
            f"| {name} | {m['distinct_answers']:.2f} | {m['semantic_clusters']:.2f} | "
            f"{m['clusters_equal_distinct']:.0%} | {m['sbert']:.3f} | {m['within_share']:.3f} |"
        )
    names = lineage["homogeneity"]["models"]
    lines += [
        "",
        "Same-prompt similarity of the models' samples (row A, column B: mean cosine between A's sample i and B's "
        "sample j, i ≠ j; diagonal: within a model):",
        "",
        "| model | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for name, row in zip(names, lineage["homogeneity"]["mean"], strict=True):
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return [*lines, ""]


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
        "on the truth's tail answers. Means over prompts. Entropy and tail share describe only the valid mass: where "
        "validity is low, read coverage@K and KL, which count the invalid mass as lost.",
        "",
    ]
    lines += ["## Summary (computed from the tables below; base = base model in its pretraining format)", ""]
    lines += [*summary_lines(results), ""]
    for split, title in SPLIT_TITLES.items():
        lines += [f"## Exact, {title}", "", *_table(results, split, "exact", EXACT_COLUMNS, truth_entropy), ""]
    lines += [f"## Sampled ({k} samples per prompt, temperature 1, no top-k/top-p)", ""]
    for split, title in SPLIT_TITLES.items():
        lines += [f"### {title}", "", *_table(results, split, "sampled", SAMPLED_COLUMNS, truth_entropy), ""]
    if payload.get("seed_spread"):
        lines += [
            "## Seed spread (exact; mean ± std over SFT seeds; same world, SFT set and base model)",
            "",
            *spread_table(payload["seed_spread"]),
            "",
        ]
    if payload.get("frontier"):
        lines += frontier_lines(payload["frontier"], k)
    if payload.get("lineage"):
        lines += lineage_lines(payload["lineage"])
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
        f"Timings of this invocation (stages reused from an earlier run count ~0 s; `--fresh` redoes all): {timings}.",
        "",
        "Figures: " + ", ".join(f"`{Path(f).name}`" for f in payload["figures"]),
        "",
    ]
