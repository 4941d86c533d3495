"""What the real world adds to `divalign compare`'s report: the verifier's answer metrics, the seen and held-out
categories apart, and the power of the comparison (``OUT/results.md`` and ``OUT/results.json``).

Everything is read from what compare saved: its ``results.json`` (matched temperatures, per-prompt values) and its
sample cache (``report/calibration/samples/<variant>/seed<s>/<key>/evaluation@T<t>.json``, the texts), so every
number here can be recomputed from disk.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..compare.power import power_lines, report_power
from ..compare.statistics import seed_differences
from ..markdown_table import interval, markdown_table, number
from ..strict_json import nan_array, strict_json
from .answer_metrics import score_groups
from .world import RealWorld

SPLITS = {"seen": "seen categories (in SFT)", "heldout": "held-out categories (never in SFT)"}
AXES = ("diversity", "quality")
_OTHER = {"diversity": "quality", "quality": "diversity"}


def sample_texts(samples: Path, variant: str, seed: int | str, model: str, temperature: float) -> list[list[str]]:
    """The texts compare sampled from `model` on the evaluation prompts at `temperature` (the newest cache entry of
    that model, should older inputs have left others)."""
    pattern = f"{variant}/seed{seed}/*/evaluation@T{temperature:.10g}.json"
    for path in sorted(samples.glob(pattern), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["model"] == model:
            return data["texts"]
    raise FileNotFoundError(f"no samples of {model} at T={temperature:g} under {samples}/{pattern}")


def _reads(calibration: Mapping[str, Any], models: Mapping[tuple[str, str], str]) -> list[dict[str, Any]]:
    """Every (variant, seed, where, temperature) the comparison read on the evaluation prompts."""
    reference, t_ref = calibration["reference"], calibration["reference_temperature"]
    reads = []
    for seed, result in calibration["seeds"].items():
        reads.append({"variant": reference, "seed": seed, "at": f"T={t_ref:g}", "temperature": t_ref})
        for variant, entry in result["matched"].items():
            for axis in AXES:
                t = entry[f"at_{axis}"].get("temperature")
                if t is not None:
                    reads.append({"variant": variant, "seed": seed, "at": f"{reference}'s {axis}", "temperature": t})
    return [r | {"model": models[(r["variant"], r["seed"])]} for r in reads]


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def verifier_rows(
    report: Mapping[str, Any], samples: Path, keys: Sequence[str], world: RealWorld
) -> list[dict[str, Any]]:
    """Per read: validity, distinct valid answers and (seen) the share of valid answers outside the SFT head, mean
    over the prompts of each split."""
    models = {(c["variant"], str(c["seed"])): c["model"] for c in report["cells"] if "model" in c}
    heads = {key: world.head(key) for key in world.config.seen}
    rows = []
    for read in _reads(report["calibration"], models):
        texts = sample_texts(samples, read["variant"], read["seed"], read["model"], read["temperature"])
        scores = score_groups(texts, keys, heads)
        row = dict(read)
        for split in SPLITS:
            mask = [(key in world.config.heldout) == (split == "heldout") for key in keys]
            for metric in ("validity", "distinct_valid", "outside_head"):
                if metric == "outside_head" and split == "heldout":
                    continue
                row[f"{split}_{metric}"] = _mean([v for v, m in zip(scores[metric], mask, strict=True) if m])
        rows.append(row)
    return rows


def evaluation_keys(calibration: Mapping[str, Any]) -> list[str]:
    """The category key (`answer`) of each evaluation prompt, in order, from the prompt file compare read."""
    prompts = Path(calibration["evaluation"]["prompts"]).read_text(encoding="utf-8")
    return [json.loads(line)["answer"] for line in prompts.splitlines() if line.strip()]


def split_indices(keys: Sequence[str], world: RealWorld) -> dict[str, list[int]]:
    """The evaluation prompts' positions on each split, from their category keys."""
    return {
        split: [i for i, key in enumerate(keys) if (key in world.config.heldout) == (split == "heldout")]
        for split in SPLITS
    }


def split_differences(calibration: Mapping[str, Any], keys: Sequence[str], world: RealWorld) -> dict[str, Any]:
    """The calibrated differences on each split's evaluation prompts alone: per model and matched axis, per seed and
    pooled (the temperatures were matched on all categories together)."""
    evaluation = calibration["evaluation"]
    out: dict[str, Any] = {}
    for split, index in split_indices(keys, world).items():
        for model in calibration["pooled"]:
            for axis in AXES:
                other = _OTHER[axis]
                pairs = {}
                for seed, result in calibration["seeds"].items():
                    entry = result["matched"].get(model, {}).get(f"at_{axis}", {})
                    if entry.get("temperature") is None:
                        continue
                    ours, theirs = entry[f"{other}_per_prompt"], result["reference_evaluation"][other]
                    pairs[int(seed)] = (nan_array(ours[i] for i in index), nan_array(theirs[i] for i in index))
                summary = (
                    seed_differences(pairs, evaluation["n_bootstrap"], evaluation["seed"]).as_dict() if pairs else {}
                )
                out.setdefault(split, {}).setdefault(model, {})[f"at_{axis}"] = {"difference_of": other, **summary}
    return out


