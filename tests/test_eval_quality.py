"""`divalign eval`'s quality–diversity frontier on open-ended prompts: `--verifier`/`--quality` from a file in the
current directory, the reward registry's rewards by name and the reward model (`--quality reward_model:PATH`, a tiny
local one), `--reference`, and signs of life (a sampling bar per model × temperature, no loading bars). Offline, CPU.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import divalign.evaluation.lineage as lineage_module
from chat_checkpoints import save_reward_model
from divalign.evaluation import evaluate_lineage
from divalign.evaluation.prompts import load_callable
from divalign.evaluation.sampling import Samples
from divalign.smoke import build_tokenizer, save_tiny_model, write_jsonl

REPO = Path(__file__).resolve().parents[1]
DIVALIGN = Path(sys.executable).parent / "divalign"  # the console script: its sys.path[0] is bin/, not the cwd
# the final draw of a sampling bar: "sampling m (T=0.7): 100%|████| 25/25 [00:00<00:00, 31.2token/s, 9/9 samples]"
FINAL_BAR = re.compile(
    r"sampling (?P<model>\S+) \(T=(?P<t>[\d.]+)\): 100%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+) "
    r"\[(?P<elapsed>\d\d:\d\d)<(?P<left>\d\d:\d\d), +(?P<rate>[\d.]+)token/s, "
    r"(?P<samples>\d+)/(?P<all>\d+) samples\]"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: save_tiny_model(root / name, seed) for seed, name in enumerate(("base", "sft"))}


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    """A sequence-classification checkpoint (one logit) with the smoke tokenizer and its chat template."""
    return save_reward_model(tmp_path_factory.mktemp("reward_model"), build_tokenizer())


def read_samples(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]


def frontier_quality(results: dict, name: str) -> dict[str, list[float]]:
    model = next(m for m in results["models"] if m["name"] == name)
    return {t: point["quality"] for t, point in model["per_prompt"]["frontier"].items()}


def sample_file(name: str, t: str) -> str:
    return name if t == "1" else f"{name}@T{t}"


# ---------------------------------------------------------------------------------------------------------------
# A file in the current directory, and signs of life


def test_quality_and_verifier_from_files_in_the_current_directory(models, tmp_path):
    """The `divalign` script, run where `my_quality.py` and `my_verifier.py` lie, imports them as `python -m` would.
    Its stderr shows one finished sampling bar per model × temperature — 3 prompts × 3 samples, the rate, no time
    left, and the tokens generated (each completion's tokens and its stop token, from the written samples) — and no
    "Loading weights" bar."""
    (tmp_path / "my_quality.py").write_text("def words(completion, answer):\n    return len(completion.split())\n")
    (tmp_path / "my_verifier.py").write_text("def short(completion, answer):\n    return len(completion) < 8\n")
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word w1"}, {"prompt": "say w2"}, {"prompt": "a word"}])
    argv = [str(DIVALIGN), "eval", "--prompts", "p.jsonl", "--samples", "3", "--max-new-tokens", "4"]
    argv += ["--metrics", "distinct_1", "--temperatures", "0.7", "1.3", "--quality", "my_quality:words"]
    argv += ["--verifier", "my_verifier:short", "--bootstrap", "10", "--backend", "hf", "--device", "cpu"]
    argv += ["--model", f"base={models['base']}", "--model", f"sft={models['sft']}", "--out", "out"]
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["frontier"]["quality"] == "my_quality:words"
    for name in ("base", "sft"):
        for t, quality in frontier_quality(results, name).items():
            rows = read_samples(tmp_path / "out", sample_file(name, t))
            assert quality == pytest.approx([np.mean([len(s.split()) for s in r["samples"]]) for r in rows])
    assert "split" in results["models"][1]  # the verifier was imported too

    bars = {(m["model"], m["t"]): m for m in FINAL_BAR.finditer(done.stderr)}
    assert set(bars) == {(name, t) for name in ("base", "sft") for t in ("0.7", "1", "1.3")}
    for (name, t), bar in bars.items():
        assert (bar["samples"], bar["all"], bar["left"]) == ("9", "9", "00:00") and float(bar["rate"]) > 0
        ids = [i for r in read_samples(tmp_path / "out", sample_file(name, t)) for i in r["token_ids"]]
        tokens = sum(len(row) + (len(row) < 4) for row in ids)  # + the stop token, if any
        assert (int(bar["done"]), int(bar["total"])) == (tokens, tokens)
    assert "Loading weights" not in done.stderr


def test_a_module_nowhere_names_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"cannot import module 'not_here'.*a \.py file .*current directory"):
        load_callable("not_here:fn", "--quality")


# ---------------------------------------------------------------------------------------------------------------
# The reward model and --reference


def test_reward_model_quality_and_reference(models, reward_model, tmp_path):
    """`reward_model:PATH` scores every sample as a conversation (the prompt as a user turn, the completion as the
    assistant's) through the reward model's chat template; here recomputed sample by sample from the written samples.
    `--reference sft` takes the matched-diversity differences against sft, not the first model."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word"}, {"prompt": "say w3 w4"}])
    results = evaluate_lineage(
        [("base", str(models["base"])), ("sft", str(models["sft"]))],
        prompts,
        num_samples=4,
        max_new_tokens=5,
        temperatures=[0.6, 1.5],
        metrics=["distinct_1"],
        quality=f"reward_model:{reward_model}",
        reference="sft",
        backend="hf",
        device="cpu",
        n_bootstrap=20,
        out_dir=tmp_path / "out",
    )
    frontier = results["frontier"]
    assert (frontier["quality"], frontier["reference"], list(frontier["comparisons"])) == (
        "reward_model",
        "sft",
        ["base"],
    )
    assert results["config"]["reference"] == "sft"
    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    scorer = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()
    by_prompt = []
    for name in ("base", "sft"):
        for t, quality in frontier_quality(results, name).items():
            expected = []
            for row in read_samples(tmp_path / "out", sample_file(name, t)):
                scores = []
                for text in row["samples"]:
                    chat = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": text}]
                    encoded = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), return_tensors="pt",
                                        add_special_tokens=False)  # fmt: skip
                    with torch.no_grad():
                        scores.append(scorer(**encoded).logits[0, 0].item())
                expected.append(np.mean(scores))
            assert quality == pytest.approx(expected, abs=1e-5)
            by_prompt += quality
    assert len(set(np.round(by_prompt, 6))) > 1  # the scores differ: the comparison is not between constants
    report = (tmp_path / "out" / "results.md").read_text()
    assert "quality difference vs sft" in report and "| base |" in report


