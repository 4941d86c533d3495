"""`divalign eval`'s quality–diversity frontier on open-ended prompts: `--verifier`/`--quality` from a file in the
current directory, the reward registry's rewards by name and the reward model (`--quality reward_model:PATH`, a tiny
local one), `--reference`, and signs of life (a sampling bar per model × temperature, no loading bars). Offline, CPU.
"""

from __future__ import annotations

import importlib
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
from divalign.evaluation.sampling import Samples
from divalign.smoke import build_tokenizer, save_tiny_model, write_jsonl
from divalign.user_code import load_callable

REPO = Path(__file__).resolve().parents[1]
DIVALIGN = Path(sys.executable).parent / "divalign"  # the console script: its sys.path[0] is bin/, not the cwd
# the final draw of a sampling bar: "sampling m (T=0.7): 100%|████| 25/25 [00:00<00:00, 31.2token/s, 9/9 samples]"
FINAL_BAR = re.compile(
    r"sampling (?P<model>\S+) \(T=(?P<t>[\d.]+)\): 100%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+) "
    r"\[(?P<elapsed>\d\d:\d\d)<(?P<left>\d\d:\d\d), +(?P<rate>[\d.]+)token/s, "
    r"(?P<samples>\d+)/(?P<all>\d+) samples\]"
)
# the label of every draw of any tqdm bar, whoever draws it ("label:  40%|██  |"): the same layout FINAL_BAR finds
ANY_BAR = re.compile(r"(?P<label>[^\r\n]*?) *\d+%\|")


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
    other bar (transformers' "Loading weights" bar at each model load among them; found by tqdm's layout, which the
    sampling bars found show is the one drawn here, not by transformers' wording)."""
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
    labels = {m["label"] for m in ANY_BAR.finditer(done.stderr)}
    assert labels == {f"sampling {name} (T={t}):" for name in ("base", "sft") for t in ("0.7", "1", "1.3")}, labels


def test_a_module_nowhere_names_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"cannot import module 'not_here'.*a \.py file .*current directory"):
        load_callable("not_here:fn", "--quality")


def test_a_module_failing_at_import_is_named_with_its_file_and_line(tmp_path, monkeypatch):
    """An error while the user's module runs (or a module it imports that is missing) is theirs: named with the file
    and line, not taken for a module that is not there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "raising_at_import.py").write_text("x = 1\nraise RuntimeError('no GPU')\n")
    (tmp_path / "importing_missing.py").write_text("import not_installed_anywhere\n")
    with pytest.raises(ValueError) as error:
        load_callable("raising_at_import:fn", "--quality")
    assert str(error.value) == (
        "--quality 'raising_at_import:fn': importing module 'raising_at_import' raised RuntimeError at "
        f"{tmp_path / 'raising_at_import.py'}:2: no GPU"
    )
    with pytest.raises(ValueError, match=r"importing module 'importing_missing' raised ModuleNotFoundError at .*:1: "):
        load_callable("importing_missing:fn", "--quality")


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
        (
            "nonsense",
            r"'nonsense' is neither a reward of the registry \(.*math_answer.*\), reward_model:PATH, MODULE:FU",
        ),
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


# ---------------------------------------------------------------------------------------------------------------
# Bad quality functions and reward models (issue 30): clear errors naming the function, prompt and sample


def test_a_causal_lm_as_reward_model_is_refused_before_sampling(models, reward_model, tmp_path):
    """A causal LM has no classification head: transformers would initialise one at random (a different score at
    every load). A sequence-classification checkpoint with its head loads."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word"}])
    with pytest.raises(ValueError) as error:
        evaluate_lineage(
            [("m", str(models["base"]))], prompts, quality=f"reward_model:{models['base']}",
            metrics=["distinct_1"], out_dir=tmp_path / "out",
        )  # fmt: skip
    message = str(error.value)
    assert message.startswith(f"--quality 'reward_model:{models['base']}': ")
    assert f"reward model {models['base']}: its weights have no score.weight" in message
    assert "The checkpoint is a LlamaForCausalLM" in message and "AutoModelForSequenceClassification" in message
    assert not (tmp_path / "out").exists()
    from divalign.rewards.reward_model import RewardModelReward

    RewardModelReward(str(reward_model)).load()  # the real reward model: its head is in its weights


def quality_module(directory: Path, name: str, body: str) -> str:
    (directory / f"{name}.py").write_text(body)
    return name


def run_quality(tmp_path, quality, texts=None, out="out", **kwargs):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "first", "answer": "a"}, {"prompt": "second"}])
    return evaluate_lineage(
        [("m", "unused")], prompts, num_samples=2, metrics=["distinct_1"], quality=quality, n_bootstrap=10,
        out_dir=tmp_path / out, **kwargs,
    )  # fmt: skip


