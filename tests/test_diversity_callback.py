"""DiversityCallback + DiversityConfig: cadence, W&B offline logging, unchanged training, fail-fast errors, config
validation, and (slow) DeepSpeed ZeRO-3 over 2 CPU processes with an uneven prompt split. All offline."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from divalign import sampling_progress
from divalign.callback import DiversityCallback, DiversityConfig, load_probe_records
from divalign.callback.callback import preserve_rng_state
from divalign.generation import render_prompt

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from diversity_tiny import PROMPTS, InterruptAt, build_tokenizer, save_tiny_policy, train_records, write_probe_prompts  # noqa: E402

from launching import accelerate_launch, cpu_accelerate_config, cpu_environment  # noqa: E402

FAST_METRICS = ["distinct_1", "distinct_2", "ead", "exact_dup_rate", "length_mean"]
# the callback's sampling bar as tqdm draws it: "diversity eval, step 2:  50%|███  | 3/6 [00:01<00:01, ...]"
PROGRESS_BAR = re.compile(
    r"diversity eval, step (?P<step>\d+): +\d+%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+) \[[^\]]*?"
    r"(?P<samples>\d+)/(?P<all_samples>\d+) samples\]"
)


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture
def probe_file(tmp_path: Path) -> Path:
    return write_probe_prompts(tmp_path / "probe.jsonl")


def diversity_config(probe: Path | str, **overrides) -> DiversityConfig:
    settings = dict(
        prompts=str(probe),
        every_steps=2,
        samples_per_prompt=3,
        max_new_tokens=6,
        table_every_steps=0,
        metrics=FAST_METRICS,
        embedding_model=None,
        batch_size=2,
    )
    settings.update(overrides)
    return DiversityConfig(**settings)


def make_trainer(policy: Path, out: Path, callback: DiversityCallback | None, **args) -> SFTTrainer:
    settings = dict(
        output_dir=str(out),
        max_steps=5,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        disable_tqdm=True,
    )
    settings.update(args)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        args=SFTConfig(**settings),
        train_dataset=datasets.Dataset.from_list(train_records(24)),
        processing_class=AutoTokenizer.from_pretrained(policy),
    )
    if callback is not None:
        trainer.add_callback(callback.bind(trainer))
    return trainer


def diversity_steps(history: list[dict]) -> list[int]:
    return [entry["step"] for entry in history if any(k.startswith("diversity/") for k in entry)]


def loss_entries(history: list[dict]) -> list[tuple]:
    return [(e["step"], e["loss"], e["grad_norm"], e["entropy"]) for e in history if "loss" in e]


# ---------------------------------------------------------------------------------------------------------------
# training runs


def test_logs_at_step_zero_every_steps_and_last_step(policy_dir: Path, probe_file: Path, tmp_path: Path):
    callback = DiversityCallback(
        diversity_config(probe_file, metrics=[*FAST_METRICS, "sbert"], embedding_model="all-MiniLM-L6-v2")
    )
    trainer = make_trainer(policy_dir, tmp_path / "out", callback, max_steps=5)
    trainer.train()
    history = trainer.state.log_history

    assert diversity_steps(history) == [0, 2, 4, 5]  # step 0 = base model; 5 = last step, off the cadence
    first = next(e for e in history if "diversity/distinct_1" in e)
    for key in ("distinct_1", "distinct_1_p10", "distinct_1_p90", "distinct_1_across", "ead", "sbert", "length_mean"):
        assert np.isfinite(first[f"diversity/{key}"]), key
    # Training logging is undisturbed: a loss entry (with TRL's own entropy metric) at every logging step.
    assert [e[0] for e in loss_entries(history)] == [1, 2, 3, 4, 5]
    assert not any("entropy" in e for e in history if "diversity/distinct_1" in e)
    # All 3 probe prompts sampled, K samples each, through the chat template.
    assert len(callback.last_samples["samples"]) == 3
    assert all(len(group) == 3 for group in callback.last_samples["samples"])
    assert callback.last_samples["prompts"][0] == "<|user|> tell me about the cat <eos> <|assistant|>"
    assert trainer.model.training  # handed back in train mode


def test_main_process_shows_a_bar_per_evaluation_unless_tqdm_is_off(
    policy_dir: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    """Steps 0 and 2 each draw one sampling bar over the 3 prompts × 3 samples, its tokens counted against a budget
    of 9 × 6 new tokens; `disable_tqdm` (the trainer's own switch for its bars) turns it off."""
    # draw every update, however fast the tiny model is (tqdm reads its TQDM_* variables once, at import)
    monkeypatch.setattr(sampling_progress, "tqdm", functools.partial(tqdm, mininterval=0, miniters=1))
    make_trainer(policy_dir, tmp_path / "on", DiversityCallback(diversity_config(probe_file)), max_steps=2,
                 disable_tqdm=False).train()  # fmt: skip
    bars = list(PROGRESS_BAR.finditer(capsys.readouterr().err))
    assert {(m["step"], m["all_samples"]) for m in bars} == {("0", "9"), ("2", "9")}
    assert {m["samples"] for m in bars} == {"0", "6", "9"}  # batches of 2 prompts: 6 samples, then the last 3
    assert next((m["done"], m["total"]) for m in bars if m["samples"] == "0") == ("0", str(9 * 6))
    make_trainer(policy_dir, tmp_path / "off", DiversityCallback(diversity_config(probe_file)), max_steps=2).train()
    assert "diversity eval" not in capsys.readouterr().err


def test_training_trajectory_unchanged(policy_dir: Path, probe_file: Path, tmp_path: Path):
    # The tiny policy has attention dropout and the sampler shuffles, so any RNG the evaluation leaked would show.
    baseline = make_trainer(policy_dir, tmp_path / "off", None, max_steps=4)
    baseline.train()
    callback = DiversityCallback(diversity_config(probe_file, every_steps=1))
    watched = make_trainer(policy_dir, tmp_path / "on", callback, max_steps=4)
    watched.train()

    assert diversity_steps(watched.state.log_history) == [0, 1, 2, 3, 4]
    assert loss_entries(watched.state.log_history) == loss_entries(baseline.state.log_history)
    for name, param in baseline.model.named_parameters():
        torch.testing.assert_close(param, watched.model.get_parameter(name), rtol=0, atol=0)


def test_works_with_dpo_trainer(policy_dir: Path, probe_file: Path, tmp_path: Path):
    from trl import DPOConfig, DPOTrainer

    def turn(role: str, text: str) -> list[dict]:
        return [{"role": role, "content": text}]

    rows = [
        {"prompt": turn("user", PROMPTS[i % 5]), "chosen": turn("assistant", "the cat sat on the mat"),
         "rejected": turn("assistant", "a dog ran")}
        for i in range(12)
    ]  # fmt: skip
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=3, per_device_train_batch_size=4, logging_steps=1,
                     report_to="none", use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True)  # fmt: skip
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(policy_dir),
    )
    trainer.add_callback(DiversityCallback(diversity_config(probe_file), trainer=trainer))
    trainer.train()

    history = trainer.state.log_history
    assert diversity_steps(history) == [0, 2, 3]
    # DPO's own metrics stay in the training entries (its `log` also merges and clears `_metrics`).
    assert [e["step"] for e in history if "rewards/chosen" in e and "loss" in e] == [1, 2, 3]


