"""`divalign eval`: the metric profile named in every table, semantic clusters, the cross-model homogeneity matrix and
the within-prompt share of spread, each recomputed by definition from the written samples (tiny local checkpoints,
the offline all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from chat_checkpoints import save_chat_checkpoint
from divalign.cli import main
from divalign.diversity import load_embedder
from divalign.evaluation import evaluate_lineage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", ":", "say", "a", "word", "."] + [
    f"w{i}" for i in range(12)
]


def save_checkpoint(directory, seed):
    return str(save_chat_checkpoint(directory, WORDS, seed))


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    return [(name, save_checkpoint(root / name, seed)) for seed, name in enumerate(("base", "sft", "dpo"))]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("say a word", "say w1", "say w2 w3", "say")))
    return path


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("all-MiniLM-L6-v2")


def run_eval(lineage, prompts, out, **kwargs):
    settings = dict(num_samples=5, max_new_tokens=6, backend="hf", device="cpu", n_bootstrap=50, out_dir=out)
    return evaluate_lineage(lineage, prompts, **{**settings, **kwargs})


def samples_of(out, name):
    lines = (out / "samples" / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line)["samples"] for line in lines]


def cosine(x, y):
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_views_recomputed_from_the_written_samples(lineage, prompts, tmp_path, minilm):
    out = tmp_path / "out"
    results = run_eval(lineage, prompts, out, metrics=["distinct_1", "sbert", "semantic_clusters"])
    names = [name for name, _ in lineage]
    texts = {name: samples_of(out, name) for name in names}
    emb = {name: [minilm.encode(group) for group in texts[name]] for name in names}

    # semantic clusters: each sample joins the first cluster whose first member is within cosine 0.9 (or is equal)
    for model in results["models"]:
        expected = []
        for group, vectors in zip(texts[model["name"]], emb[model["name"]], strict=True):
            firsts = []
            for i in range(len(group)):
                if not any(group[r] == group[i] or cosine(vectors[r], vectors[i]) >= 0.9 for r in firsts):
                    firsts.append(i)
            expected.append(len(firsts))
        assert model["per_prompt"]["all"]["semantic_clusters"] == expected, model["name"]

    # homogeneity: the pairs (a_i, b_j) for the same prompt with i != j (sample i of every model shares its noise),
    # within a model (the diagonal) and across models alike
    view = results["homogeneity"]
    assert view["models"] == names
    for a, first in enumerate(names):
        for b, second in enumerate(names):
            per_prompt = []
            for x, y in zip(emb[first], emb[second], strict=True):
                pairs = [(i, j) for i in range(len(x)) for j in range(len(y)) if i != j]
                per_prompt.append(np.mean([cosine(x[i], y[j]) for i, j in pairs]))
            assert view["mean"][a][b] == pytest.approx(np.mean(per_prompt), abs=1e-5), (first, second)
            assert view["ci_low"][a][b] <= view["mean"][a][b] + 1e-9 <= view["ci_high"][a][b] + 2e-9
    sbert = {m["name"]: m["metrics"]["sbert"]["mean"] for m in results["models"]}
    assert [view["mean"][i][i] for i in range(3)] == pytest.approx([1 - sbert[n] for n in names], abs=1e-5)

    # spread: the law of total variance over the unit-normalised embeddings
    for name in names:
        unit = [g / np.linalg.norm(g, axis=1, keepdims=True) for g in emb[name]]
        everything = np.concatenate(unit)
        within = sum(len(g) * g.var(axis=0).sum() for g in unit)
        expected = within / (len(everything) * everything.var(axis=0).sum())
        spread = results["spread"][name]
        assert spread["within_share"] == pytest.approx(expected, abs=1e-5)
        assert spread["ci_low"] <= spread["within_share"] <= spread["ci_high"]

    report = (out / "results.md").read_text()
    assert "Metric profile: `divalign` — divalign's definitions" in report
    assert "semantic clusters at cosine ≥ 0.9" in report
    assert "## Cross-model homogeneity (`homogeneity.png`)" in report
    assert "## Within- vs across-prompt spread" in report
    assert "| model | base | sft | dpo |" in report.splitlines()
    assert (out / "homogeneity.png").read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["profile"] == "divalign" and saved["config"]["cluster_threshold"] == 0.9
    assert saved["config"]["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert saved["homogeneity"]["models"] == names and len(saved["homogeneity"]["per_prompt"][0][1]) == 4


def test_one_model_under_two_names_is_as_similar_to_itself_as_within(lineage, prompts, tmp_path):
    """The same checkpoint twice samples the same texts (paired noise): each off-diagonal cell equals the diagonal,
    per prompt and in the matrix, as the README's reading of the matrix says "B sampling A's distribution" does."""
    path = lineage[1][1]
    results = run_eval([("a", path), ("b", path)], prompts, tmp_path / "out", metrics=["sbert"])
    view = results["homogeneity"]
    assert samples_of(tmp_path / "out", "a") == samples_of(tmp_path / "out", "b")
    per_prompt = np.array(view["per_prompt"], dtype=np.float64)
    assert np.isfinite(per_prompt).all()
    assert per_prompt[0, 1] == pytest.approx(per_prompt[0, 0], abs=1e-9)
    assert per_prompt[1, 0] == pytest.approx(per_prompt[1, 1], abs=1e-9)
    assert view["mean"][0][1] == pytest.approx(view["mean"][0][0], abs=1e-9)
    assert view["mean"][0][0] < 1.0  # the samples differ: the equality is not 1 = 1


