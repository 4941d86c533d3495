"""`divalign eval` promises: a model without a chat template is sampled on the raw prompt text (and refuses chat
prompts, naming the model), and `--backend auto` is the HF backend, with the very same samples as `--backend hf`,
even where vLLM is importable and a GPU is present: vLLM is opt-in (`--backend vllm`) until measured on a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GenerationMixin

import divalign.evaluation.sampling as sampling
from divalign.cli import main
from divalign.evaluation import evaluate_lineage
from divalign.smoke import build_tokenizer, save_tiny_model, write_jsonl


@pytest.fixture(scope="module")
def templated(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("templated") / "model")


@pytest.fixture(scope="module")
def untemplated(tmp_path_factory) -> Path:
    """The smoke model, saved with a tokenizer that has no chat template (a base model as published)."""
    directory = save_tiny_model(tmp_path_factory.mktemp("plain") / "model")
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    (directory / "tokenizer_config.json").unlink()
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(directory)
    assert AutoTokenizer.from_pretrained(directory).chat_template is None
    return directory


@pytest.fixture
def generate_inputs(monkeypatch) -> list[torch.Tensor]:
    """The `input_ids` every `generate` call receives."""
    seen: list[torch.Tensor] = []
    original = GenerationMixin.generate

    def recording(self, *args, **kwargs):
        seen.append(kwargs["input_ids"].clone())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    return seen


def test_model_without_a_chat_template_samples_the_raw_prompt(untemplated, templated, tmp_path, generate_inputs):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word w1"}, {"prompt": "say w2"}])
    results = evaluate_lineage(
        [("plain", str(untemplated)), ("chat", str(templated))],
        prompts,
        num_samples=2,
        max_new_tokens=3,
        metrics=["distinct_1"],
        backend="hf",
        device="cpu",
        n_bootstrap=10,
        out_dir=tmp_path / "out",
    )
    tokenizer = build_tokenizer()
    plain, chat = generate_inputs
    pad = tokenizer.pad_token_id
    rows = [[t for t in row.tolist() if t != pad] for row in plain][::2]  # each prompt's row once per sample (K = 2)
    assert rows == [tokenizer("say a word w1")["input_ids"], tokenizer("say w2")["input_ids"]]
    chat_rows = [tokenizer.decode([t for t in row.tolist() if t != pad]) for row in chat]
    assert chat_rows[0] == "user : say a word w1 </s> assistant :"  # the templated model gets its chat format
    assert [m["name"] for m in results["models"]] == ["plain", "chat"]
    assert len(results["models"][0]["per_prompt"]["all"]["distinct_1"]) == 2


def test_model_without_a_chat_template_refuses_chat_prompts(untemplated, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": [{"role": "user", "content": "say a word"}]}])
    with pytest.raises(ValueError, match="Model 'plain': its tokenizer has no chat template"):
        evaluate_lineage(
            [("plain", str(untemplated))],
            prompts,
            num_samples=2,
            max_new_tokens=2,
            metrics=["distinct_1"],
            backend="hf",
            device="cpu",
            out_dir=tmp_path / "out",
        )


def test_backend_auto_without_vllm_gives_the_hf_samples(templated, tmp_path):
    assert importlib.util.find_spec("vllm") is None  # this environment: the HF backend is the only one
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word w1"}, {"prompt": "say w2"}])
    written = {}
    for backend in ("auto", "hf"):
        out = tmp_path / backend
        argv = [
            "eval",
            "--model",
            f"m={templated}",
            "--prompts",
            str(prompts),
            "--samples",
            "4",
            "--max-new-tokens",
            "4",
            "--metrics",
            "distinct_1",
            "--bootstrap",
            "10",
            "--device",
            "cpu",
            "--backend",
            backend,
            "--out",
            str(out),
        ]
        assert main(argv) == 0
        written[backend] = (out / "samples" / "m.jsonl").read_text()
    assert written["auto"] == written["hf"]
    assert len({s for line in written["hf"].splitlines() for s in json.loads(line)["samples"]}) > 1


@pytest.mark.parametrize(
    ("backend", "vllm_installed", "gpu", "expected"),
    [
        ("auto", True, True, "hf"),  # vLLM is opt-in, even where it could run
        ("auto", True, False, "hf"),
        ("auto", False, True, "hf"),
        ("auto", False, False, "hf"),
        ("hf", True, True, "hf"),
        ("vllm", True, True, "vllm"),
    ],
)
def test_backend_auto_never_picks_vllm(monkeypatch, templated, backend, vllm_installed, gpu, expected):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "vllm" and vllm_installed else real_find_spec(name, *a),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    chosen = []
    monkeypatch.setattr(sampling, "VLLMSampler", lambda *args: chosen.append("vllm"))
    monkeypatch.setattr(sampling, "HFSampler", lambda *args: chosen.append("hf"))
    settings = sampling.SamplingSettings(num_samples=2, max_new_tokens=2)
    sampling.open_sampler("m", str(templated), sampling.EvalSampling(settings, backend=backend))
    assert chosen == [expected]


def test_the_backend_help_says_vllm_is_opt_in(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "auto (the default) is hf" in text and "vLLM is opt-in (--backend vllm) until it has been measured" in text


def test_backend_vllm_without_vllm_is_a_clear_error(templated, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a word"}])
    with pytest.raises(ValueError, match=r"backend 'vllm' requested but vllm is not installed"):
        evaluate_lineage(
            [("m", str(templated))],
            prompts,
            num_samples=2,
            max_new_tokens=2,
            metrics=["distinct_1"],
            backend="vllm",
            out_dir=tmp_path / "out",
        )