def test_wandb_offline_run_has_diversity_curves_and_table(
    policy_dir: Path, probe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "divalign-test")
    for setting in (
        "WANDB_X_DISABLE_STATS",
        "WANDB_X_DISABLE_META",
        "WANDB_X_DISABLE_MACHINE_INFO",
        "WANDB_DISABLE_GIT",
    ):
        monkeypatch.setenv(setting, "true")  # skip system probes: keeps the test fast on a busy CPU
    callback = DiversityCallback(diversity_config(probe_file, table_every_steps=2))
    trainer = make_trainer(policy_dir, tmp_path / "out", callback, max_steps=2, report_to=["wandb"])
    try:
        trainer.train()
    finally:
        wandb.finish()
        wandb.teardown()  # stops the wandb-core service, which flushes the run file (finish alone may return early)

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (records,) = run_dir.glob("run-*.wandb")  # wandb 0.31 writes no wandb-summary.json offline
    data = records.read_bytes()
    # diversity/* in a section of its own (divalign.dashboards), not under the Trainer integration's "train/"
    for key in ("diversity/distinct_2", "diversity/ead_across", "diversity/samples", "train/loss"):
        assert key.encode() in data, key
    assert b"train/diversity/" not in data
    tables = list((run_dir / "files" / "media" / "table" / "diversity").glob("samples_*.table.json"))
    assert len(tables) == 2  # steps 0 and 2
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["step", "prompt", "sample_index", "sample"]
    assert len(table["data"]) == 3 * 3


