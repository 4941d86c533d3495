"""Writing `divalign eval` results: results.json, results.md (table with bootstrap CIs) and a PNG grid."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..strict_json import strict_json
from .frontier import MatchedDifference, difference_table, plot_frontiers
from .indistinct import indistinct_notes
from .semantic_views import plot_homogeneity

_SPLIT_NOTE = (
    "drop_all = diversity lost vs the reference model over all samples (sign-adjusted: positive = less diverse); "
    "narrowing = the drop over correct samples only; quality_control = drop_all − narrowing. Both are averaged over "
    "the num_prompts prompts with at least two correct samples under both models (a prompt with fewer counts in no "
    "correct-only metric)."
)


def _fmt(value: float | None) -> str:
    if isinstance(value, int):
        return str(value)
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _cell(stats: dict[str, float]) -> str:
    return f"{_fmt(stats['mean'])} [{_fmt(stats['ci_low'])}, {_fmt(stats['ci_high'])}]"


def _table(rows: list[tuple[str, dict[str, str]]], columns: list[str]) -> list[str]:
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells.get(c, "") for c in columns) + " |" for name, cells in rows]
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> None:
    models, metrics = results["models"], results["config"]["metrics"]
    lines = [
        "# Diversity evaluation",
        "",
        f"{results['config']['num_prompts']} prompts × "
        f"{results['config']['num_samples']} samples; mean over prompts [bootstrap 95% CI over prompts].",
        "",
        *profile_lines(results["config"]),
        "",
    ]
    lines += _table([(m["name"], {k: _cell(v) for k, v in m["metrics"].items()}) for m in models], metrics)
    notes = indistinct_notes(results)
    if notes:
        lines += ["", "## Metrics that cannot tell these models apart", "", *[f"- {note}" for note in notes]]
    across_cols = [k for k in metrics if "across" in models[0]["metrics"].get(k, {})]
    if across_cols:
        lines += ["", "## Across prompts (first sample of each prompt)", ""]
        lines += _table(
            [(m["name"], {k: _fmt(m["metrics"][k]["across"]) for k in across_cols}) for m in models], across_cols
        )
    if "quality_score" in models[0]:
        lines += ["", *quality_section(results)]
    if "quality" in models[0]:
        lines += ["", "## Quality and diversity over correct samples only", ""]
        correct_cols = list(models[0]["correct_only"])
        rows = [
            (m["name"], {"accuracy": _cell(m["quality"]), **{k: _cell(v) for k, v in m["correct_only"].items()}})
            for m in models
        ]
        lines += _table(rows, ["accuracy", *correct_cols])
        lines += [
            "",
            "## Quality control vs narrowing (Karouzos et al., arXiv 2604.16027), relative to "
            f"{results['config'].get('reference', models[0]['name'])}",
            "",
            _SPLIT_NOTE,
            "",
        ]
        split_rows = [
            (f"{m['name']} / {k}", {c: _fmt(v[c]) for c in v}) for m in models for k, v in m.get("split", {}).items()
        ]
        lines += _table(split_rows, ["drop_all", "narrowing", "quality_control", "narrowing_share", "num_prompts"])
    if "frontier" in results:
        lines += ["", *frontier_section(results)]
    if "homogeneity" in results:
        lines += ["", *homogeneity_section(results), "", *spread_section(results)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def quality_section(results: dict[str, Any]) -> list[str]:
    """`--quality` next to the diversity metrics, at the main temperature."""
    models, metrics = results["models"], results["config"]["metrics"]
    name = models[0]["quality_score"]["name"]
    lines = [
        f"## Quality ({name}) next to diversity at T={results['config']['temperature']:g}",
        "",
        f"{name}: mean over prompts of each prompt's mean score over its samples (samples without a score left "
        "out) [bootstrap 95% CI over prompts].",
        "",
    ]
    rows = [
        (m["name"], {name: _cell(m["quality_score"]), **{k: _cell(v) for k, v in m["metrics"].items()}}) for m in models
    ]
    return lines + _table(rows, [name, *metrics])


def profile_lines(config: dict[str, Any]) -> list[str]:
    """Which metric profile produced the numbers, and how it differs from divalign's definitions."""
    settings = config.get("profile_settings") or {}
    lines = [f"Metric profile: `{config.get('profile', 'divalign')}` — {settings.get('title', '')}".rstrip(" —")]
    lines += [f"- {item}" for item in settings.get("differences", [])]
    if config.get("embedding_model"):
        threshold = config.get("cluster_threshold")
        lines.append(f"- embeddings: {config['embedding_model']}; semantic clusters at cosine ≥ {threshold:g}")
    return lines


def homogeneity_section(results: dict[str, Any]) -> list[str]:
    """The cross-model similarity matrix: row A, column B = mean cosine between A's and B's samples of a prompt."""
    view = results["homogeneity"]
    names = view["models"]
    lines = [
        "## Cross-model homogeneity (`homogeneity.png`)",
        "",
        "Row A, column B: mean over prompts of the mean cosine similarity between A's sample i and B's sample j of "
        "the same prompt, over i ≠ j (sample i of every model draws the same noise, so the pairs (a_i, b_i) are left "
        "out); diagonal: a model's own pairs i ≠ j. One model under two names: the cell equals the diagonal; B "
        "sampling A's distribution: it equals both diagonal cells in expectation; B spread wider around A's answers: "
        "between them; B saying things A does not: below both. [bootstrap 95 % CI over prompts]",
        "",
    ]
    rows = [
        (a, {b: _cell({"mean": m, "ci_low": lo, "ci_high": hi}) for b, m, lo, hi in zip(names, *cells, strict=True)})
        for a, *cells in zip(names, view["mean"], view["ci_low"], view["ci_high"], strict=True)
    ]
    return lines + _table(rows, names)


