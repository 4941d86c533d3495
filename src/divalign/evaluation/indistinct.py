"""Metrics that cannot tell the evaluated models apart: every model scores the same on every prompt.

A metric saturated at a bound says nothing about which model is more diverse. The case that prompted this:
`semantic_clusters` at its default threshold gave 6 clusters of 6 samples for every model on creative-writing
prompts (each sample its own cluster). `divalign eval` names such metrics in results.md, with the bound when the
metric is a cluster count (K = each sample its own cluster, 1 = every sample in one) and how to move off it.
"""

from __future__ import annotations

import math
from typing import Any

CLUSTER_METRICS = ("semantic_clusters", "semantic_clusters_nli")


def indistinct_notes(results: dict[str, Any]) -> list[str]:
    """One line per metric of `results` (as `divalign eval` builds them) on which every model scores the same on
    every prompt; none with fewer than two models."""
    models, config = results["models"], results["config"]
    if len(models) < 2:
        return []
    notes = []
    for metric in config["metrics"]:
        columns = [model.get("per_prompt", {}).get("all", {}).get(metric) for model in models]
        if any(column is None for column in columns) or not columns[0]:
            continue
        values = {float(v) for column in columns for v in column}
        rows = zip(*columns, strict=True)
        if any(not math.isfinite(v) for v in values) or any(max(r) - min(r) > 1e-9 for r in rows):
            continue
        notes.append(_note(metric, values, config))
    return notes


def _note(metric: str, values: set[float], config: dict[str, Any]) -> str:
    value = next(iter(values)) if len(values) == 1 else None
    same = "the same" if value is None else f"{value:g}"
    note = f"`{metric}`: every model scores {same} on every prompt, so it cannot tell these models apart"
    if metric not in CLUSTER_METRICS or value is None:
        return note + "."
    samples, threshold = config.get("num_samples"), config.get("cluster_threshold")
    lower = metric == "semantic_clusters" and threshold is not None
    if value == samples:
        hint = f": a --cluster-threshold below {threshold:g} merges samples that are alike" if lower else ""
        return f"{note} (its maximum: each of the {samples} samples its own cluster{hint})."
    if value == 1:
        hint = f": a --cluster-threshold above {threshold:g} splits them" if lower else ""
        return f"{note} (its minimum: every sample in one cluster{hint})."
    return note + "."