VERIFIER_COLUMNS = (
    "variant",
    "seed",
    "read at",
    "T",
    "seen: validity",
    "distinct valid / prompt",
    "outside SFT head",
    "held-out: validity",
    "distinct valid / prompt",
)


def _verifier_row(r: Mapping[str, Any]) -> list[Any]:
    scores = [number(r["seen_validity"]), number(r["seen_distinct_valid"], 2), number(r["seen_outside_head"])]
    scores += [number(r["heldout_validity"]), number(r["heldout_distinct_valid"], 2)]
    return [r["variant"], r["seed"], r["at"], f"{r['temperature']:.3g}", *scores]


def _verifier_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return markdown_table(VERIFIER_COLUMNS, [_verifier_row(r) for r in rows])


def _split_row(split: str, model: str, axis: str, s: Mapping[str, Any], metric: str) -> list[str]:
    per_seed = "; ".join(f"seed {k}: {interval(v)}" for k, v in (s.get("per_seed") or {}).items()) or "n/a"
    what = metric if s["difference_of"] == "diversity" else "validity"
    return [split, model, axis, what, per_seed, interval(s.get("pooled"))]


def _split_table(splits: Mapping[str, Any], reference: str, metric: str) -> list[str]:
    header = ["categories", "model", f"at {reference}'s", "difference of", "per seed [95 % CI]", "pooled [95 % CI]"]
    rows = [
        _split_row(split, model, axis, by_axis[f"at_{axis}"], metric)
        for split, by_model in splits.items()
        for model, by_axis in by_model.items()
        for axis in AXES
    ]
    return markdown_table(header, rows)


def split_section(heading: str, splits: Mapping[str, Any], reference: str, metric: str) -> list[str]:
    """The markdown lines of a `split_differences` section: its heading, what the split means and the table."""
    note = (
        "The temperatures were matched on all categories together; here the same paired differences are averaged "
        "over the seen and the held-out categories' prompts apart."
    )
    return [f"## {heading}", "", note, "", *_split_table(splits, reference, metric), ""]


def write_report(out: Path, report_json: Path, world: RealWorld, timings: Mapping[str, float]) -> Path:
    """`OUT/results.md` and `OUT/results.json` from compare's report at `report_json`; returns results.md."""
    report = json.loads(report_json.read_text())
    calibration = report["calibration"]
    if calibration is None:
        raise RuntimeError(f"{report_json}: no calibrated comparison: {report.get('calibration_skipped')}")
    keys = evaluation_keys(calibration)
    samples = report_json.parent / "calibration" / "samples"
    rows = verifier_rows(report, samples, keys, world)
    splits = split_differences(calibration, keys, world)
    power = report_power(calibration)
    reference, metric = calibration["reference"], calibration["diversity_metric"]
    payload = {
        "compare_report": str(report_json),
        "world": world.describe(),
        "verifier": rows,
        "splits": splits,
        "power": power,
        "timings_s": dict(timings),
    }
    (out / "results.json").write_text(json.dumps(strict_json(payload), indent=1, ensure_ascii=False, allow_nan=False))
    compare_md = os.path.relpath(report_json.with_suffix(".md"), out)
    lines = [
        "# Real pretrained model: CE vs TOFU vs GEM, compared by `divalign compare`",
        "",
        f"The calibrated comparison (every model read where its {metric}, then its validity, matches "
        f"{reference}'s, per seed and pooled, with the frontier figure) is compare's own report: [{compare_md}]"
        f"({compare_md}). Below, what the verifier adds, read from the samples compare kept.",
        "",
        "## The verifier's metrics where the comparison read each model (evaluation prompts, mean over prompts)",
        "",
        *_verifier_table(rows),
        "",
        *split_section("The calibrated differences on each split of categories", splits, reference, metric),
        "## Power: the smallest difference each pooled comparison resolves (≈ its 95 % CI's half-width)",
        "",
        *power_lines(power, reference, ("diversity",)),
        "",
        "## Timings (s)",
        "",
        *(f"- {name}: {seconds:.0f}" for name, seconds in timings.items()),
        "",
    ]
    path = out / "results.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