def spread_section(results: dict[str, Any]) -> list[str]:
    """Each model's within-prompt share of embedding variance."""
    lines = [
        "## Within- vs across-prompt spread",
        "",
        "Share of the embedding variance that lies within prompts (law of total variance over all samples): near 0, "
        "each prompt gets one answer however different the prompts; near 1, one prompt's samples spread as much as "
        "different prompts' do. [bootstrap 95 % CI over prompts]",
        "",
    ]
    rows = [
        (name, {"within-prompt share": _cell({"mean": v["within_share"], **v})})
        for name, v in results["spread"].items()
    ]
    return lines + _table(rows, ["within-prompt share"])


def frontier_section(results: dict[str, Any]) -> list[str]:
    """The frontier's points per model and temperature, and the matched-diversity difference table."""
    frontier = results["frontier"]
    diversity, quality, reference = frontier["diversity_metric"], frontier["quality"], frontier["reference"]
    temperatures = [point["temperature"] for point in results["models"][0]["frontier"]]
    lines = [f"## Quality–diversity frontier ({quality} vs {diversity}; `frontier.png`)", ""]
    lines += [
        f"Each model sampled at temperatures {', '.join(f'{t:g}' for t in temperatures)}: mean over prompts "
        "[bootstrap 95 % CI over prompts].",
        "",
    ]
    rows = [
        (f"{m['name']} @ T={p['temperature']:g}", {quality: _cell(p["quality"]), diversity: _cell(p["diversity"])})
        for m in results["models"]
        for p in m["frontier"]
    ]
    lines += _table(rows, [quality, diversity])
    lines += [
        "",
        f"### At matched diversity, quality difference vs {reference}",
        "",
        f"Each frontier (its Pareto-efficient temperatures) is interpolated linearly in {diversity}; the difference is "
        "read at evenly spaced levels inside the range both frontiers cover (no extrapolation). CIs: "
        "bootstrap over prompts, resampled jointly for both models and all temperatures.",
        "",
    ]
    comparisons = {name: MatchedDifference(**c) for name, c in frontier["comparisons"].items()}
    lines += difference_table(reference, comparisons, diversity, quality)
    return lines


def write_frontier_chart(results: dict[str, Any], path: Path) -> Path:
    """frontier.png: one curve per model, quality against the frontier's diversity metric across temperatures."""
    frontier = results["frontier"]
    curves = {
        m["name"]: (
            [p["temperature"] for p in m["frontier"]],
            [p["diversity"]["mean"] for p in m["frontier"]],
            [p["quality"]["mean"] for p in m["frontier"]],
        )
        for m in results["models"]
    }
    return plot_frontiers(curves, path, frontier["diversity_metric"], frontier["quality"])


def write_chart(results: dict[str, Any], path: Path) -> None:
    """One subplot per metric, x = models in lineage order, mean with bootstrap CI error bars."""
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    names = [m["name"] for m in results["models"]]
    metrics = results["config"]["metrics"]
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(4 * ncols, 3 * nrows))
    fig.subplots_adjust(
        left=0.05, right=0.98, bottom=0.06, top=0.95, hspace=0.6, wspace=0.3
    )  # fixed spacing: constrained layout triples the drawing time
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    series = [("all samples", "metrics")] + (
        [("correct only", "correct_only")] if "quality" in results["models"][0] else []
    )
    for ax, metric in zip(axes, metrics, strict=False):
        for label, key in series:
            stats = [m[key].get(metric) for m in results["models"]]
            if any(s is None for s in stats):
                continue
            mean = [s["mean"] for s in stats]
            err = [[max(s["mean"] - s["ci_low"], 0) for s in stats], [max(s["ci_high"] - s["mean"], 0) for s in stats]]
            ax.errorbar(range(len(names)), mean, yerr=err, marker="o", capsize=3, label=label)
        ax.set_title(metric)
        ax.set_xticks(range(len(names)), names, rotation=30)
        if len(series) > 1:
            ax.legend(fontsize="small")
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.savefig(path, dpi=100)


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write results.json, results.md, diversity.png (and frontier.png, homogeneity.png when computed) into
    `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "chart": out_dir / "diversity.png"}
    text = json.dumps(strict_json(results), indent=2, allow_nan=False)  # strict JSON, readable by any parser
    paths["json"].write_text(text + "\n", encoding="utf-8")
    write_markdown(results, paths["markdown"])
    write_chart(results, paths["chart"])
    if "frontier" in results:
        paths["frontier"] = write_frontier_chart(results, out_dir / "frontier.png")
    if "homogeneity" in results:
        paths["homogeneity"] = plot_homogeneity(results["homogeneity"], out_dir / "homogeneity.png")
    return paths


def write_samples(
    out_dir: Path, name: str, prompts: list[Any], texts: list[list[str]], token_ids: list[list[list[int]]]
) -> Path:
    """Keep the raw completions (texts and the policy's token ids) next to the scores, so any number can be
    recomputed from them."""
    path = out_dir / "samples" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for prompt, group, ids in zip(prompts, texts, token_ids, strict=True):
            f.write(json.dumps({"prompt": prompt, "samples": group, "token_ids": ids}, ensure_ascii=False) + "\n")
    return path
