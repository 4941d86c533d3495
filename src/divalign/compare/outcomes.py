"""What a model's samples at the reference temperature say beyond the two calibrated axes, per prompt: pass@1 (the
verifier's valid fraction), pass@k (k = the samples per prompt: the prompt passes when any sample is valid), coverage
of the valid answers (distinct valid answers over the number of valid answers the prompt has, where its `answer` is a
JSON list of them, as the toy world's prompt files write it) and the entropy (nats) of the sampled final answers.

Read from the calibration's sample cache (:mod:`divalign.compare.sampled`), so nothing is sampled twice; summarised per
variant over seeds (mean ± std) with a CI over prompts, against the reference at the same stage, and from one stage to
the next (e.g. what the RL stage changed of each SFT start).
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..diversity.answers import extract_final_answer, pass_at_k
from ..markdown_table import interval, markdown_table, mean_std
from ..strict_json import finite_or_none
from .spec import EvaluationSpec
from .statistics import mean_ci, seed_differences

OUTCOMES = ("pass_at_1", "pass_at_k", "coverage", "entropy")


def answer_count(answer: str | None) -> int | None:
    """The number of valid answers a prompt has, when its `answer` is a JSON list of them; None otherwise."""
    if answer is None:
        return None
    try:
        answers = json.loads(answer)
    except (TypeError, ValueError):
        return None
    if not isinstance(answers, list) or not answers:
        return None
    return len({" ".join(str(a).split()) for a in answers})


def answer_entropy(texts: Sequence[str]) -> float:
    """Shannon entropy (nats) of the empirical distribution of the samples' final answers (the answers
    `unique_answers` counts); the plug-in estimate, which a few samples bias low."""
    if not texts:
        return math.nan
    counts = np.array(list(Counter(extract_final_answer(t) for t in texts).values()), dtype=np.float64)
    shares = counts / counts.sum()
    return float(-(shares * np.log(shares)).sum())


def prompt_outcomes(texts: Sequence[str], verdicts: Sequence[bool], valid_answers: int | None) -> dict[str, float]:
    """One prompt's outcomes from its samples and their verdicts; coverage is NaN when the number of valid answers
    is unknown."""
    n, valid = len(texts), int(sum(bool(v) for v in verdicts))
    if n == 0:
        return dict.fromkeys(OUTCOMES, math.nan)
    distinct_valid = {extract_final_answer(t) for t, ok in zip(texts, verdicts, strict=True) if ok}
    return {
        "pass_at_1": valid / n,
        "pass_at_k": pass_at_k(n, valid, n),
        "coverage": len(distinct_valid) / valid_answers if valid_answers else math.nan,
        "entropy": answer_entropy(texts),
    }


def outcomes_from_samples(
    groups: Sequence[Sequence[str]], answers: Sequence[str | None], verify: Callable[[str, str | None], Any]
) -> dict[str, list[float]]:
    """Per outcome, its value at every prompt (`groups[i]`: prompt i's samples, `answers[i]`: its answer)."""
    if len(groups) != len(answers):
        raise ValueError(f"{len(groups)} groups of samples for {len(answers)} prompts")
    rows = [
        prompt_outcomes(texts, [bool(verify(t, answer)) for t in texts], answer_count(answer))
        for texts, answer in zip(groups, answers, strict=True)
    ]
    return {name: [row[name] for row in rows] for name in OUTCOMES}


def _nanmean(values: np.ndarray, axis: int | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a prompt (or seed) with no defined value stays NaN
        return np.nanmean(values, axis=axis)


def summarize(
    per_seed: Mapping[int, Sequence[float]],
    reference: Mapping[int, Sequence[float]] | None,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """One variant's outcome: the mean over prompts at each seed, their mean ± std over seeds, the pooled mean (per
    prompt, the mean over seeds) with its CI over prompts, and (with `reference`) the paired difference from the
    reference at each seed and pooled."""
    seeds = sorted(per_seed)
    stacked = np.array([per_seed[s] for s in seeds], dtype=np.float64)
    means = [float(m) for m in _nanmean(stacked, axis=1)]
    defined = [m for m in means if math.isfinite(m)]
    out: dict[str, Any] = {
        "per_seed": {str(s): finite_or_none(m) for s, m in zip(seeds, means, strict=True)},
        "seed_mean": float(np.mean(defined)) if defined else None,
        "seed_std": float(np.std(defined, ddof=1)) if len(defined) > 1 else None,
        "pooled": mean_ci(_nanmean(stacked, axis=0), n_bootstrap, seed).as_dict(),
    }
    if reference is not None:
        pairs = {s: (per_seed[s], reference[s]) for s in seeds if s in reference}
        out["vs_reference"] = seed_differences(pairs, n_bootstrap, seed).as_dict() if pairs else None
    return out


def summarize_stage(
    values: Mapping[str, Mapping[int, Mapping[str, Sequence[float]]]], reference: str, evaluation: EvaluationSpec
) -> dict[str, Any]:
    """`values[variant][seed][outcome]` (per prompt) → per variant and outcome, :func:`summarize` (against the
    reference's same seeds)."""
    ref = values.get(reference)
    out: dict[str, Any] = {}
    for variant, by_seed in values.items():
        out[variant] = {
            name: summarize(
                {s: v[name] for s, v in by_seed.items()},
                None if variant == reference or ref is None else {s: v[name] for s, v in ref.items()},
                evaluation.n_bootstrap,
                evaluation.seed,
            )
            for name in OUTCOMES
        }
    return out


def stage_outcomes(
    models: Mapping[str, Mapping[int, Path]],
    reference: str,
    evaluation: EvaluationSpec,
    out_dir: Path,
    device: str | None = None,
) -> dict[str, Any]:
    """Every finished `models[variant][seed]`'s outcomes at the reference temperature on the evaluation prompts, read
    from the sample cache under `evaluation.samples_root(out_dir)` that
    :func:`divalign.compare.calibration.calibrated_comparison` wrote for the same models (a model missing there is
    sampled and cached the same way)."""
    from .sampled import SampledModel, load_scoring  # torch and the scorers only for real checkpoints

    if evaluation.verifier is None:
        return {"skipped": "pass@1, pass@k and coverage need a verifier (`evaluation.verifier`)"}
    scoring = load_scoring(evaluation, device)
    records = scoring.prompts["evaluation"]
    t_ref = evaluation.reference_temperature
    values: dict[str, dict[int, dict[str, list[float]]]] = {}
    files: dict[str, dict[str, str]] = {}
    for variant, by_seed in models.items():
        for seed, path in sorted(by_seed.items()):
            name = f"{variant} (seed {seed})"
            cache_root = evaluation.samples_root(out_dir) / variant / f"seed{seed}"
            model = SampledModel(name, Path(path), scoring, cache_root, device)
            try:
                model.axes("evaluation", t_ref)  # read from the cache (or sampled into it)
            finally:
                model.close()
            cache = model.cache_file("evaluation", t_ref)
            texts = json.loads(cache.read_text(encoding="utf-8"))["texts"]
            values.setdefault(variant, {})[seed] = outcomes_from_samples(
                texts, [r.answer for r in records], scoring.verifier
            )
            files.setdefault(variant, {})[str(seed)] = str(cache)
    return {
        "temperature": t_ref,
        "k": evaluation.samples,
        "prompts": len(records),
        "samples": files,
        "per_prompt": {v: {str(s): o for s, o in by_seed.items()} for v, by_seed in values.items()},
        "variants": summarize_stage(values, reference, evaluation),
    }


def stage_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], evaluation: EvaluationSpec
) -> dict[str, dict[str, Any]]:
    """Per variant and outcome, (after − before) paired over prompts at each seed the two stages share, and pooled
    over seeds: what the later stage changed of each start."""
    first, second = before.get("per_prompt", {}), after.get("per_prompt", {})
    return per_prompt_changes(first, second, OUTCOMES, evaluation.n_bootstrap, evaluation.seed)


def per_prompt_changes(
    first: Mapping[str, Any], second: Mapping[str, Any], names: Sequence[str], n_bootstrap: int, seed: int
) -> dict[str, dict[str, Any]]:
    """`stage_changes` on per-prompt values (`{variant: {seed: {outcome: [per prompt]}}}`, e.g. one subset of the
    prompts): per variant and outcome in `names`, (second − first) paired over prompts at each shared seed, pooled."""
    out: dict[str, dict[str, Any]] = {}
    for variant in second:
        seeds = sorted(set(first.get(variant, {})) & set(second[variant]), key=int)
        if not seeds:
            continue
        out[variant] = {
            name: seed_differences(
                {int(s): (second[variant][s][name], first[variant][s][name]) for s in seeds}, n_bootstrap, seed
            ).as_dict()
            for name in names
        }
    return out


# --- the report's section ----------------------------------------------------------------------------------------


def _labels(k: int) -> dict[str, str]:
    return {"pass_at_1": "pass@1", "pass_at_k": f"pass@{k}", "coverage": "coverage", "entropy": "entropy (nats)"}


def _outcome_cell(summary: Mapping[str, Any]) -> str:
    return f"{mean_std(summary['seed_mean'], summary['seed_std'])}; {interval(summary['pooled'], signed=False)}"


def _difference_cell(summary: Mapping[str, Any]) -> str:
    return interval((summary.get("vs_reference") or {}).get("pooled"))


def outcomes_markdown(result: Mapping[str, Any], reference: str) -> str:
    """The outcomes table of one stage: per variant, seed mean ± std and the pooled mean's 95 % CI over prompts;
    then each variant − the reference, pooled over seeds, paired over prompts."""
    if "skipped" in result:
        return f"No pass@k or coverage: {result['skipped']}.\n"
    labels = _labels(result["k"])
    header = ["variant", *labels.values()]
    rows = [[variant, *(_outcome_cell(summary[n]) for n in labels)] for variant, summary in result["variants"].items()]
    lines = [
        f"At T={result['temperature']:g} on the {result['prompts']} evaluation prompts, {result['k']} samples each "
        "(the calibration's cached samples): seed mean ± std, then the mean over prompts of the seeds' mean "
        "[95 % CI over prompts]. Coverage: distinct valid answers / the valid answers the prompt has.",
        "",
        *markdown_table(header, rows),
    ]
    others = {v: s for v, s in result["variants"].items() if v != reference}
    if others:
        differences = [
            [f"{variant} − {reference}", *(_difference_cell(summary[n]) for n in labels)]
            for variant, summary in others.items()
        ]
        lines += [
            "",
            f"Difference from {reference} (paired over prompts, pooled over seeds [95 % CI]):",
            "",
            *markdown_table(header, differences),
        ]
    return "\n".join(lines) + "\n"


def _change_cell(entry: Mapping[str, Any]) -> str:
    if entry.get("seed_std") is None:
        return interval(entry["pooled"])
    return f"{interval(entry['pooled'])}; {mean_std(entry['seed_mean'], entry['seed_std'], signed=True)}"


def changes_markdown(changes: Mapping[str, Any], before: str, after: str, k: int) -> str:
    """What the stage `after` changed of each variant's `before` model: pooled paired differences [95 % CI]."""
    labels = _labels(k)
    rows = [[variant, *(_change_cell(by_name[name]) for name in labels)] for variant, by_name in changes.items()]
    lines = [
        f"Change from {before} to {after} (after − before, paired over prompts, pooled over seeds [95 % CI]; "
        "seed mean ± std of the per-seed changes):",
        "",
        *markdown_table(["variant", *labels.values()], rows),
    ]
    return "\n".join(lines) + "\n"