@pytest.fixture
def importable_here(tmp_path, monkeypatch):
    """Run in `tmp_path` with the import path as the `divalign` script has it (not the current directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return tmp_path


@pytest.mark.parametrize("flag", ["quality", "verifier"])
def test_a_module_with_a_syntax_error_is_named_with_its_line(importable_here, monkeypatch, flag):
    fixed_samplers(monkeypatch, {"m": [["a b", "c"], ["d", "e"]]})
    name = quality_module(importable_here, f"broken_{flag}", "def fn(completion, answer):\n    return (1\n")
    with pytest.raises(ValueError) as error:
        run_quality(importable_here, **{"quality": None, flag: f"{name}:fn"})
    message = str(error.value)
    assert f"'{name}:fn': module '{name}' has a syntax error at {importable_here / (name + '.py')}:2" in message
    assert not (importable_here / "out").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("    raise KeyError('topic')\n", r"raised KeyError on prompt 1 \('second'\), sample 0 \('d'\): 'topic'"),
        (
            "    return [1.0, 2.0]\n",
            r"returned list \[1.0, 2.0\] for prompt 1 \('second'\), sample 0 \('d'\); expected a",
        ),
        ("    return '0.5'\n", r"returned str '0.5' for prompt 1 \('second'\), sample 0 \('d'\); expected a number"),
        ("    return float('inf')\n", r"returned inf for prompt 1 \('second'\), sample 0 \('d'\); expected a finite"),
    ],
)
def test_a_quality_that_raises_or_returns_no_number_names_the_function_prompt_and_sample(
    importable_here, monkeypatch, body, expected
):
    """The first prompt's samples score 1; the second prompt's first sample triggers the fault."""
    fixed_samplers(monkeypatch, {"m": [["a b", "c"], ["d", "e"]]})
    name = quality_module(importable_here, f"faulty_{abs(hash(body))}", f"def fn(completion, answer):\n    if "
                          f"completion != 'd':\n        return 1\n{body}")  # fmt: skip
    with pytest.raises(ValueError, match=rf"^--quality '{name}:fn': '{name}:fn' {expected}"):
        run_quality(importable_here, f"{name}:fn")


@pytest.mark.parametrize("as_spec", [True, False], ids=["module:function", "callable"])
def test_a_verifier_that_raises_names_itself_the_sample_and_the_reference_answer(importable_here, monkeypatch, as_spec):
    """The verifier accepts the first prompt's samples and fails on the second prompt's first sample ('d'), whether
    named as MODULE:FUNCTION or handed in as a Python function."""
    fixed_samplers(monkeypatch, {"m": [["a b", "c"], ["d", "e"]]})
    name = quality_module(
        importable_here,
        "raising_verifier",
        "def check(completion, answer):\n    return {'a b': 1, 'c': 0}[completion]\n",
    )
    if as_spec:
        verifier, shown = f"{name}:check", f"{name}:check"
    else:
        sys.path.insert(0, str(importable_here))  # the fixture's own copy of the path: restored after the test
        verifier, shown = importlib.import_module(name).check, "check"
    with pytest.raises(ValueError) as error:
        run_quality(importable_here, None, verifier=verifier)
    assert str(error.value) == f"verifier '{shown}' raised KeyError on the sample 'd' (reference answer None): 'd'"
    assert not (importable_here / "out" / "results.json").exists()


def test_a_registry_reward_returning_a_string_is_refused(tmp_path, monkeypatch):
    """A reward of the registry goes through the same checks (here `format` patched to answer in strings)."""
    from divalign.rewards.format import FormatReward

    fixed_samplers(monkeypatch, {"m": [["a b", "c"], ["d", "e"]]})
    monkeypatch.setattr(FormatReward, "__call__", lambda self, prompts, completions, **kw: ["1"] * len(completions))
    with pytest.raises(ValueError, match=r"'format' returned str '1' for prompt 0 \('first'\), sample 0 \('a b'\)"):
        run_quality(tmp_path, "format")


def test_nan_scores_are_counted_in_a_note_and_results_json_is_strict(tmp_path, monkeypatch, capsys):
    """NaN (like None) is a sample without a score: left out of the means, counted in a note naming the function.
    results.json stays strict JSON (no bare NaN or Infinity) even with every score missing."""
    fixed_samplers(monkeypatch, {"m": [["a b", "c"], ["d", "e"]]})

    def half(completion, answer):
        return math.nan if completion in ("c", "d") else 2.0

    results = run_quality(tmp_path, half)
    assert results["models"][0]["per_prompt"]["quality_score"] == [2.0, 2.0]
    assert "quality 'half' gave no score (None or NaN) for 2 of 4 samples of m (T=1)" in capsys.readouterr().err

    results = run_quality(tmp_path, lambda completion, answer: math.nan, out="out_nan")
    assert "for 4 of 4 samples of m (T=1) (every one: its quality is n/a)" in capsys.readouterr().err
    text = (tmp_path / "out_nan" / "results.json").read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"results.json holds {name}"))
    assert strict["models"][0]["quality_score"]["mean"] is None
    assert "| m | n/a [n/a, n/a] |" in (tmp_path / "out_nan" / "results.md").read_text()


def test_results_json_writes_infinities_as_null(tmp_path):
    from divalign.evaluation.report import write_results

    results = {
        "config": {"metrics": ["distinct_1"], "num_prompts": 1, "num_samples": 2, "temperature": 1.0},
        "models": [{"name": "m", "metrics": {"distinct_1": {"mean": math.inf, "ci_low": -math.inf, "ci_high": 1.0}}}],
    }
    write_results(results, tmp_path)
    strict = json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert strict["models"][0]["metrics"]["distinct_1"] == {"mean": None, "ci_low": None, "ci_high": 1.0}


# ---------------------------------------------------------------------------------------------------------------
# --quality without --temperatures: next to diversity at one temperature


def test_quality_without_temperatures_is_reported_next_to_diversity(tmp_path, monkeypatch):
    """Per prompt, the mean of the samples' scores (words per sample), in results.json and in a results.md table
    with the diversity metrics; no frontier."""
    fixed_samplers(monkeypatch, {"m": [["a b", "c"], ["d e f", "g"]], "n": [["a", "a"], ["b", "b"]]})
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "first"}, {"prompt": "second"}])
    results = evaluate_lineage(
        [("m", "unused"), ("n", "unused")], prompts, num_samples=2, metrics=["distinct_1"], temperature=0.8,
        quality=lambda completion, answer: len(completion.split()), n_bootstrap=10, out_dir=tmp_path / "out",
    )  # fmt: skip
    m, n = results["models"]
    assert m["per_prompt"]["quality_score"] == [1.5, 2.0] and n["per_prompt"]["quality_score"] == [1.0, 1.0]
    assert m["quality_score"]["name"] == "<lambda>" and m["quality_score"]["mean"] == pytest.approx(1.75)
    assert "frontier" not in results and results["config"]["temperatures"] == [0.8]
    report = (tmp_path / "out" / "results.md").read_text()
    assert "## Quality (<lambda>) next to diversity at T=0.8" in report
    assert "| model | <lambda> | distinct_1 |" in report and "| m | 1.750 [" in report and "| n | 1.000 [" in report


# ---------------------------------------------------------------------------------------------------------------
# An eval that fails while scoring: the same command runs again


def test_an_eval_that_failed_while_scoring_is_replaced_by_the_rerun(importable_here, monkeypatch, capsys):
    """The quality raises on the second model: its samples so far stay (with a note saying where), and the same
    command, once the function is fixed, replaces them. A folder holding a file the evaluation did not write is
    refused and left as it is."""
    fixed_samplers(monkeypatch, {"m": [["a b", "c"], ["d", "e"]], "n": [["x", "y"], ["z", "w"]]})
    module = importable_here / "flaky.py"
    module.write_text("def fn(completion, answer):\n    if completion == 'x':\n        raise ValueError('no')\n"
                      "    return 1\n")  # fmt: skip
    prompts = write_jsonl(importable_here / "p.jsonl", [{"prompt": "first"}, {"prompt": "second"}])
    command = dict(num_samples=2, metrics=["distinct_1"], quality="flaky:fn", n_bootstrap=10, out_dir="out")
    with pytest.raises(ValueError, match="raised ValueError on prompt 0"):
        evaluate_lineage([("m", "unused"), ("n", "unused")], prompts, **command)
    out = importable_here / "out"
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["m.jsonl", "n.jsonl"]
    assert not (out / "results.json").exists()
    assert f"the samples written so far are in {Path('out') / 'samples'}" in capsys.readouterr().err

    module.write_text("def fn(completion, answer):\n    return 1\n")
    sys.modules.pop("flaky", None)
    results = evaluate_lineage([("m", "unused"), ("n", "unused")], prompts, **command)
    assert [m["quality_score"]["mean"] for m in results["models"]] == [1.0, 1.0]
    assert "replaced the partial output of an evaluation that failed in out" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["diversity.png", "results.json", "results.md", "samples"]

    # a finished evaluation, and a failed one with a file of the user's in it, are never replaced
    with pytest.raises(ValueError, match="already holds files"):
        evaluate_lineage([("m", "unused"), ("n", "unused")], prompts, **command)
    module.write_text("def fn(completion, answer):\n    raise ValueError('no')\n")
    sys.modules.pop("flaky", None)
    command["out_dir"] = "out2"
    with pytest.raises(ValueError, match="raised ValueError"):
        evaluate_lineage([("m", "unused"), ("n", "unused")], prompts, **command)
    (importable_here / "out2" / "samples" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds files"):
        evaluate_lineage([("m", "unused"), ("n", "unused")], prompts, **command)
    assert (importable_here / "out2" / "samples" / "notes.txt").read_text() == "mine"
    assert (importable_here / "out2" / "samples" / "m.jsonl").is_file()


def test_an_eval_still_writing_its_out_is_not_replaced(tmp_path):
    """The marker of an evaluation whose process is alive on this machine: its folder is not touched."""
    import socket

    from divalign.evaluation.output_dir import INCOMPLETE, check_out_dir

    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "m.jsonl").write_text("{}\n")
    marker = {"files": ["samples/m.jsonl"], "pid": os.getppid(), "host": socket.gethostname()}
    (out / INCOMPLETE).write_text(json.dumps(marker))
    with pytest.raises(ValueError, match=rf"--out {out} is being written by another divalign eval \(process "):
        check_out_dir(out, move_aside=False)
    assert (out / "samples" / "m.jsonl").read_text() == "{}\n"
