"""The demo's lineage evaluation: `divalign eval` over the CE, TOFU and GEM SFT models on the SFT prompts.

Where the rest of the demo scores the models against the truth, this stage runs the evaluation a user runs on real
models (`divalign.evaluation.evaluate_lineage`: sampled completions, lexical and embedding metrics, the semantic
views) and checks it against what the toy world knows: an answer is one item, so a prompt's semantic cluster count
should be its number of distinct answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from divalign.evaluation import evaluate_lineage

LINEAGE_METRICS: tuple[str, ...] = (
    "distinct_1",
    "distinct_2",
    "ead",
    "exact_dup_rate",
    "sbert",
    "vendi_1",
    "semantic_clusters",
)
MAX_NEW_TOKENS = 8  # the longest answer is 2 words: room for it, its EOS and some run-on


def distinct_answers(group: list[str]) -> int:
    """Distinct answers among a prompt's samples (whitespace runs collapsed, as the toy tokenizer decodes)."""
    return len({" ".join(text.split()) for text in group})


def evaluate_sft_lineage(out: Path, runs: dict[str, Path], num_samples: int) -> dict[str, Any]:
    """Run the lineage evaluation into ``out/lineage_eval`` (redone on every demo run: it only derives from the
    models) and return the demo's summary of it: per model the mean semantic clusters and distinct answers per prompt,
    the share of prompts where the two agree, SBERT diversity and the within-prompt share; the homogeneity matrix."""
    target = out / "lineage_eval"
    if target.exists():
        shutil.rmtree(target)
    results = evaluate_lineage(
        [(name, str(path)) for name, path in runs.items()],
        out / "world" / "prompts_seen.jsonl",
        num_samples=num_samples,
        max_new_tokens=MAX_NEW_TOKENS,
        metrics=list(LINEAGE_METRICS),
        backend="hf",
        device="cpu",
        out_dir=target,
    )
    models = {}
    for model in results["models"]:
        groups = [line["samples"] for line in _read_samples(target, model["name"])]
        distinct = [distinct_answers(group) for group in groups]
        clusters = model["per_prompt"]["all"]["semantic_clusters"]
        models[model["name"]] = {
            "distinct_answers": float(np.mean(distinct)),
            "semantic_clusters": model["metrics"]["semantic_clusters"]["mean"],
            "clusters_equal_distinct": float(np.mean([c == d for c, d in zip(clusters, distinct, strict=True)])),
            "sbert": model["metrics"]["sbert"]["mean"],
            "within_share": results["spread"][model["name"]]["within_share"],
        }
    homogeneity = results["homogeneity"]
    return {
        "dir": str(target),
        "profile": results["config"]["profile"],
        "num_prompts": results["config"]["num_prompts"],
        "num_samples": num_samples,
        "models": models,
        "homogeneity": {"models": homogeneity["models"], "mean": homogeneity["mean"]},
    }


def _read_samples(directory: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "samples" / f"{name}.jsonl").read_text().splitlines()]