def test_reference_is_the_base_of_the_quality_control_split(tmp_path, monkeypatch):
    """With `reference='sft'` the split is taken against sft: base's entry holds the drop from sft to base (the
    hand-computed values of tests/test_eval_cli.py with the roles swapped: drop_all −0.375, narrowing −0.3125)."""
    texts = {
        "base": [["a b", "a c", "d e", "f g"], ["b x", "y z", "b y", "b x"], ["q r", "s t", "u v", "w z"]],
        "sft": [["a b", "a b", "a c", "h h"], ["b b", "b b", "b b", "b b"], ["s s", "s s", "t t", "s t"]],
    }
    fixed_samplers(monkeypatch, texts)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"say {a}", "answer": a} for a in "abq"])
    results = evaluate_lineage(
        [("base", "unused"), ("sft", "unused")],
        prompts,
        num_samples=4,
        metrics=["distinct_1"],
        verifier=lambda text, answer: text.split()[0] == answer,
        reference="sft",
        n_bootstrap=10,
        out_dir=tmp_path / "out",
    )
    base, sft = results["models"]
    assert "split" not in sft
    assert base["split"]["distinct_1"]["drop_all"] == pytest.approx(-0.375)
    assert base["split"]["distinct_1"]["narrowing"] == pytest.approx(-0.3125)
    assert "relative to sft" in (tmp_path / "out" / "results.md").read_text()


def fixed_samplers(monkeypatch, texts: dict[str, list[list[str]]]) -> None:
    """Stand-ins for the models: the same hand-written samples (one id per word) at any settings."""
    vocab: dict[str, int] = {}

    class FixedSampler:
        def __init__(self, name, path, sampling):
            self.name = name

        def sample(self, records, settings):
            groups = texts[self.name]
            ids = [[[vocab.setdefault(w, len(vocab)) for w in t.split()] for t in g] for g in groups]
            return Samples(texts=groups, token_ids=ids, vocab_size=64)

        def close(self):
            pass

    monkeypatch.setattr(lineage_module, "open_sampler", FixedSampler)
    monkeypatch.setattr(lineage_module, "check_model_path", lambda name, path: None)


# ---------------------------------------------------------------------------------------------------------------
# The registry's rewards by name