def test_checkpoint_generation_config_does_not_change_the_samples(policy_dir: Path, probe_file: Path, tmp_path: Path):
    """The same weights with a generation_config.json asking for top_k=1 and repetition_penalty=1.5: `generate` would
    merge both into the call (greedy-like duplicates); the callback's samples must not change."""
    from transformers import GenerationConfig

    custom = tmp_path / "custom_policy"
    shutil.copytree(policy_dir, custom)
    GenerationConfig(top_k=1, repetition_penalty=1.5, do_sample=True).save_pretrained(custom)
    runs = {}
    for name, policy in (("plain", policy_dir), ("custom", custom)):
        callback = DiversityCallback(diversity_config(probe_file, every_steps=100, evaluate_last_step=False))
        trainer = make_trainer(policy, tmp_path / name, callback, max_steps=1)
        trainer.train()
        runs[name] = (callback.last_samples, [e for e in trainer.state.log_history if "diversity/distinct_1" in e])
    assert runs["custom"][0]["step"] == 0
    assert runs["custom"][0]["samples"] == runs["plain"][0]["samples"]
    assert runs["custom"][0]["token_ids"] == runs["plain"][0]["token_ids"]
    assert runs["custom"][1] == runs["plain"][1]
    # top_k=1 would have made every prompt's K samples identical
    assert runs["custom"][1][0]["diversity/exact_dup_rate"] < 1.0
    assert AutoModelForCausalLM.from_pretrained(custom).generation_config.top_k == 1  # the checkpoint is untouched


def test_resumed_run_continues_the_diversity_curves(policy_dir: Path, probe_file: Path, tmp_path: Path):
    """Killed after step 3 (last checkpoint: step 2) and resumed: every cadence step logged once, none missing, with
    the uninterrupted run's values (the trajectory after resume is the same, and so is the sampling noise)."""
    checkpoints = dict(save_strategy="steps", save_steps=2, max_steps=6)
    whole = make_trainer(policy_dir, tmp_path / "whole", DiversityCallback(diversity_config(probe_file)), **checkpoints)
    whole.train()

    killed = make_trainer(
        policy_dir, tmp_path / "killed", DiversityCallback(diversity_config(probe_file)), **checkpoints
    )
    killed.add_callback(InterruptAt(3))
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = make_trainer(
        policy_dir, tmp_path / "killed", DiversityCallback(diversity_config(probe_file)), **checkpoints
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "killed" / "checkpoint-2"))

    def curves(history: list[dict]) -> list[dict]:
        keep = [e for e in history if "diversity/distinct_1" in e]
        return [{k: v for k, v in e.items() if k.startswith("diversity/") or k == "step"} for e in keep]

    assert diversity_steps(resumed.state.log_history) == [0, 2, 4, 6]
    assert curves(resumed.state.log_history) == curves(whole.state.log_history)
    assert loss_entries(resumed.state.log_history) == loss_entries(whole.state.log_history)


# ---------------------------------------------------------------------------------------------------------------
# fail fast


