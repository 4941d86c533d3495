"""`divalign eval` end to end on two tiny local checkpoints (CPU, offline)."""

import gzip
import json
import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from divalign.cli import main
from divalign.diversity import DEFAULT_EVAL_METRICS
from divalign.diversity.answers import final_answer_matches
from divalign.evaluation import evaluate_lineage, load_prompts, parse_model_spec
from divalign.evaluation.prompts import load_verifier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", ":", "say", "a", "word"] + [f"w{i}" for i in range(30)]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def save_tiny_checkpoint(directory, seed):
    """A word-level tokenizer with a chat template and a ~20k-parameter Llama, saved like a real checkpoint."""
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


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


def test_eval_cli_writes_every_model_and_metric(lineage, prompts, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--prompts", str(prompts), "--samples", "3", "--max-new-tokens", "8", "--bootstrap", "100",
            "--backend", "hf", "--device", "cpu", "--out", str(out)]
    for name, path in lineage:
        argv += ["--model", f"{name}={path}"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["base", "sft"]
    assert results["config"]["metrics"] == list(DEFAULT_EVAL_METRICS)
    for model in results["models"]:
        assert set(model["metrics"]) == set(DEFAULT_EVAL_METRICS)
        for stats in model["metrics"].values():
            assert {"mean", "p10", "p90", "ci_low", "ci_high"} <= stats.keys()
        sbert = model["metrics"]["sbert"]
        assert sbert["ci_low"] <= sbert["mean"] <= sbert["ci_high"]
    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert all(f" {m} |" in header for m in DEFAULT_EVAL_METRICS)
    assert "| base |" in table and "| sft |" in table
    assert (out / "diversity.png").read_bytes()[:8] == PNG_MAGIC
    samples = [json.loads(line) for line in (out / "samples" / "sft.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(len(s["samples"]) == 3 for s in samples)
    assert "results.md" in capsys.readouterr().out


def test_evaluate_lineage_with_verifier_reports_quality_and_split(lineage, prompts, tmp_path):
    calls = []

    def verifier(completion, answer):  # deterministic and mixed: about half the samples count as correct
        calls.append(answer)
        return len(completion) % 2 == 0

    results = evaluate_lineage(
        lineage, prompts, num_samples=3, max_new_tokens=8, metrics=["distinct_1", "exact_dup_rate", "length_mean", "pass_at_1", "pass_at_k"],
        verifier=verifier, backend="hf", device="cpu", n_bootstrap=50, out_dir=tmp_path / "v",
    )
    base, sft = results["models"]
    assert len(calls) == 2 * 3 * 3  # once per sample, although pass@k and the correct-only split both need it
    assert calls[:3] == ["w1"] * 3  # the prompt's reference answer
    for model in (base, sft):  # quality = the verifier's verdicts on the written samples, averaged per prompt
        written = [json.loads(line)["samples"] for line in (tmp_path / "v" / "samples" / f"{model['name']}.jsonl").open()]
        accuracy = [sum(len(text) % 2 == 0 for text in group) / len(group) for group in written]
        assert model["quality"]["mean"] == pytest.approx(sum(accuracy) / len(accuracy))
        assert model["per_prompt"]["accuracy"] == pytest.approx(accuracy)
    assert base["metrics"]["pass_at_1"]["mean"] == pytest.approx(base["quality"]["mean"])
    assert set(base["correct_only"]) == {"distinct_1", "exact_dup_rate"}  # length is not a diversity score
    split = sft["split"]["distinct_1"]
    # the drops over the prompts where all four per-prompt values are defined, recomputed from those values
    per = [m["per_prompt"][kind]["distinct_1"] for kind in ("all", "correct_only") for m in (base, sft)]
    paired = [i for i in range(3) if not any(math.isnan(values[i]) for values in per)]
    base_all, sft_all, base_ok, sft_ok = (sum(values[i] for i in paired) / len(paired) for values in per)
    assert split["num_prompts"] == len(paired)
    assert split["drop_all"] == pytest.approx(base_all - sft_all)
    assert split["narrowing"] == pytest.approx(base_ok - sft_ok)
    assert "split" not in base
    assert len(sft["per_prompt"]["correct_only"]["distinct_1"]) == 3
    table = (tmp_path / "v" / "results.md").read_text()
    assert "Quality control vs narrowing" in table and "sft / distinct_1" in table


def test_scores_match_the_written_samples(lineage, prompts, tmp_path):
    """One-token samples, 8 per prompt: duplicates are common. The text metrics in results.json, recomputed by hand
    from the samples file, per prompt and on average; and the markdown table shows the same means."""
    out = tmp_path / "out"
    argv = ["eval", "--prompts", str(prompts), "--samples", "8", "--max-new-tokens", "1", "--bootstrap", "10",
            "--metrics", "exact_dup_rate", "compression_ratio", "--backend", "hf", "--device", "cpu", "--out", str(out)]
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


def test_quality_control_and_narrowing_against_hand_computed_values(lineage, tmp_path, monkeypatch):
    """distinct-1 by hand (unique words / words, per prompt):
    base all: 7/8, 4/8, 8/8    correct only: 3/4 (a b, a c), 3/6 (b x, b y, b x), 2/2 (q r)
    sft  all: 4/8, 1/8, 2/8    correct only: 3/6 (a b, a b, a c), 1/8 (b b x4), undefined (none correct)
    The split averages over prompts 0 and 1 only (prompt 2 has no correct sft sample):
    drop_all = (7/8 + 4/8)/2 − (4/8 + 1/8)/2 = 0.375, narrowing = (3/4 + 3/6)/2 − (3/6 + 1/8)/2 = 0.3125,
    quality_control = 0.0625."""
    import divalign.evaluation as evaluation

    samples = {"base": fixed_samples(BASE_SAMPLES), "sft": fixed_samples(SFT_SAMPLES)}
    monkeypatch.setattr(evaluation, "sample_model", lambda name, path, records, cfg: samples[name])
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say {a}", "answer": a}) + "\n" for a in "abq"))
    results = evaluate_lineage(
        lineage, prompts, num_samples=4, metrics=["distinct_1", "exact_dup_rate", "pass_at_1"],
        verifier=lambda text, answer: text.split()[0] == answer, n_bootstrap=10, out_dir=tmp_path / "out",
    )
    base, sft = results["models"]
    assert base["per_prompt"]["all"]["distinct_1"] == pytest.approx([7 / 8, 4 / 8, 8 / 8])
    assert sft["per_prompt"]["correct_only"]["distinct_1"][:2] == pytest.approx([3 / 6, 1 / 8])
    assert math.isnan(sft["per_prompt"]["correct_only"]["distinct_1"][2])
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
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", metrics=["pass_at_8"], num_samples=4, verifier=bool,
                         out_dir=tmp_path)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        evaluate_lineage(lineage[:1], tmp_path / "p.txt", temperature=0.0, out_dir=tmp_path)
    assert not (tmp_path / "results.json").exists()  # every check ran before sampling


def test_prompt_file_formats(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert [r.prompt for r in load_prompts(txt)] == ["first prompt", "second prompt"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    with pytest.raises(ValueError, match=f"{bad}:1.*'prompt'"):
        load_prompts(bad)
    assert parse_model_spec("sft=/ckpt/sft") == ("sft", "/ckpt/sft")
    assert parse_model_spec("/ckpt/dpo/") == ("dpo", "/ckpt/dpo/")


def test_verifier_spec():
    assert load_verifier("divalign.diversity.answers:final_answer_matches") is final_answer_matches
    with pytest.raises(ValueError, match="module:function"):
        load_verifier("no_colon")
    with pytest.raises(ValueError, match="no callable 'nope'"):
        load_verifier("divalign.diversity.answers:nope")