def karouzos_ead(texts, vocab):
    """The paper's EAD, written from its description (whitespace words after deleting '.' and newlines)."""
    values = []
    for n in range(1, 6):
        words = [t.replace(".", "").replace("\n", "").split() for t in texts]
        grams = [tuple(w[i : i + n]) for w in words for i in range(len(w) - n + 1)]
        values.append(min(1.0, len(set(grams)) / (vocab * (1 - ((vocab - 1) / vocab) ** len(grams)))) if grams else 0)
    return sum(values) / 5


def test_profile_is_applied_and_named(lineage, prompts, tmp_path):
    out = tmp_path / "paper"
    results = run_eval(
        lineage[:2], prompts, out, metrics=["ead", "exact_dup_rate"], profile="karouzos2026", embedding_model=None
    )
    for model in results["models"]:
        expected = [karouzos_ead(group, len(WORDS)) for group in samples_of(out, model["name"])]
        assert model["per_prompt"]["all"]["ead"] == pytest.approx(expected), model["name"]
    assert "homogeneity" not in results and not (out / "homogeneity.png").exists()  # no embedder was asked for
    report = (out / "results.md").read_text()
    assert 'Metric profile: `karouzos2026` — "Where does output diversity collapse in post-training?"' in report
    assert "- EAD mean over n = 1..5: an order with no n-grams counts as 0, each order clamped to [0, 1]" in report
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["profile"] == "karouzos2026"
    assert saved["config"]["profile_settings"]["ead_units"] == "words"


def test_bad_settings_fail_before_sampling(lineage, prompts, tmp_path, capsys):
    """An unknown profile, a threshold that is no cosine, and the paper profile's embedder missing offline."""
    argv = ["eval", "--model", f"base={lineage[0][1]}", "--prompts", str(prompts), "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--profile", "karouzos"])
    # argparse's usage error (exit status 2), its last line naming the option and the value (not the valid
    # 'karouzos2026'); the wording around them is argparse's, not asserted
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert refused.value.code == 2 and "--profile" in last and re.search(r"\bkarouzos\b", last), last
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match=r"--cluster-threshold must be a cosine similarity in \[-1, 1\], got 1.5"):
        run_eval(lineage[:1], prompts, tmp_path / "y", cluster_threshold=1.5)
    with pytest.raises(ValueError, match=r"'karouzos2026' metric profile .*all-mpnet-base-v2.*--embedding-model"):
        run_eval(lineage[:1], prompts, tmp_path / "z", metrics=["sbert"], profile="karouzos2026")
    assert not (tmp_path / "z").exists()