def test_missing_prompts_file_fails_before_first_step(policy_dir: Path, tmp_path: Path):
    callback = DiversityCallback(diversity_config(tmp_path / "nope.jsonl"))
    trainer = make_trainer(policy_dir, tmp_path / "out", callback)
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_bad_embedding_model_fails_before_first_step(policy_dir: Path, probe_file: Path, tmp_path: Path):
    config = diversity_config(probe_file, metrics=["sbert"], embedding_model=str(tmp_path / "no-such-embedder"))
    trainer = make_trainer(policy_dir, tmp_path / "out", DiversityCallback(config))
    with pytest.raises((FileNotFoundError, ValueError), match="no-such-embedder"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_unbound_callback_fails_before_first_step(policy_dir: Path, probe_file: Path, tmp_path: Path):
    trainer = make_trainer(policy_dir, tmp_path / "out", None)
    trainer.add_callback(DiversityCallback(diversity_config(probe_file)))
    with pytest.raises(RuntimeError, match=r"bind\(trainer\)"):
        trainer.train()
    assert trainer.state.global_step == 0


# ---------------------------------------------------------------------------------------------------------------
# DiversityConfig


def test_from_dict_maps_the_recipe_block():
    config = DiversityConfig.from_dict(
        {"prompts": "probe.jsonl", "every_steps": 50, "temperature": 1, "metrics": ["distinct_2", "sbert"]}
    )
    assert (config.prompts, config.every_steps, config.temperature) == ("probe.jsonl", 50, 1)
    assert config.metrics == ["distinct_2", "sbert"]
    assert config.samples_per_prompt == 8 and config.embedding_model == "auto" and config.profile == "divalign"
    assert "sbert" in DiversityConfig(prompts="p.txt").metrics  # DEFAULT_TRAINING_METRICS
    assert DiversityConfig(prompts=Path("probe.txt")).prompts == "probe.txt"


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"prompts": "p.txt", "every_step": 5}, r"Unknown key\(s\).*'every_step'.*valid keys:.*'every_steps'"),
        ({"every_steps": 5}, "needs `prompts`"),
        ({"prompts": "p.txt", "samples_per_prompt": 1}, "samples_per_prompt must be >= 2"),
        ({"prompts": "p.txt", "every_steps": 0}, "every_steps must be >= 1"),
        ({"prompts": "p.txt", "temperature": 0.0}, "temperature must be > 0"),
        ({"prompts": "p.txt", "top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"prompts": "p.txt", "table_every_steps": -1}, "table_every_steps must be >= 0"),
        ({"prompts": "p.txt", "num_prompts": "32"}, "num_prompts must be of type int"),
        ({"prompts": "p.txt", "max_new_tokens": True}, "max_new_tokens must be of type int"),
        ({"prompts": "p.txt", "temperature": "hot"}, "temperature must be of type float"),
        ({"prompts": "p.txt", "metrics": "distinct_2"}, "must be a list"),
        ({"prompts": "p.txt", "metrics": ["distinct_9"]}, r"Unknown diversity metric\(s\) \['distinct_9'\]"),
        ({"prompts": "p.txt", "metrics": ["pass_at_1"]}, "verifier or an NLI model"),
        ({"prompts": "p.txt", "metrics": ["vendi_1"], "embedding_model": None}, "need diversity.embedding_model"),
        ({"prompts": ""}, "empty string"),
        ({"prompts": "p.txt", "seed": -1}, "seed must be >= 0"),
        ({"prompts": "p.txt", "batch_size": 0}, "batch_size must be >= 1"),
        ({"prompts": "p.txt", "ds3_gather_for_generation": "yes"}, "ds3_gather_for_generation must be of type bool"),
        (["prompts"], "must be a mapping"),
    ],
)
def test_from_dict_rejects_bad_blocks(block, match):
    with pytest.raises(ValueError, match=match):
        DiversityConfig.from_dict(block)


# ---------------------------------------------------------------------------------------------------------------
# prompts, sharding, RNG


