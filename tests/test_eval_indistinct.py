"""`divalign eval` says when a metric cannot tell the models apart: every model scores the same on every prompt
(issue 30: `semantic_clusters` at its default threshold gave 6 of 6 samples for every model)."""

from __future__ import annotations

import math

from divalign.evaluation import evaluate_lineage
from divalign.evaluation.indistinct import indistinct_notes
from divalign.smoke import save_tiny_model, write_jsonl


def results(per_model: dict[str, dict[str, list[float]]], samples: int = 6) -> dict:
    metrics = list(next(iter(per_model.values())))
    return {
        "config": {"metrics": metrics, "num_samples": samples, "cluster_threshold": 0.9},
        "models": [{"name": name, "per_prompt": {"all": values}} for name, values in per_model.items()],
    }


def test_a_cluster_count_at_its_maximum_for_every_model_is_named_with_the_threshold():
    notes = indistinct_notes(
        results({"CE": {"semantic_clusters": [6, 6, 6], "ead": [0.5, 0.6, 0.7]},
                 "TOFU": {"semantic_clusters": [6, 6, 6], "ead": [0.5, 0.6, 0.8]}})
    )  # fmt: skip
    assert notes == [
        "`semantic_clusters`: every model scores 6 on every prompt, so it cannot tell these models apart (its "
        "maximum: each of the 6 samples its own cluster: a --cluster-threshold below 0.9 merges samples that are "
        "alike)."
    ]


def test_a_cluster_count_at_its_minimum_and_a_metric_equal_prompt_by_prompt_are_named():
    notes = indistinct_notes(
        results({"a": {"semantic_clusters_nli": [1, 1], "distinct_1": [0.25, 0.5]},
                 "b": {"semantic_clusters_nli": [1, 1], "distinct_1": [0.25, 0.5]}})
    )  # fmt: skip
    assert notes == [
        "`semantic_clusters_nli`: every model scores 1 on every prompt, so it cannot tell these models apart (its "
        "minimum: every sample in one cluster).",
        "`distinct_1`: every model scores the same on every prompt, so it cannot tell these models apart.",
    ]


def test_a_metric_that_differs_anywhere_one_model_or_nan_is_not_named():
    assert indistinct_notes(results({"a": {"ead": [0.5, 0.6]}, "b": {"ead": [0.5, 0.61]}})) == []
    assert indistinct_notes(results({"a": {"ead": [0.5, 0.6]}})) == []
    assert indistinct_notes(results({"a": {"ead": [math.nan]}, "b": {"ead": [math.nan]}})) == []


def test_results_md_names_the_metric_that_cannot_tell_two_models_apart(tmp_path):
    """The same checkpoint twice: the same noise gives the same samples, so every metric ties on every prompt;
    two different checkpoints get no such section."""
    same = save_tiny_model(tmp_path / "m", 0)
    other = save_tiny_model(tmp_path / "o", 1)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word w1"}, {"prompt": "say w2"}])
    settings = dict(num_samples=4, max_new_tokens=6, metrics=["distinct_1", "ead"], backend="hf", device="cpu",
                    n_bootstrap=10)  # fmt: skip
    evaluate_lineage([("a", str(same)), ("b", str(same))], prompts, out_dir=tmp_path / "tie", **settings)
    report = (tmp_path / "tie" / "results.md").read_text()
    assert "## Metrics that cannot tell these models apart" in report
    assert "- `distinct_1`: every model scores" in report and "- `ead`: every model scores" in report
    evaluate_lineage([("a", str(same)), ("b", str(other))], prompts, out_dir=tmp_path / "apart", **settings)
    assert "cannot tell" not in (tmp_path / "apart" / "results.md").read_text()
