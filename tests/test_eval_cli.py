"""`divalign eval` end to end on two tiny local checkpoints (CPU, offline)."""

import gzip
import itertools
import json
import math
import shutil
import sys
from collections import Counter

import datasets
import numpy as np
import pytest
from transformers import (
    GenerationConfig,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.utils import GenerationMixin

from chat_checkpoints import save_chat_checkpoint
from divalign.cli import main
from divalign.diversity import DEFAULT_EVAL_METRICS
from divalign.diversity.answers import final_answer_matches
from divalign.evaluation import evaluate_lineage, load_prompts, parse_model_spec
from divalign.generation import SeededSampler, encode_prompt, prompt_seed
from divalign.user_code import load_verifier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", ":", "say", "a", "word"] + [f"w{i}" for i in range(30)]


def save_tiny_checkpoint(directory, seed):
    return save_chat_checkpoint(directory, WORDS, seed)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    return [("base", str(save_tiny_checkpoint(root / "base", 0))), ("sft", str(save_tiny_checkpoint(root / "sft", 1)))]


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "say a word", "answer": "w1"},
        {"prompt": [{"role": "user", "content": "say a word w2"}], "answer": "w2"},
        {"prompt": "say w3"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_samples(out, name):
    return [json.loads(line) for line in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]


def distinct_1(group_ids):
    """Unique tokens / all tokens over a prompt's samples, from the definition (NaN when there is no token)."""
    tokens = [t for ids in group_ids for t in ids]
    return len(set(tokens)) / len(tokens) if tokens else math.nan


def test_eval_cli_writes_every_model_and_metric(lineage, prompts, tmp_path, capsys, monkeypatch):
    received = []  # the processors `generate` builds, per call
    original = GenerationMixin._get_logits_processor

    def spy(self, generation_config, *args, **kwargs):
        processors = original(self, generation_config, *args, **kwargs)
        received.append((generation_config, [type(p) for p in processors], processors))
        return processors

    monkeypatch.setattr(GenerationMixin, "_get_logits_processor", spy)
    out = tmp_path / "out"
    argv = [
        "eval",
        "--prompts",
        str(prompts),
        "--samples",
        "3",
        "--max-new-tokens",
        "8",
        "--bootstrap",
        "100",
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--out",
        str(out),
    ]
    for name, path in lineage:
        argv += ["--model", f"{name}={path}"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["base", "sft"]
    assert results["config"]["metrics"] == list(DEFAULT_EVAL_METRICS)
    for model in results["models"]:
        assert set(model["metrics"]) == set(DEFAULT_EVAL_METRICS)
        samples = read_samples(out, model["name"])
        assert len(samples) == 3 and all(len(s["samples"]) == 3 == len(s["token_ids"]) for s in samples)
        # recomputed from the written samples, by definition
        per_prompt = [distinct_1(s["token_ids"]) for s in samples]
        assert model["per_prompt"]["all"]["distinct_1"] == pytest.approx(per_prompt)
        assert model["metrics"]["distinct_1"]["mean"] == pytest.approx(np.nanmean(per_prompt))
        dup = [sum(c for c in Counter(s["samples"]).values() if c > 1) / 3 for s in samples]
        assert model["metrics"]["exact_dup_rate"]["mean"] == pytest.approx(np.mean(dup))
        assert model["metrics"]["exact_dup_rate"]["mean"] < 1.0
    # what generate received: temperature 0.8 and top-p 0.9 only, then the seeded draw; nothing from the checkpoint
    assert len(received) == 2  # one generate call per model (3 prompts, batch size 8)
    for config, types, processors in received:
        assert types == [TemperatureLogitsWarper, TopPLogitsWarper, SeededSampler]
        assert processors[0].temperature == 0.8 and processors[1].top_p == 0.9
        assert config.repetition_penalty == 1.0 and config.no_repeat_ngram_size == 0 and not config.do_sample
    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert all(f" {m} |" in header for m in DEFAULT_EVAL_METRICS)
    assert "| base |" in table and "| sft |" in table
    assert (out / "diversity.png").read_bytes()[:8] == PNG_MAGIC
    assert "results.md" in capsys.readouterr().out


def test_checkpoint_generation_config_does_not_change_eval_samples(lineage, prompts, tmp_path):
    """The same weights with a generation_config.json asking for top_k=1 and repetition_penalty=1.5 (which `generate`
    would merge into the call: exact_dup_rate 1.0) sample exactly what the plain copy samples."""
    custom = tmp_path / "custom"
    shutil.copytree(lineage[1][1], custom)
    GenerationConfig(top_k=1, repetition_penalty=1.5, do_sample=True).save_pretrained(custom)
    common = dict(
        num_samples=4,
        max_new_tokens=8,
        metrics=["distinct_1", "exact_dup_rate"],
        backend="hf",
        device="cpu",
        n_bootstrap=10,
    )
    plain = evaluate_lineage([("m", lineage[1][1])], prompts, out_dir=tmp_path / "plain", **common)
    with_config = evaluate_lineage([("m", str(custom))], prompts, out_dir=tmp_path / "custom_out", **common)
    assert read_samples(tmp_path / "custom_out", "m") == read_samples(tmp_path / "plain", "m")
    assert with_config["models"][0]["metrics"] == plain["models"][0]["metrics"]
    assert plain["models"][0]["metrics"]["exact_dup_rate"]["mean"] < 1.0


def test_prompts_spanning_several_generate_batches(lineage, tmp_path):
    """7 prompts in batches of 3 (the last one short): every prompt sampled once, in order, with the samples a single
    batch gives (a sample's noise is keyed by its prompt, not by its batch)."""
    path = tmp_path / "many.txt"
    path.write_text("".join(f"say a word w{i}\n" for i in range(7)))
    common = dict(num_samples=2, max_new_tokens=6, metrics=["distinct_1"], backend="hf", device="cpu", n_bootstrap=10)
    batched = evaluate_lineage(lineage[:1], path, batch_size=3, out_dir=tmp_path / "b3", **common)
    whole = evaluate_lineage(lineage[:1], path, batch_size=8, out_dir=tmp_path / "b8", **common)
    samples = read_samples(tmp_path / "b3", "base")
    assert [s["prompt"] for s in samples] == [f"say a word w{i}" for i in range(7)]
    assert samples == read_samples(tmp_path / "b8", "base")
    assert batched["models"][0]["per_prompt"] == whole["models"][0]["per_prompt"]
    assert len({json.dumps(s["token_ids"]) for s in samples}) == 7  # seven different prompts, seven different draws


def test_evaluate_lineage_with_verifier_reports_quality_and_split(lineage, prompts, tmp_path):
    calls = []

    def verifier(completion, answer):  # deterministic and mixed: about half the samples count as correct
        calls.append(answer)
        return len(completion) % 2 == 0

    out = tmp_path / "v"
    results = evaluate_lineage(
        lineage,
        prompts,
        num_samples=4,
        max_new_tokens=8,
        metrics=["distinct_1", "exact_dup_rate", "length_mean", "pass_at_1", "pass_at_k"],
        verifier=verifier,
        backend="hf",
        device="cpu",
        n_bootstrap=50,
        out_dir=out,
    )
    base, sft = results["models"]
    assert len(calls) == 2 * 3 * 4  # once per sample, although pass@k and the correct-only split both need it
    assert calls[:4] == ["w1"] * 4  # the prompt's reference answer
    assert set(base["correct_only"]) == {"distinct_1", "exact_dup_rate"}  # length is not a diversity score
    assert "split" not in base
    # quality, correct-only diversity and the split, recomputed by hand from the written samples
    by_hand = {}
    for model in (base, sft):
        rows = read_samples(out, model["name"])
        correct = [[len(t) % 2 == 0 for t in row["samples"]] for row in rows]
        accuracy = [float(np.mean(c)) for c in correct]
        assert model["quality"]["mean"] == pytest.approx(np.mean(accuracy))
        assert model["metrics"]["pass_at_1"]["mean"] == pytest.approx(np.mean(accuracy))
        ok_ids = [
            [ids for ids, good in zip(row["token_ids"], c, strict=True) if good]
            for row, c in zip(rows, correct, strict=True)
        ]
        # a prompt counts in the correct-only metrics only with at least two correct samples
        by_hand[model["name"]] = (
            [distinct_1(r["token_ids"]) for r in rows],
            [distinct_1(ids) if len(ids) >= 2 else math.nan for ids in ok_ids],
        )
        assert model["per_prompt"]["correct_only"]["distinct_1"] == pytest.approx(
            by_hand[model["name"]][1], nan_ok=True
        )
    (base_all, base_ok), (sft_all, sft_ok) = by_hand["base"], by_hand["sft"]
    shared = [i for i in range(3) if not any(math.isnan(v[i]) for v in (base_all, base_ok, sft_all, sft_ok))]
    split = sft["split"]["distinct_1"]
    assert split["num_prompts"] == len(shared)
    if shared:
        mean = lambda values: float(np.mean([values[i] for i in shared]))  # noqa: E731
        assert split["drop_all"] == pytest.approx(mean(base_all) - mean(sft_all))
        assert split["narrowing"] == pytest.approx(mean(base_ok) - mean(sft_ok))
    table = (out / "results.md").read_text()
    assert "Quality control vs narrowing" in table and "sft / distinct_1" in table


def test_frontier_over_temperatures(lineage, prompts, tmp_path):
    """`--temperatures`: each model at each temperature; the frontier points are the per-prompt means of the written
    samples' accuracy and distinct_1, and the matched-diversity difference is read off the two interpolated curves."""

    def verifier(completion, answer):
        return len(completion.split()) <= 4

    out = tmp_path / "f"
    results = evaluate_lineage(
        lineage,
        prompts,
        num_samples=6,
        max_new_tokens=8,
        temperatures=[0.5, 1.5],
        metrics=["distinct_1", "ead"],
        verifier=verifier,
        backend="hf",
        device="cpu",
        n_bootstrap=200,
        out_dir=out,
    )
    assert results["config"]["temperatures"] == [0.5, 1.0, 1.5]  # the main temperature is on the frontier too
    frontier = results["frontier"]
    assert (frontier["diversity_metric"], frontier["quality"], frontier["reference"]) == (
        "distinct_1",
        "accuracy",
        "base",
    )
    curves = {}
    for model in results["models"]:
        points = []
        for point in model["frontier"]:
            t = point["temperature"]
            rows = read_samples(out, model["name"] + ("" if t == 1.0 else f"@T{t:g}"))
            accuracy = np.mean([np.mean([verifier(x, None) for x in r["samples"]]) for r in rows])
            diversity = np.nanmean([distinct_1(r["token_ids"]) for r in rows])
            assert point["quality"]["mean"] == pytest.approx(accuracy)
            assert point["diversity"]["mean"] == pytest.approx(diversity)
            points.append((diversity, accuracy))
        curves[model["name"]] = sorted(points)
    comparison = frontier["comparisons"]["sft"]

    def at(points, level):  # linear interpolation by hand, between the points no other point beats on both axes
        kept = [(x, y) for x, y in points if not any(a >= x and b >= y and (a, b) != (x, y) for a, b in points)]
        for (x0, y0), (x1, y1) in itertools.pairwise(sorted(kept)):
            if x0 <= level <= x1:
                return y0 if x1 == x0 else y0 + (y1 - y0) * (level - x0) / (x1 - x0)
        return math.nan

    for level, difference in zip(comparison["levels"], comparison["difference"], strict=True):
        assert difference == pytest.approx(at(curves["sft"], level) - at(curves["base"], level))
    assert (out / "frontier.png").read_bytes()[:8] == PNG_MAGIC
    table = (out / "results.md").read_text()
    assert "## Quality–diversity frontier" in table and "quality difference vs base" in table


def test_scores_match_the_written_samples(lineage, prompts, tmp_path):
    """One-token samples, 8 per prompt: duplicates are common. The text metrics in results.json, recomputed by hand
    from the samples file, per prompt and on average; and the markdown table shows the same means."""
    out = tmp_path / "out"
    argv = [
        "eval",
        "--prompts",
        str(prompts),
        "--samples",
        "8",
        "--max-new-tokens",
        "1",
        "--bootstrap",
        "10",
        "--metrics",
        "exact_dup_rate",
        "compression_ratio",
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    for name, path in lineage:
        argv += ["--model", f"{name}={path}"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    duplicate_rates = []
    for model in results["models"]:
        written = [json.loads(line)["samples"] for line in (out / "samples" / f"{model['name']}.jsonl").open()]
        assert [len(group) for group in written] == [8, 8, 8]
        duplicates = [sum(group.count(text) > 1 for text in group) / 8 for group in written]
        raw = ["\n".join(group).encode() for group in written]
        ratios = [len(r) / len(gzip.compress(r, mtime=0)) for r in raw]
        assert model["per_prompt"]["all"]["exact_dup_rate"] == pytest.approx(duplicates)
        assert model["per_prompt"]["all"]["compression_ratio"] == pytest.approx(ratios)
        mean = sum(duplicates) / 3
        assert model["metrics"]["exact_dup_rate"]["mean"] == pytest.approx(mean)
        row = next(line for line in table.splitlines() if line.startswith(f"| {model['name']} |"))
        assert row.split("|")[2].strip().startswith(f"{mean:.3f} [")
        duplicate_rates += duplicates
    assert 0 < sum(duplicate_rates) < len(duplicate_rates)  # neither no duplicate anywhere nor only duplicates


def fixed_samples(groups: list[list[str]]):
    """`Samples` of whitespace-tokenized texts: one id per distinct word."""
    from divalign.evaluation.sampling import Samples

    ids = {word: i for i, word in enumerate("abcdefghqrstuvwxyz")}
    return Samples(texts=groups, token_ids=[[[ids[w] for w in t.split()] for t in g] for g in groups], vocab_size=18)


# Per prompt (answers a, b, q), 4 samples; a sample is correct when its first word is the answer.
BASE_SAMPLES = [["a b", "a c", "d e", "f g"], ["b x", "y z", "b y", "b x"], ["q r", "s t", "u v", "w z"]]
SFT_SAMPLES = [["a b", "a b", "a c", "h h"], ["b b", "b b", "b b", "b b"], ["s s", "s s", "t t", "s t"]]


class OneHotEmbedder:
    """Each distinct text its own axis: two samples are identical (cosine 1) or orthogonal (cosine 0)."""

    def __init__(self) -> None:
        self.axes: dict[str, int] = {}

    def encode(self, texts):
        rows = np.zeros((len(texts), 32), dtype=np.float32)
        for row, text in enumerate(texts):
            rows[row, self.axes.setdefault(text, len(self.axes))] = 1.0
        return rows


VENDI_2_1 = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))  # samples x, y, x: eigenvalues 2/3, 1/3


def test_quality_control_and_narrowing_against_hand_computed_values(lineage, tmp_path, monkeypatch):
    """distinct-1 by hand (unique words / words, per prompt); a prompt counts in the correct-only metrics with at
    least two correct samples:
    base all: 7/8, 4/8, 8/8    correct only: 3/4 (a b, a c), 3/6 (b x, b y, b x), undefined (q r alone)
    sft  all: 4/8, 1/8, 2/8    correct only: 3/6 (a b, a b, a c), 1/8 (b b x4), undefined (none correct)
    The split averages over prompts 0 and 1 only:
    drop_all = (7/8 + 4/8)/2 − (4/8 + 1/8)/2 = 0.375, narrowing = (3/4 + 3/6)/2 − (3/6 + 1/8)/2 = 0.3125,
    quality_control = 0.0625.
    SBERT and Vendi with one axis per distinct text: two different samples give SBERT 1, Vendi 2; x, y, x gives
    SBERT 1 − 2/6 and Vendi exp(H(2/3, 1/3)); four equal samples SBERT 0, Vendi 1. The lone correct sample of base
    prompt 2 makes Vendi 1.0 and SBERT undefined: both are left out there, like every correct-only metric."""
    import divalign.evaluation.lineage as lineage_module

    samples = {"base": fixed_samples(BASE_SAMPLES), "sft": fixed_samples(SFT_SAMPLES)}

    class FixedSampler:  # stands in for the model: the same hand-written samples at any settings
        def __init__(self, name, path, sampling):
            self.name = name

        def sample(self, records, settings):
            return samples[self.name]

        def close(self):
            pass

    monkeypatch.setattr(lineage_module, "open_sampler", FixedSampler)
    monkeypatch.setattr(lineage_module, "load_profile_embedder", lambda *args, **kwargs: OneHotEmbedder())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say {a}", "answer": a}) + "\n" for a in "abq"))
    results = evaluate_lineage(
        lineage,
        prompts,
        num_samples=4,
        metrics=["distinct_1", "exact_dup_rate", "pass_at_1", "sbert", "vendi_1"],
        verifier=lambda text, answer: text.split()[0] == answer,
        n_bootstrap=10,
        out_dir=tmp_path / "out",
    )
    base, sft = results["models"]
    assert base["per_prompt"]["all"]["distinct_1"] == pytest.approx([7 / 8, 4 / 8, 8 / 8])
    assert sft["per_prompt"]["correct_only"]["distinct_1"][:2] == pytest.approx([3 / 6, 1 / 8])
    assert math.isnan(sft["per_prompt"]["correct_only"]["distinct_1"][2])
    base_ok, sft_ok = base["per_prompt"]["correct_only"], sft["per_prompt"]["correct_only"]
    assert base_ok["distinct_1"] == pytest.approx([3 / 4, 3 / 6, math.nan], nan_ok=True)
    assert base_ok["sbert"] == pytest.approx([1.0, 1 - 2 / 6, math.nan], nan_ok=True)
    assert base_ok["vendi_1"] == pytest.approx([2.0, VENDI_2_1, math.nan], nan_ok=True)  # not 1.0 on prompt 2
    assert sft_ok["sbert"] == pytest.approx([1 - 2 / 6, 0.0, math.nan], nan_ok=True)
    assert sft_ok["vendi_1"] == pytest.approx([VENDI_2_1, 1.0, math.nan], nan_ok=True)
    assert base["correct_only"]["vendi_1"]["mean"] == pytest.approx((2.0 + VENDI_2_1) / 2)
    assert base["correct_only"]["sbert"]["mean"] == pytest.approx((1.0 + 1 - 2 / 6) / 2)
    assert base["per_prompt"]["all"]["vendi_1"][2] == pytest.approx(4.0)  # all samples still count everywhere
    assert {name: split["num_prompts"] for name, split in sft["split"].items()} == {
        "distinct_1": 2, "exact_dup_rate": 2, "sbert": 2, "vendi_1": 2,
    }  # fmt: skip
    # all samples, prompts 0 and 1: base 4 distinct (Vendi 4) and x, x, y, z (eigenvalues 1/2, 1/4, 1/4: 2^1.5);
    # sft x, x, y, z and four equal samples (Vendi 1)
    assert sft["split"]["vendi_1"]["drop_all"] == pytest.approx((4.0 + 2**1.5) / 2 - (2**1.5 + 1.0) / 2)
    assert sft["split"]["vendi_1"]["narrowing"] == pytest.approx((2.0 + VENDI_2_1) / 2 - (VENDI_2_1 + 1.0) / 2)
    assert base["quality"]["mean"] == pytest.approx((2 / 4 + 3 / 4 + 1 / 4) / 3)
    assert sft["quality"]["mean"] == pytest.approx((3 / 4 + 4 / 4 + 0) / 3)
    assert sft["metrics"]["pass_at_1"]["mean"] == pytest.approx(sft["quality"]["mean"])
    assert sft["per_prompt"]["all"]["exact_dup_rate"] == pytest.approx([2 / 4, 4 / 4, 2 / 4])
    split = sft["split"]["distinct_1"]
    assert split["num_prompts"] == 2
    assert split["drop_all"] == pytest.approx(0.375)
    assert split["narrowing"] == pytest.approx(0.3125)
    assert split["quality_control"] == pytest.approx(0.0625)
    assert split["narrowing_share"] == pytest.approx(0.3125 / 0.375)
    # exact_dup_rate is a "lower is more diverse" score: its drop is the rise of the duplicate rate
    dup = sft["split"]["exact_dup_rate"]
    base_dup_all, sft_dup_all = (0 / 4 + 2 / 4) / 2, (2 / 4 + 4 / 4) / 2  # prompts 0 and 1
    assert dup["drop_all"] == pytest.approx(sft_dup_all - base_dup_all)


def test_missing_prompts_file_is_a_clear_error(lineage, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["eval", "--model", f"base={lineage[0][1]}", "--prompts", str(missing), "--out", str(tmp_path)]) == 2
    assert f"Prompts file not found: {missing}" in capsys.readouterr().err


def test_bad_model_path_is_a_clear_error(prompts, tmp_path, capsys):
    bad = tmp_path / "no-checkpoint"
    assert main(["eval", "--model", f"sft={bad}", "--prompts", str(prompts), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'sft'" in err and str(bad) in err


def test_empty_prompts_and_unknown_metric_are_errors(lineage, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match=f"{empty} contains no prompts"):
        load_prompts(empty)
    (tmp_path / "p.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="bogus"):
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", metrics=["bogus"], out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"pass_at_1.*verifier"):
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", metrics=["pass_at_1"], out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"pass_at_8.*--samples 4"):
        evaluate_lineage(
            lineage[:1], tmp_path / "p.txt", metrics=["pass_at_8"], num_samples=4, verifier=bool, out_dir=tmp_path
        )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", temperature=0.0, out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"--samples must be >= 2 .*got 1"):
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", num_samples=1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="a frontier needs a quality"):
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", temperatures=[0.7, 1.3], out_dir=tmp_path)
    with pytest.raises(ValueError, match="--frontier-metric must be one of the diversity metrics"):
        evaluate_lineage(
            lineage[:1],
            tmp_path / "p.txt",
            temperatures=[0.7, 1.3],
            verifier=bool,
            metrics=["distinct_1"],
            frontier_metric="ead",
            out_dir=tmp_path,
        )
    with pytest.raises(
        ValueError, match=r"^--frontier-metric belongs to a frontier: pass --temperatures T1 T2 \.\.\.$"
    ):
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", frontier_metric="distinct_1", out_dir=tmp_path)
    assert not (tmp_path / "results.json").exists()  # every check ran before sampling


def test_out_is_never_silently_overwritten(lineage, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("say a word\n")
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        f"base={lineage[0][1]}",
        "--prompts",
        str(tmp_path / "p.txt"),
        "--samples",
        "2",
        "--max-new-tokens",
        "3",
        "--metrics",
        "distinct_1",
        "--bootstrap",
        "10",
        "--backend",
        "hf",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    first = (out / "results.json").read_text()
    assert main(argv) == 2
    assert f"--out {out} already holds files" in capsys.readouterr().err
    assert (out / "results.json").read_text() == first
    assert main([*argv, "--move-aside"]) == 0
    (aside,) = tmp_path.glob("out.old-*")
    assert (aside / "results.json").read_text() == first and (out / "results.json").is_file()


def test_prompt_sources_share_one_loader(tmp_path):
    """What `divalign eval --prompts` and the callback's `prompts:` read: files, saved datasets, data folders."""
    convo = [{"role": "user", "content": "where is w1"}, {"role": "assistant", "content": "w1"}]
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert [r.prompt for r in load_prompts(txt)] == ["first prompt", "second prompt"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "q", "answer": 3}) + "\n\n" + json.dumps({"messages": convo}) + "\n")
    records = load_prompts(jsonl)
    assert [(r.prompt, r.answer) for r in records] == [("q", "3"), (convo[:1], None)]  # the reference turn dropped
    assert [r.columns for r in records] == [{"answer": 3}, {}]  # the other fields, as a reward reads them
    # a prompt-only conversation ending in an assistant turn is kept: TRL continues it
    (tmp_path / "c.json").write_text(json.dumps([{"prompt": convo}, "plain"]))
    assert [r.prompt for r in load_prompts(tmp_path / "c.json")] == [convo, "plain"]
    rows = [{"question": f"q{i}", "solution": f"s{i}"} for i in range(4)]
    datasets.Dataset.from_list(rows).to_csv(tmp_path / "p.csv")
    datasets.Dataset.from_list(rows).to_parquet(tmp_path / "p.parquet")
    for name in ("p.csv", "p.parquet"):
        records = load_prompts(tmp_path / name, column="question", limit=3)
        assert [(r.prompt, r.answer) for r in records] == [("q0", "s0"), ("q1", "s1"), ("q2", "s2")]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    assert [r.prompt for r in load_prompts(tmp_path / "saved", column="question")] == ["q0", "q1", "q2", "q3"]
    folder = tmp_path / "folder"
    folder.mkdir()
    datasets.Dataset.from_list(rows).to_json(folder / "test.jsonl")
    assert len(load_prompts(folder, column="question", answer_column="solution")) == 4


def test_prompt_errors_name_the_place(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n\n{"text": "no prompt field"}\n')
    with pytest.raises(ValueError, match=f"{bad}:3: has no 'prompt' or 'messages' field"):
        load_prompts(bad)
    (tmp_path / "broken.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: invalid JSON"):
        load_prompts(tmp_path / "broken.jsonl")
    (tmp_path / "empty_prompt.jsonl").write_text(json.dumps({"prompt": [{"content": "no role"}]}) + "\n")
    with pytest.raises(ValueError, match="'prompt' must be a non-empty string or a non-empty list of chat messages"):
        load_prompts(tmp_path / "empty_prompt.jsonl")
    rows = [{"prompt": "q"}]
    datasets.Dataset.from_list(rows).to_csv(tmp_path / "p.csv")
    with pytest.raises(ValueError, match=r"p.csv row 0: has no answer field 'gold'"):
        load_prompts(tmp_path / "p.csv", answer_column="gold")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"split 'test'.*no split 'test'; its splits: \['train'\]"):
        load_prompts(tmp_path / "saved")
    assert parse_model_spec("sft=/ckpt/sft") == ("sft", "/ckpt/sft")
    assert parse_model_spec("/ckpt/dpo/") == ("dpo", "/ckpt/dpo/")


def test_verifier_spec():
    verify = load_verifier("divalign.diversity.answers:final_answer_matches")
    for sample, answer in (("so the total is 18 apples", "18"), ("so the total is 17", "18")):
        assert verify(sample, answer) is final_answer_matches(sample, answer)
    with pytest.raises(ValueError, match="module:function"):
        load_verifier("no_colon")
    with pytest.raises(ValueError, match="no callable 'nope'"):
        load_verifier("divalign.diversity.answers:nope")


def test_vllm_backend_pins_the_same_settings_and_seeds_each_prompt(lineage, prompts, tmp_path, monkeypatch):
    """vLLM is not installed here: a stand-in module records what `divalign eval --backend vllm` asks of it."""
    import importlib.machinery
    import types

    from transformers import AutoTokenizer

    calls = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"] = kwargs

        def get_tokenizer(self):
            return AutoTokenizer.from_pretrained(lineage[0][1])

        def generate(self, inputs, params):
            calls["inputs"], calls["params"] = inputs, params
            row = types.SimpleNamespace
            # every completion: "w1 w2" then EOS (2) and a pad (0) that must be cut
            return [row(outputs=[row(token_ids=[11, 12, 2, 0])] * p.kwargs["n"]) for p in params]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    settings = dict(num_samples=3, max_new_tokens=5, temperature=0.9, top_p=0.95, seed=4, metrics=["distinct_1"])
    results = evaluate_lineage(lineage[:1], prompts, backend="vllm", n_bootstrap=10, out_dir=tmp_path / "v", **settings)
    assert calls["llm"] == {"model": lineage[0][1], "seed": 4, "generation_config": "vllm"}
    params = [p.kwargs for p in calls["params"]]
    assert [p["seed"] for p in params] == [prompt_seed(4, i) for i in range(3)]  # one seed per prompt
    assert len({p["seed"] for p in params}) == 3
    for p in params:
        assert (p["n"], p["temperature"], p["top_p"], p["top_k"], p["max_tokens"]) == (3, 0.9, 0.95, -1, 5)
        assert (p["min_p"], p["repetition_penalty"], p["presence_penalty"], p["frequency_penalty"]) == (0, 1, 0, 0)
        assert p["min_tokens"] == 0 and p["stop_token_ids"] == [2]
    # the prompts pre-tokenised through the chat template, exactly as the HF backend renders them
    tokenizer = AutoTokenizer.from_pretrained(lineage[0][1])
    assert calls["inputs"][0]["prompt_token_ids"] == encode_prompt("say a word", tokenizer)
    samples = read_samples(tmp_path / "v", "base")
    assert samples[0]["token_ids"] == [[11, 12]] * 3 and results["models"][0]["metrics"]["distinct_1"]["mean"] == 2 / 6