def probe_prompts(config: DiversityConfig) -> list:
    return [record.prompt for record in load_probe_records(config)]


def test_load_probe_prompts_from_files_and_datasets(tmp_path: Path):
    convo = [{"role": "user", "content": "where is the dog"}, {"role": "assistant", "content": "the dog"}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "what is blue"}) + "\n" + json.dumps({"messages": convo}) + "\n")
    assert probe_prompts(DiversityConfig(prompts=str(jsonl))) == ["what is blue", convo[:1]]

    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\nthree\n")
    assert probe_prompts(DiversityConfig(prompts=str(txt), num_prompts=2)) == ["one", "two"]

    saved = tmp_path / "ds"
    rows = [{"question": f"q{i}", "answer": "a"} for i in range(4)]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(saved))
    config = DiversityConfig(prompts=str(saved), prompts_split="test", prompts_column="question", num_prompts=3)
    assert probe_prompts(config) == ["q0", "q1", "q2"]
    with pytest.raises(ValueError, match="has no 'prompt' or 'messages' field"):
        probe_prompts(DiversityConfig(prompts=str(saved)))
    with pytest.raises(ValueError, match="split 'validation'"):
        probe_prompts(DiversityConfig(prompts=str(saved), prompts_split="validation"))


def test_render_prompt_uses_chat_template_or_plain_text():
    tokenizer = build_tokenizer()
    assert render_prompt("what is blue", tokenizer) == "<|user|> what is blue <eos> <|assistant|>"
    tokenizer.chat_template = None
    assert render_prompt("what is blue", tokenizer) == "what is blue"
    with pytest.raises(ValueError, match="chat template"):
        render_prompt([{"role": "user", "content": "hi"}], tokenizer)


def test_preserve_rng_state_restores_all_generators():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    with preserve_rng_state():
        torch.manual_seed(99)
        torch.rand(5), random.random(), np.random.rand()
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


# ---------------------------------------------------------------------------------------------------------------
# 1 process vs 2 processes: DDP, and DeepSpeed ZeRO-3 gathered and lock-step


def _zero3_config(tmp_path: Path) -> Path:
    """An accelerate config for DeepSpeed ZeRO-3 over 2 CPU processes (launched by `tests/launching.py`).

    DeepSpeed on CPU settings that work (DeepSpeed 0.19, accelerate 1.15, transformers 5):
    - accelerate config `distributed_type: DEEPSPEED` with a `deepspeed_config_file` and no `use_cpu` (it silently
      disables DeepSpeed) and no `mixed_precision` key (accelerate refuses it next to a config file);
    - DeepSpeed config: ZeRO stage 3, batch sizes "auto", `"zero_force_ds_cpu_optimizer": false` so the Trainer's
      torch AdamW is accepted; `stage3_param_persistence_threshold: 0`, or a tiny model is not partitioned at all;
    - env `DS_ACCELERATOR=cpu`, `CUDA_VISIBLE_DEVICES=""`; trainer args `ddp_backend="gloo"`, `bf16=False`;
    - the first run JIT-builds DeepSpeed's `deepspeed_shm_comm_op` into ~/.cache/torch_extensions (about 2 min once).
    """
    ds_config = tmp_path / "ds_zero3.json"
    ds_config.write_text(
        json.dumps(
            {
                # every parameter partitioned, even the tiny policy's (DeepSpeed keeps small ones whole by default)
                "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "train_batch_size": "auto",
                "gradient_clipping": "auto",
                "zero_force_ds_cpu_optimizer": False,
            }
        )
    )
    accelerate_config = tmp_path / "accelerate.yaml"
    accelerate_config.write_text(
        "compute_environment: LOCAL_MACHINE\n"
        "distributed_type: DEEPSPEED\n"
        "deepspeed_config:\n"
        f"  deepspeed_config_file: {ds_config}\n"
        "  zero3_init_flag: true\n"
        "num_machines: 1\n"
        "machine_rank: 0\n"
        "num_processes: 2\n"
    )
    return accelerate_config


