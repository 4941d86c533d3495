"""What recipes/pipelines/README.md promises beyond the basics of tests/test_pipeline.py: stage-name rules, the
reserved `eval` name, `--dry-run` with `--force-rerun`, a chat template changed on purpose (`chat_template_path`),
the lineage eval of adapter stages, QLoRA adapters merged into an unquantized base, and `adapters: continue` refused
on a 4-bit base.

Stages are "trained" by a launcher that copies the input checkpoint into the output dir and then alters it, as in
tests/test_pipeline.py; the QLoRA stage trains for real (bitsandbytes 4-bit runs on CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import divalign.launch.train as train
from divalign.cli import main as cli_main
from divalign.pipeline import DONE_MARKER, PipelineError, PipelineRunner, adapter_stage, load_pipeline, merge_adapter
from divalign.smoke import build_smoke_assets, write_jsonl
from pipelines import SFT_RECIPE, TOFU_RECIPE, CopyLauncher, flag, run, write_pipeline

REPO = Path(__file__).resolve().parents[1]
OTHER_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("assets"))




# Stage names


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("eval", "the name 'eval' is reserved for the lineage evaluation"),
        ("two words", "`name` must be a word of letters, digits"),
        ("-dash", "`name` must be a word of letters, digits"),
        ("a/b", "`name` must be a word of letters, digits"),
        (7, "`name` must be a word of letters, digits"),
    ],
)
def test_stage_name_rules(tmp_path, assets, name, message):
    path = write_pipeline(tmp_path, assets, stages=[{"name": name, "recipe": str(SFT_RECIPE)}])
    with pytest.raises(PipelineError, match=message):
        load_pipeline(path)


def test_a_stage_name_of_letters_digits_dot_dash_underscore_is_accepted(tmp_path, assets):
    spec = load_pipeline(write_pipeline(tmp_path, assets, stages=[{"name": "sft_2.v-1", "recipe": str(SFT_RECIPE)}]))
    assert spec.names == ["sft_2.v-1"] and spec.stages[0].output_dir == tmp_path / "runs" / "sft_2.v-1"


def test_eval_names_the_lineage_eval_only_when_there_is_one(tmp_path, assets):
    spec = load_pipeline(write_pipeline(tmp_path, assets))
    with pytest.raises(PipelineError, match="no stage named 'eval'; stages are sft, tofu"):
        PipelineRunner(spec, force_rerun=["eval"])
    prompts = write_jsonl(tmp_path / "probe.jsonl", [{"prompt": "say a word"}])
    with_eval = load_pipeline(write_pipeline(tmp_path, assets, eval={"prompts": str(prompts)}))
    assert PipelineRunner(with_eval, force_rerun=["eval"]).forced == {"eval"}  # the stages are kept


# --dry-run with --force-rerun


def test_dry_run_with_force_rerun_moves_and_launches_nothing(tmp_path, assets, capsys):
    path = write_pipeline(tmp_path, assets)
    run(path, CopyLauncher())
    runs = tmp_path / "runs"
    markers = {name: (runs / name / DONE_MARKER).read_text() for name in ("sft", "tofu")}
    listing = sorted(p.name for p in runs.iterdir())

    capsys.readouterr()
    assert cli_main(["pipeline", str(path), "--dry-run", "--force-rerun", "sft"]) == 0
    out = capsys.readouterr().out
    for name in ("sft", "tofu"):  # the forced stage and every stage after it
        assert f"stage '{name}': would move {runs / name} aside (--force-rerun)" in out
        assert f"stage '{name}': running: " in out
    assert "dry run: nothing was launched" in out
    assert sorted(p.name for p in runs.iterdir()) == listing  # nothing moved aside
    assert {name: (runs / name / DONE_MARKER).read_text() for name in markers} == markers

    launcher = CopyLauncher()
    run(path, launcher)
    assert launcher.stages == []  # the finished stages are still finished


# A chat template changed on purpose


def set_template(output: Path, command: list[str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(output)
    tokenizer.chat_template = OTHER_TEMPLATE
    tokenizer.save_pretrained(output)


def test_chat_template_path_makes_a_template_change_a_warning(tmp_path, assets):
    template = tmp_path / "template.jinja"
    template.write_text(OTHER_TEMPLATE)
    stages = [
        {"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"chat_template_path": str(template)}},
        {"name": "tofu", "recipe": str(TOFU_RECIPE)},
    ]
    path = write_pipeline(tmp_path, assets, stages=stages)
    calls = []

    def launcher(command, env):
        calls.append(command)
        return CopyLauncher(set_template if len(calls) == 1 else None)(command, env)

    logs: list[str] = []
    run(path, launcher, logs)
    warnings = [line for line in logs if "changed the tokenizer's chat_template" in line]
    assert len(warnings) == 1 and "warning: stage 'sft'" in warnings[0] and "chat_template_path" in warnings[0]
    # tofu inherited the new template from sft's output: compared with sft's, nothing drifted
    assert AutoTokenizer.from_pretrained(tmp_path / "runs" / "tofu").chat_template == OTHER_TEMPLATE
    assert all((tmp_path / "runs" / name / DONE_MARKER).is_file() for name in ("sft", "tofu"))

    rerun_logs: list[str] = []
    run(path, CopyLauncher(), rerun_logs)  # skipped stages are checked again: still a warning, not an error
    assert sum("skipped" in line for line in rerun_logs) == 2
    assert sum("warning: stage 'sft' changed the tokenizer's chat_template" in line for line in rerun_logs) == 1


# Adapters: the lineage eval, QLoRA merge, `continue` on a 4-bit base


def lora_adapter(output: Path, command: list[str]) -> None:
    """What a LoRA stage leaves: adapter weights and config only (non-zero B, so merging changes the weights)."""
    from peft import LoraConfig, get_peft_model

    for weights in output.glob("model*.safetensors"):
        weights.unlink()
    (output / "config.json").unlink()
    base = AutoModelForCausalLM.from_pretrained(flag(command, "--model_name_or_path"))
    lora = LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(output)


def hand_merged(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    """W + (lora_alpha / r) · B A for every adapted weight, from the saved files alone."""
    weights = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    adapted = 0
    for key, a in adapter.items():
        if ".lora_A." not in key:
            continue
        b = adapter[key.replace(".lora_A.", ".lora_B.")]
        target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        weights[target] = weights[target] + scaling * (b.float() @ a.float())
        adapted += 1
    assert adapted > 0
    return weights


def assert_weights(model_dir: Path, expected: dict[str, torch.Tensor]) -> None:
    got = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        torch.testing.assert_close(got[key], tensor, rtol=1e-5, atol=1e-6, msg=key)


def test_lineage_eval_merges_adapter_stages(tmp_path, assets):
    prompts = write_jsonl(tmp_path / "probe.jsonl", [{"prompt": "say a word"}, {"prompt": "say a word w1"}])
    eval_block = {
        "prompts": str(prompts),
        "samples": 2,
        "max_new_tokens": 3,
        "metrics": ["distinct_1"],
        "bootstrap": 10,
        "backend": "hf",
        "device": "cpu",
    }
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"use_peft": True}}]
    path = write_pipeline(tmp_path, assets, stages=stages, eval=eval_block)
    run(path, CopyLauncher(lora_adapter))

    sft = tmp_path / "runs" / "sft"
    assert (sft / "adapter_config.json").is_file() and not (sft / "config.json").exists()
    lineage = json.loads((tmp_path / "runs" / "lineage" / "results.json").read_text())
    assert [(m["name"], m["path"]) for m in lineage["models"]] == [
        ("base", str(assets / "model")),
        ("sft", str(sft / "merged")),
    ]
    assert_weights(sft / "merged", hand_merged(assets / "model", sft))
    samples = (tmp_path / "runs" / "lineage" / "samples" / "sft.jsonl").read_text().splitlines()
    assert len(samples) == 2


@pytest.fixture(scope="module")
def qlora_stage(assets, tmp_path_factory) -> Path:
    """A real QLoRA SFT stage: 4-bit NF4 base, LoRA adapters trained on CPU for 3 steps."""
    out = tmp_path_factory.mktemp("qlora") / "sft"
    flags = [
        "--model_name_or_path",
        str(assets / "model"),
        "--dataset_name",
        str(assets / "train.jsonl"),
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--save_strategy",
        "no",
        "--use_peft",
        "true",
        "--load_in_4bit",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--use_cpu",
        "true",
    ]
    train.run_stage(str(SFT_RECIPE), flags)
    return out


def test_qlora_adapter_merges_into_the_unquantized_base(assets, qlora_stage):
    assert (qlora_stage / "adapter_config.json").is_file()
    adapter = load_file(qlora_stage / "adapter_model.safetensors")
    assert any(t.abs().max() > 0 for k, t in adapter.items() if "lora_B" in k)  # trained: B left zero
    merged = merge_adapter(qlora_stage)
    assert merged == qlora_stage / "merged"
    config = AutoConfig.from_pretrained(merged)
    assert getattr(config, "quantization_config", None) is None  # a plain model, in the base's own dtype
    assert AutoModelForCausalLM.from_pretrained(merged).dtype == torch.float32
    assert_weights(merged, hand_merged(assets / "model", qlora_stage))
    assert (
        AutoTokenizer.from_pretrained(merged).chat_template == AutoTokenizer.from_pretrained(qlora_stage).chat_template
    )


def test_adapters_continue_on_a_4bit_base_is_refused(assets, qlora_stage, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "STAGES", dict(train.STAGES))  # adapter_stage.main rewraps the stage builders
    out = tmp_path / "cont"
    argv = [
        str(qlora_stage),
        str(TOFU_RECIPE),
        "--model_name_or_path",
        str(assets / "model"),
        "--dataset_name",
        str(assets / "train.jsonl"),
        "--output_dir",
        str(out),
        "--load_in_4bit",
        "true",
    ]
    assert adapter_stage.main(argv) == 1
    err = capsys.readouterr().err
    assert "`adapters: continue` on a 4/8-bit base is not supported" in err and "adapters: merge" in err
    assert not (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
