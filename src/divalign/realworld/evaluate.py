"""The demo's `divalign eval` runs, and what the verifier reads from the samples they keep.

Each split of prompts (seen categories, held-out categories) is evaluated by one `divalign eval` command over every
model, as a user would run it: the verifier (`divalign.realworld.verifier:names_valid_item`), a temperature sweep,
lexical and semantic metrics. `divalign eval` keeps every sample (`samples/<model>[@T<t>].jsonl`); the verifier's
metrics (:mod:`divalign.realworld.answer_metrics`) are computed from those files, so every number in the report can
be recomputed from what is on disk. A finished evaluation is reused when the same command is run again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..diversity.aggregate import summarize_with_ci
from .answer_metrics import category_coverage, score_groups

VERIFIER = "divalign.realworld.verifier:names_valid_item"
EVAL_METRICS: tuple[str, ...] = ("distinct_1", "distinct_2", "exact_dup_rate", "sbert", "semantic_clusters")
FRONTIER_METRIC = "semantic_clusters"


@dataclass(frozen=True)
class EvalSettings:
    """How `divalign eval` samples in the demo."""

    num_samples: int = 12  # 16 took the whole demo past 20 minutes on 2 CPU cores
    max_new_tokens: int = 8  # answers are a few tokens; a rambling base model is cut here
    temperature: float = 1.0
    temperatures: tuple[float, ...] = (0.7, 1.0, 1.3)
    batch_size: int = 8  # prompts per generate call (speed only)
    seed: int = 0
    bootstrap: int = 1000


def eval_command(
    models: Sequence[tuple[str, Path]], reference: str, prompts: Path, out: Path, settings: EvalSettings
) -> list[str]:
    """The `divalign eval` command line (as `python -m divalign.cli eval ...`); its frontier and quality split are
    taken against the model named `reference`."""
    command = [sys.executable, "-m", "divalign.cli", "eval"]
    for name, path in models:
        command += ["--model", f"{name}={path}"]
    command += [
        "--reference",
        reference,
        "--prompts",
        str(prompts),
        "--samples",
        str(settings.num_samples),
        "--max-new-tokens",
        str(settings.max_new_tokens),
        "--temperature",
        f"{settings.temperature:g}",
        "--temperatures",
        *(f"{t:g}" for t in settings.temperatures),
        "--verifier",
        VERIFIER,
        "--metrics",
        *EVAL_METRICS,
        "--frontier-metric",
        FRONTIER_METRIC,
        "--batch-size",
        str(settings.batch_size),
        "--seed",
        str(settings.seed),
        "--bootstrap",
        str(settings.bootstrap),
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    return command


def run_eval(
    models: Sequence[tuple[str, Path]],
    reference: str,
    prompts: Path,
    out: Path,
    settings: EvalSettings,
    env: dict[str, str],
) -> dict[str, Any]:
    """Run `divalign eval` into `out` unless the same command already finished there; returns its results.json."""
    command = eval_command(models, reference, prompts, out, settings)
    stamp = out / "demo_command.json"
    if (out / "results.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == command[1:]:
        print(f"[demo-real] reusing {out}")
    else:
        if out.exists():  # unfinished, or run with other settings: `divalign eval` refuses a non-empty --out
            shutil.rmtree(out)
        print(f"[demo-real] divalign eval -> {out}", flush=True)
        subprocess.run(command, check=True, env={**os.environ, **env})
        stamp.write_text(json.dumps(command[1:]))
    return json.loads((out / "results.json").read_text())


def read_samples(out: Path, name: str, temperature: float, main_temperature: float) -> list[list[str]]:
    """One model's samples at one temperature, as `divalign eval` wrote them (prompt order)."""
    suffix = "" if temperature == main_temperature else f"@T{temperature:g}"
    path = out / "samples" / f"{name}{suffix}.jsonl"
    return [json.loads(line)["samples"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompt_categories(prompts: Path) -> list[str]:
    """The category key of every prompt (its `answer` column), in file order."""
    return [json.loads(line)["answer"] for line in prompts.read_text(encoding="utf-8").splitlines() if line.strip()]


def verified_split(
    results: dict[str, Any],
    out: Path,
    prompts: Path,
    heads: dict[str, Sequence[str]],
    settings: EvalSettings,
) -> dict[str, Any]:
    """Per model of one `divalign eval` run: the verifier's per-prompt metrics at every temperature, their summaries
    at the main temperature (mean [bootstrap 95 % CI over prompts]), category coverage, and `divalign eval`'s own
    numbers (its accuracy, semantic clusters) next to them."""
    keys = prompt_categories(prompts)
    models: dict[str, Any] = {}
    for model in results["models"]:
        name = model["name"]
        samples = {
            f"{t:g}": read_samples(out, name, t, settings.temperature) for t in results["config"]["temperatures"]
        }
        per_temperature = {t: score_groups(groups, keys, heads) for t, groups in samples.items()}
        main = f"{settings.temperature:g}"
        models[name] = {
            "per_prompt": per_temperature,
            "summary": {
                m: summarize_with_ci(v, settings.bootstrap, settings.seed) for m, v in per_temperature[main].items()
            },
            "category_coverage": category_coverage(samples[main], keys),
            "eval_accuracy": model["quality"]["mean"],
            "semantic_clusters": model["metrics"]["semantic_clusters"],
            "semantic_clusters_per_prompt": model["per_prompt"]["all"]["semantic_clusters"],
            "sbert": model["metrics"]["sbert"],
        }
    return {"categories": keys, "models": models, "eval_dir": str(out)}