@pytest.fixture(scope="module")
def one_process(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The reference: the same script in one plain process."""
    out = tmp_path_factory.mktemp("one_process")
    probe = out / "probe.jsonl"
    probe.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]))
    return _run_script(None, [], policy_dir, probe, out / "out"), probe


def _assert_same_step0(report: dict, reference: dict) -> None:
    """The step-0 evaluation has the reference's samples and token ids, bit for bit, and its metrics (the quality,
    pass@k and correct-only keys among them): the token metrics exactly, the embedding ones up to float rounding
    (the embedder's matmuls run with another thread count)."""
    assert report["evaluations"]["0"] == reference["evaluations"]["0"]

    def metrics(history: list[dict]) -> dict:
        (entry,) = [e for e in history if e["step"] == 0 and "diversity/distinct_1" in e]
        return {k: v for k, v in entry.items() if k.startswith("diversity/")}

    got, expected = metrics(report["log_history"]), metrics(reference["log_history"])
    assert got.keys() == expected.keys()
    assert {"diversity/quality/mean", "diversity/correct_only/sbert", "diversity/retained/ead"} <= got.keys()
    for key, value in expected.items():
        semantic = "sbert" in key or "vendi" in key
        assert got[key] == (pytest.approx(value, rel=1e-6, nan_ok=True) if semantic else value) or (
            math.isnan(got[key]) and math.isnan(value)
        ), key


def _assert_ranks_agree(out: Path) -> None:
    """Every rank logged the same diversity entries (values broadcast from the main process), holds the same
    trainer-state record (the step-0 reference, alerts, stop) and ended at the same step."""
    ranks = [json.loads((out / f"state_rank{rank}.json").read_text()) for rank in range(2)]
    assert json.dumps(ranks[0], sort_keys=True) == json.dumps(ranks[1], sort_keys=True)
    assert ranks[0]["record"]["reference"]["step"] == 0


def _generate_calls(out: Path) -> list[list[bool]]:
    return [json.loads((out / f"generate_calls_rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.slow
def test_zero3_two_processes_gathered_and_lockstep_match_one_process(
    policy_dir: Path, one_process: tuple[dict, Path], tmp_path: Path
):
    """3 probe prompts over 2 ranks. The step-0 samples and every metric equal the single-process run's (the
    sampling noise is keyed by prompt, not by rank, process count or batch). Gathered (the default), all 3 prompts in
    one `generate` batch: rank 0 samples it locally and rank 1 has nothing to generate (the ranks must not wait on
    each other inside `generate`). Lock-step (`ds3_gather_for_generation: false`), one prompt per batch: rank 0
    samples prompts 0 and 2, rank 1 prompt 1 and a dummy batch, every call `synced_gpus`, or the ranks would hang.
    Both sample the same completions at every evaluation."""
    reference, probe = one_process
    reports = {}
    for mode, extra in (("gathered", ["--batch-size", "3"]), ("lockstep", ["--lockstep"])):
        out = tmp_path / mode
        reports[mode] = _run_script(_zero3_config(tmp_path), extra, policy_dir, probe, out)
        assert reports[mode]["num_processes"] == 2 and reports[mode]["zero_stage"] == 3
        _assert_same_step0(reports[mode], reference)
        _assert_ranks_agree(out)
        calls = _generate_calls(out)
        evaluations = len(diversity_steps(reports[mode]["log_history"]))
        if mode == "gathered":
            assert calls == [[False] * evaluations, []]
        else:
            assert calls == [[True] * 2 * evaluations, [True] * 2 * evaluations]
    assert reports["lockstep"]["evaluations"] == reports["gathered"]["evaluations"]
    for got, expected in zip(_curves(reports["lockstep"]), _curves(reports["gathered"]), strict=True):
        assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(policy_dir: Path, one_process: tuple[dict, Path], tmp_path: Path):
    """DDP over gloo (`use_cpu=True` so that accelerate treats the CPU ranks as one distributed run): the step-0
    samples and metrics equal the single-process run's; no lock-step."""
    reference, probe = one_process
    config = cpu_accelerate_config("ddp", tmp_path)
    report = _run_script(config, ["--use-cpu", "--progress"], policy_dir, probe, tmp_path / "out")
    assert report["num_processes"] == 2 and report["zero_stage"] is None
    _assert_same_step0(report, reference)
    _assert_ranks_agree(tmp_path / "out")
    evaluations = len(diversity_steps(report["log_history"]))
    assert _generate_calls(tmp_path / "out") == [[False] * 2 * evaluations, [False] * evaluations]
    # one progress bar per evaluation, rank 0's: its share is prompts 0 and 2 (6 samples), rank 1's would be 3
    bars = [m for m in PROGRESS_BAR.finditer(report["stderr"])]
    assert {int(m["step"]) for m in bars} == {0, 2, 4}
    assert {m["all_samples"] for m in bars} == {"6"}


@pytest.mark.slow
def test_zero3_two_processes_stop_together_at_a_diversity_threshold(policy_dir: Path, tmp_path: Path):
    """`stop_below` under ZeRO-3 on 2 processes: the main process decides from the gathered samples, every rank
    takes the broadcast decision, so both stop after the same step, save its checkpoint together (a ZeRO-3 save is
    collective: a rank that went on would hang the other) and hold the same record of why."""
    probe = write_probe_prompts(tmp_path / "probe.jsonl")
    stop = ["--stop-below", json.dumps({"distinct_1": 1.0, "ead": 1.0, "sbert": 1.0}), "--max-steps", "6"]
    out = tmp_path / "out"
    _run_script(_zero3_config(tmp_path), ["--batch-size", "3", *stop], policy_dir, probe, out, max_steps=None)
    _assert_ranks_agree(out)
    state = json.loads((out / "state_rank0.json").read_text())
    stopped = state["record"]["stopped"]
    assert stopped is not None and state["global_step"] == stopped["step"] < 6
    assert stopped["retained"] < 1.0 and stopped["metric"] in ("distinct_1", "ead", "sbert")
    saved = json.loads((out / f"checkpoint-{stopped['step']}" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["divalign_diversity"]["stopped"] == stopped
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{stopped['step']}"]


def _curves(report: dict) -> list[dict]:
    return [
        {k: v for k, v in e.items() if k.startswith("diversity/")}
        for e in report["log_history"]
        if "diversity/distinct_1" in e
    ]


def _run_script(
    config: Path | None, extra: list[str], policy: Path, probe: Path, out: Path, max_steps: int | None = 4
) -> dict:
    """Run tests/scripts/diversity_train.py on 2 CPU ranks under the accelerate `config` (one plain process when
    None), check the shared expectations (of a 4-step run when `max_steps` is 4), return its report."""
    python_path = os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))
    env = {"WANDB_MODE": "disabled", "PYTHONPATH": python_path}
    script = [str(SCRIPTS / "diversity_train.py"), str(policy), str(probe), str(out)]
    script += ["--every-steps", "2", *(["--max-steps", str(max_steps)] if max_steps else []), *extra]
    if config is None:
        done = subprocess.run(
            [sys.executable, *script], env=cpu_environment(env), capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    else:
        done = accelerate_launch(script, config, env=env)

    report = json.loads((out / "diversity_report.json").read_text())
    report["stderr"] = done.stderr
    if max_steps != 4:
        return report
    assert diversity_steps(report["log_history"]) == [0, 2, 4]
    assert [e["step"] for e in report["log_history"] if "loss" in e] == [1, 2, 3, 4]
    assert all(np.isfinite(e["diversity/sbert"]) for e in report["log_history"] if "diversity/sbert" in e)
    # Every prompt exactly once, in order, after the gather (no dummy batch among them).
    assert [p.split("<|user|> ")[1].split(" <eos>")[0] for p in report["last_prompts"]] == PROMPTS[:3]
    assert [len(group) for group in report["last_samples"]] == [3, 3, 3]
    return report