def test_registry_rewards_by_name_read_the_prompt_fields(tmp_path, monkeypatch):
    """`math_answer` (by name) reads each prompt's `answer` field as GRPO reads a dataset column: 1 for a marked
    final answer equal to it. `{"length_penalty": {"target_tokens": 2}}` (JSON settings) reads the completion's
    token ids: −min(1, (n − 2)/2). `{"format": {"boxed": false, "pattern": "w1"}}`: 1 when "w1" occurs."""
    texts = {"m": [["final answer: 3", "final answer: 4 w1", "3"], ["#### 7", "no", "final answer: 7 or not"]]}
    fixed_samplers(monkeypatch, texts)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "one", "answer": 3}, {"prompt": "two", "answer": "7"}])
    expected = {
        "math_answer": [[1, 0, 0], [1, 0, 0]],
        '{"length_penalty": {"target_tokens": 2}}': [[-0.5, -1.0, 0.0], [0.0, 0.0, -1.0]],
        '{"format": {"boxed": false, "pattern": "w1"}}': [[0, 1, 0], [0, 0, 0]],
    }
    for index, (spec, scores) in enumerate(expected.items()):
        results = evaluate_lineage(
            [("m", "unused")],
            prompts,
            num_samples=3,
            temperatures=[0.5, 2.0],
            metrics=["distinct_1"],
            quality=spec,
            n_bootstrap=10,
            out_dir=tmp_path / f"out{index}",
        )
        assert results["frontier"]["quality"] == (spec.split('"')[1] if spec.startswith("{") else spec)
        for quality in frontier_quality(results, "m").values():
            assert quality == pytest.approx([np.mean(s) for s in scores]), spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("darling", r"'darling' scores a sample against its rollout group"),
        ("reward_model", r"needs the setting\(s\) \['model'\]"),
        ("format:abc", r"only reward_model takes an argument"),
        ("nonsense", r"'nonsense' is neither a reward of the registry \(.*math_answer.*\), reward_model:PATH, MODULE:FU"),
        ('{"format": 3', r"invalid JSON"),
        ('{"format": {"size": 3}}', r"unknown setting\(s\) \['size'\] for 'format'"),
        ("math_answer", r"'math_answer' reads the column 'answer' or 'solution' of each prompt, but record 0 of the"),
        ("reward_model:/nowhere/rm", r"reward model /nowhere/rm does not exist \(a local path, not a Hub id\)"),
    ],
)
def test_bad_quality_fails_before_sampling(spec, message, models, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word"}])
    with pytest.raises(ValueError, match=message) as error:
        evaluate_lineage(
            [("m", str(models["base"]))],
            prompts,
            temperatures=[0.7, 1.3],
            quality=spec,
            metrics=["distinct_1"],
            out_dir=tmp_path / "out",
        )
    assert f"--quality {spec!r}" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_unknown_reference_fails_before_sampling(models, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word"}])
    with pytest.raises(ValueError, match=r"--reference 'dpo' is none of the models: \['base', 'sft'\]"):
        evaluate_lineage(
            [("base", str(models["base"])), ("sft", str(models["sft"]))], prompts, reference="dpo", out_dir=tmp_path
        )


def test_quality_from_python_is_any_callable(tmp_path, monkeypatch):
    """`evaluate_lineage(quality=fn)`: a per-sample `fn(completion, answer)`; None scores are left out of the mean."""
    fixed_samplers(monkeypatch, {"m": [["a", "b b", "c c c"]]})
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])

    def words_unless_one(completion, answer):
        count = len(completion.split())
        return None if count == 1 else count

    results = evaluate_lineage(
        [("m", "unused")], prompts, num_samples=3, temperatures=[0.5, 2.0], metrics=["distinct_1"],
        quality=words_unless_one, n_bootstrap=10, out_dir=tmp_path / "out",
    )  # fmt: skip
    assert results["frontier"]["quality"] == "words_unless_one"
    assert all(q == [2.5] for q in frontier_quality(results, "m").values())
    assert not math.isnan(results["models"][0]["frontier"][0]["quality"]["mean"])


def test_help_names_every_quality_spec_and_the_reference():
    done = subprocess.run([str(DIVALIGN), "eval", "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    text = " ".join(done.stdout.split())
    for part in ("reward_model:PATH", "a GRPO reward by name", "MODULE:FUNCTION", "a .py file in the current directory",
                 "--reference NAME", "(default: the first --model)"):  # fmt: skip
        assert part in text, part
