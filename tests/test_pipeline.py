"""`divalign pipeline`: validation, skip/resume/refuse by inputs hash, template checks, adapters, and a real run.

The fast tests launch nothing: a fake launcher "trains" a stage by copying its input checkpoint into its output
dir (optionally altering the tokenizer or saving a LoRA adapter), which is all the pipeline can observe of a stage.
The slow test goes through the real `accelerate launch -m divalign.train` on the tiny smoke model (CPU, offline).
"""

import json
import shutil
import traceback
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from divalign.cli import main as cli_main
from divalign.launch.run_lock import RunLockError, owner_record
from divalign.pipeline import DONE_MARKER, PipelineError, load_pipeline, run_pipeline
from divalign.smoke import build_smoke_assets, messages_rows, write_jsonl
from pipelines import SFT_RECIPE, TOFU_RECIPE, CopyLauncher, flag, run, write_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("assets"))


def smoke_data(assets: Path) -> dict[str, str]:
    """The smoke recipes name runs/smoke/train.jsonl; end-to-end runs read the fixture's copy instead."""
    return {"dataset_name": str(assets / "train.jsonl")}


def rewrite(path: Path, edit) -> None:
    content = yaml.safe_load(path.read_text())
    edit(content)
    path.write_text(yaml.safe_dump(content, sort_keys=False))




# Validation: every message names the file/stage at fault, and nothing is launched


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(PipelineError, match=r"pipeline file not found: .*nope\.yaml"):
        load_pipeline(tmp_path / "nope.yaml")


def test_pipeline_file_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- sft\n- dpo\n")
    with pytest.raises(PipelineError, match=r"list\.yaml must hold a YAML mapping .* got list"):
        load_pipeline(path)


def test_unknown_pipeline_key_suggests_the_right_one(tmp_path, assets):
    path = write_pipeline(tmp_path, assets, stagse=[])
    with pytest.raises(
        PipelineError, match=r"unknown pipeline key 'stagse' in .*pipeline\.yaml; did you mean 'stages'"
    ):
        load_pipeline(path)


def test_unknown_stage_key(tmp_path, assets):
    path = write_pipeline(tmp_path, assets, stages=[{"name": "sft", "recipe": str(SFT_RECIPE), "overides": {}}])
    with pytest.raises(PipelineError, match=r"unknown stage key 'overides' in .*stage 'sft'; did you mean 'overrides'"):
        load_pipeline(path)


def test_missing_stage_recipe(tmp_path, assets):
    path = write_pipeline(tmp_path, assets, stages=[{"name": "dpo", "recipe": str(tmp_path / "dpo.yaml")}])
    with pytest.raises(PipelineError, match=r"stage 'dpo': recipe file not found: .*dpo\.yaml"):
        load_pipeline(path)


def test_duplicate_stage_names(tmp_path, assets):
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE)}, {"name": "sft", "recipe": str(TOFU_RECIPE)}]
    with pytest.raises(PipelineError, match="duplicate stage name 'sft'"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_two_stages_writing_the_same_dir(tmp_path, assets):
    shared = str(tmp_path / "out")
    stages = [
        {"name": "sft", "recipe": str(SFT_RECIPE), "output_dir": shared},
        {"name": "tofu", "recipe": str(TOFU_RECIPE), "output_dir": shared},
    ]
    with pytest.raises(PipelineError, match="stage 'tofu' and stage 'sft' write the same output directory"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_stage_writing_into_its_own_input(tmp_path, assets):
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "output_dir": str(assets / "model")}]
    with pytest.raises(PipelineError, match=r"stage 'sft' writes into .*model, which holds the pipeline's input"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_missing_local_base_model(tmp_path, assets):
    path = write_pipeline(tmp_path, assets, base_model=str(tmp_path / "checkpoints" / "base"))
    with pytest.raises(PipelineError, match=r"base_model .*checkpoints/base does not exist"):
        load_pipeline(path)


def test_unknown_adapters_value(tmp_path, assets):
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "adapters": "stack"}]
    with pytest.raises(PipelineError, match="stage 'sft': unknown `adapters` value 'stack'; expected one of merge"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_unknown_trainer_in_a_stage_recipe(tmp_path, assets):
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text("trainer: ppo\nlearning_rate: 1.0e-5\n")
    stages = [{"name": "rl", "recipe": str(recipe)}]
    with pytest.raises(PipelineError, match=r"stage 'rl': .*ppo\.yaml: unknown trainer 'ppo'"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_unknown_override_key(tmp_path, assets):
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"max_step": 4}}]
    with pytest.raises(PipelineError, match=r"unknown override key 'max_step' .*did you mean 'max_steps'"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_override_of_a_key_the_pipeline_owns(tmp_path, assets):
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"model_name_or_path": "x"}}]
    with pytest.raises(PipelineError, match="stage 'sft': `overrides` cannot set 'model_name_or_path'"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_override_keys_spelled_with_dashes_are_the_flags_they_name(tmp_path, assets):
    """`max-steps: 4` in `overrides` is `--max-steps 4`, which divalign.train takes as `--max_steps 4`."""
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"max-steps": 4, "stop-on-nonfinite": False}}]
    (stage,) = load_pipeline(write_pipeline(tmp_path, assets, stages=stages)).stages
    assert stage.overrides == {"max_steps": 4, "stop_on_nonfinite": False, "dataset_name": str(assets / "train.jsonl")}
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"output-dir": "elsewhere"}}]
    with pytest.raises(PipelineError, match="stage 'sft': `overrides` cannot set 'output_dir'"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_stage_after_lora_must_say_merge_or_continue(tmp_path, assets):
    stages = [
        {"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"use_peft": True}},
        {"name": "tofu", "recipe": str(TOFU_RECIPE)},
    ]
    with pytest.raises(PipelineError, match=r"stage 'tofu' follows the LoRA stage 'sft'.*adapters: merge"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_continue_cannot_add_a_second_adapter(tmp_path, assets):
    stages = [
        {"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"use_peft": True}},
        {"name": "tofu", "recipe": str(TOFU_RECIPE), "adapters": "continue", "overrides": {"use_peft": True}},
    ]
    with pytest.raises(PipelineError, match=r"stage 'tofu': `adapters: continue` .* remove `use_peft`"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


def test_missing_eval_prompts(tmp_path, assets):
    path = write_pipeline(tmp_path, assets, eval={"prompts": str(tmp_path / "probe.jsonl")})
    with pytest.raises(PipelineError, match=r"eval prompts file not found: .*probe\.jsonl"):
        load_pipeline(path)


def test_unknown_eval_key(tmp_path, assets):
    prompts = write_jsonl(tmp_path / "probe.jsonl", [{"prompt": "say a word"}])
    path = write_pipeline(tmp_path, assets, eval={"prompts": str(prompts), "num_samples": 4})
    with pytest.raises(PipelineError, match=r"unknown eval key 'num_samples' in .*pipeline\.yaml eval.*'samples'"):
        load_pipeline(path)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    assert cli_main(["pipeline", str(tmp_path / "nope.yaml")]) == 2
    assert "divalign pipeline: error: pipeline file not found" in capsys.readouterr().err


# Launching, skipping, refusing, resuming (fake launcher)


def test_stages_chain_and_carry_wandb_grouping(tmp_path, assets):
    launcher = CopyLauncher()
    results = run(write_pipeline(tmp_path, assets), launcher)
    (sft_cmd, sft_env), (tofu_cmd, tofu_env) = launcher.calls
    runs = tmp_path / "runs"
    assert flag(sft_cmd, "--model_name_or_path") == str(assets / "model")
    assert flag(tofu_cmd, "--model_name_or_path") == str(runs / "sft")  # stage 2 loads stage 1
    assert flag(tofu_cmd, "--output_dir") == str(runs / "tofu")
    assert sft_cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert tofu_cmd[3:8] == ["--num_processes", "1", "--cpu", "-m", "divalign.train"]
    assert (flag(tofu_cmd, "--max_steps"), flag(tofu_cmd, "--run_name")) == ("4", "tiny-tofu")
    assert "--resume_from_checkpoint" not in tofu_cmd
    assert [sft_env["WANDB_RUN_GROUP"], tofu_env["WANDB_RUN_GROUP"]] == ["tiny", "tiny"]
    assert (tofu_env["WANDB_JOB_TYPE"], tofu_env["WANDB_NAME"]) == ("tofu", "tiny-tofu")
    markers = [json.loads((r.output_dir / DONE_MARKER).read_text()) for r in results]
    assert markers[1]["inputs"]["input"] == {"stage": "sft", "hash": markers[0]["hash"], "run_id": markers[0]["run_id"]}


def test_rerun_with_same_inputs_skips_everything(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    run(path, CopyLauncher())
    again, logs = CopyLauncher(), []
    run(path, again, logs)
    assert again.calls == []
    assert sum("skipped, finished with the same inputs" in line for line in logs) == 2


def test_changed_override_refuses_to_overwrite(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    run(path, CopyLauncher())
    rewrite(path, lambda c: c["stages"][1]["overrides"].update(max_steps=8))
    launcher = CopyLauncher()
    with pytest.raises(PipelineError, match=r"stage 'tofu': .*runs/tofu already holds a result, but it finished with "
                                            r"other inputs.*remove .*runs/tofu, or pass --force-rerun tofu"):  # fmt: skip
        run(path, launcher)
    assert launcher.calls == []  # sft was skipped, tofu refused


def test_changed_accelerate_config_refuses_too(tmp_path, assets):
    config = tmp_path / "acc.yaml"
    config.write_text("distributed_type: 'NO'\n")
    path = write_pipeline(tmp_path, assets, accelerate_config=str(config))
    run(path, CopyLauncher())
    config.write_text("distributed_type: MULTI_GPU\n")
    with pytest.raises(PipelineError, match=r"stage 'sft': .*--force-rerun sft"):
        run(path, CopyLauncher())


def test_force_rerun_moves_the_old_result_aside(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    run(path, CopyLauncher())
    old_marker = json.loads((tmp_path / "runs" / "tofu" / DONE_MARKER).read_text())
    rewrite(path, lambda c: c["stages"][1]["overrides"].update(max_steps=8))
    launcher, logs = CopyLauncher(), []
    run(path, launcher, logs, force_rerun=["tofu"])
    assert launcher.stages == ["tofu"]
    aside = list((tmp_path / "runs").glob("tofu.old-*"))
    assert len(aside) == 1 and json.loads((aside[0] / DONE_MARKER).read_text()) == old_marker
    assert json.loads((tmp_path / "runs" / "tofu" / DONE_MARKER).read_text())["hash"] != old_marker["hash"]
    assert any("moved" in line and "tofu.old-" in line for line in logs)


def test_force_rerun_cascades_downstream(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    run(path, CopyLauncher())
    launcher = CopyLauncher()
    run(path, launcher, force_rerun=["sft"])
    assert launcher.stages == ["sft", "tofu"]
    assert len(list((tmp_path / "runs").glob("*.old-*"))) == 2


def test_new_upstream_result_invalidates_downstream(tmp_path, assets):
    """Same files, but sft was retrained (its old dir removed by hand): tofu was built on a result that is gone."""
    path = write_pipeline(tmp_path, assets)
    run(path, CopyLauncher())
    shutil.rmtree(tmp_path / "runs" / "sft")
    launcher = CopyLauncher()
    with pytest.raises(PipelineError, match=r"stage 'tofu': .*--force-rerun tofu"):
        run(path, launcher)
    assert launcher.stages == ["sft"]


def save_checkpoint(step: int, complete: bool = True):
    """A launcher `alter` that leaves checkpoint-<step>, with the trainer_state.json transformers writes last or not."""

    def alter(output: Path, command: list[str]) -> None:
        (output / f"checkpoint-{step}").mkdir()
        (output / f"checkpoint-{step}" / "model.safetensors").write_text("weights")
        if complete:
            (output / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (output / "model.safetensors").unlink()  # killed before the final model

    return alter


def test_interrupted_stage_resumes_from_its_checkpoint(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    sft = tmp_path / "runs" / "sft"
    killed = CopyLauncher(save_checkpoint(2), exit_status=137)
    advice = f"once that is fixed, rerun the same command to resume it from {sft / 'checkpoint-2'}"
    with pytest.raises(PipelineError, match=rf"stage 'sft' failed \(exit status 137; its error is above\); {advice}"):
        run(path, killed)
    launcher, logs = CopyLauncher(), []
    run(path, launcher, logs)
    assert launcher.stages == ["sft", "tofu"]
    assert flag(launcher.calls[0][0], "--resume_from_checkpoint") == "true"
    assert "--resume_from_checkpoint" not in launcher.calls[1][0]
    assert any("stage 'sft': resuming" in line for line in logs)


def test_stage_killed_while_saving_its_only_checkpoint_starts_over(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    with pytest.raises(PipelineError, match=r"rerun the same command to start it over \(it saved no checkpoint\)"):
        run(path, CopyLauncher(save_checkpoint(2, complete=False), exit_status=137))
    launcher, logs = CopyLauncher(), []
    run(path, launcher, logs)
    assert "--resume_from_checkpoint" not in launcher.calls[0][0]  # nothing complete to resume from
    (aside,) = (tmp_path / "runs").glob("sft.old-*")
    assert (aside / "checkpoint-2" / "model.safetensors").is_file()  # moved aside, not deleted


def test_stage_trained_but_not_recorded_is_recorded_without_training_again(tmp_path, assets):
    """divalign.train finished the stage; the pipeline was killed before writing its marker."""
    path = write_pipeline(tmp_path, assets)

    def finish_then_die(output: Path, command: list[str]) -> None:
        (output / "divalign_finished.json").write_text(json.dumps({"global_step": 4}))

    with pytest.raises(PipelineError):
        run(path, CopyLauncher(finish_then_die, exit_status=1))
    launcher, logs = CopyLauncher(), []
    run(path, launcher, logs)
    assert launcher.stages == ["tofu"] and (tmp_path / "runs" / "sft" / DONE_MARKER).is_file()
    assert any("stage 'sft': trained with the same inputs before the pipeline stopped" in line for line in logs)


def test_interrupted_stage_with_changed_inputs_is_not_resumed(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    with pytest.raises(PipelineError):
        run(path, CopyLauncher(save_checkpoint(2), exit_status=1))
    rewrite(path, lambda c: c["stages"][0]["overrides"].update(learning_rate=1.0e-4))
    with pytest.raises(PipelineError, match=r"stage 'sft': .*interrupted while running with other inputs"):
        run(path, CopyLauncher())


def test_stage_killed_before_its_first_checkpoint_starts_over(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    with pytest.raises(PipelineError, match="exit status 137"):
        run(path, CopyLauncher(exit_status=137))  # left the copied files, no checkpoint
    launcher, logs = CopyLauncher(), []
    run(path, launcher, logs)
    assert launcher.stages == ["sft", "tofu"] and "--resume_from_checkpoint" not in launcher.calls[0][0]
    assert len(list((tmp_path / "runs").glob("sft.old-*"))) == 1
    assert any("killed before its first checkpoint" in line for line in logs)


def test_dir_with_files_but_no_marker_or_checkpoint(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    (tmp_path / "runs" / "sft" / "notes.txt").write_text("mine")
    launcher = CopyLauncher()
    with pytest.raises(PipelineError, match=r"stage 'sft': .*runs/sft is not empty but holds neither a finished stage"):
        run(path, launcher)
    assert launcher.calls == []


# Every stage's values are checked before stage 1 trains


def test_a_bad_value_in_a_later_stage_fails_before_anything_runs(tmp_path, assets, capsys):
    path = write_pipeline(tmp_path, assets)
    rewrite(path, lambda c: c["stages"][1]["overrides"].update(tofu_beta=-1))
    assert cli_main(["pipeline", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "divalign pipeline: error: stage 'tofu' (" in err and "`tofu_beta` must be > 0" in err
    launcher = CopyLauncher()
    with pytest.raises(PipelineError, match=r"stage 'tofu' \(.*tofu_smoke\.yaml with its overrides\): .*tofu_beta"):
        run(path, launcher)
    assert launcher.calls == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["stages"][1]["overrides"].update(learning_rate="fast"), r"stage 'tofu' .*learning_rate.*'fast'"),
        (lambda c: c["stages"][0]["overrides"].update(max_steps="1e1"), None),  # a number PyYAML reads as text: fine
        (lambda c: c["stages"][1]["overrides"].update(dataset_name="nope.jsonl"), r"stage 'tofu' .*not found: nope"),
        (lambda c: c["stages"][1]["overrides"].update(eval_strategy="steps", eval_steps=2), r"has only a 'train' split"),
        (lambda c: c["stages"][1]["overrides"].update(stop_on_nonfinite="maybe"), r"must be true or false"),
        # the key and the value named; argparse's wording around them is not divalign's to assert
        (
            lambda c: c["stages"][1]["overrides"].update(lr_scheduler_type="wavy"),
            r"stage 'tofu' .*lr_scheduler_type\b.*\bwavy\b",
        ),
    ],
)
def test_stage_values_are_validated_with_their_overrides(tmp_path, assets, edit, message):
    path = write_pipeline(tmp_path, assets)
    rewrite(path, lambda c: [edit(c), c["stages"][0]["overrides"].update(smoke_data(assets))])
    if message is None:
        assert run(path, CopyLauncher(), dry_run=True)[0].name == "sft"
        return
    with pytest.raises(PipelineError, match=message):
        run(path, CopyLauncher(), dry_run=True)


def test_diversity_prompts_of_a_later_stage_are_read_before_anything_runs(tmp_path, assets):
    recipe = yaml.safe_load(TOFU_RECIPE.read_text())
    recipe["diversity"] = {"prompts": str(tmp_path / "probe.jsonl"), "embedding_model": None, "metrics": ["distinct_1"]}
    tofu = tmp_path / "tofu.yaml"
    tofu.write_text(yaml.safe_dump(recipe))
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE)}, {"name": "tofu", "recipe": str(tofu)}]
    with pytest.raises(PipelineError, match=r"stage 'tofu' .*diversity: Prompts file not found: .*probe\.jsonl"):
        run(write_pipeline(tmp_path, assets, stages=stages), CopyLauncher(), dry_run=True)


def test_accelerate_precision_against_the_recipe(tmp_path, assets):
    """The smoke recipes train in fp32; the shipped ZeRO-2 config asks for bf16: refused before stage 1."""
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "accelerate_config": "accelerate_configs/zero2.yaml"}]
    path = write_pipeline(tmp_path, assets, stages=stages)
    message = r"the recipe trains in full precision .* but accelerate config .*zero2\.yaml asks for mixed_precision 'bf16'"
    with pytest.raises(PipelineError, match=rf"stage 'sft' .*{message}"):
        run(path, CopyLauncher(), dry_run=True)
    rewrite(path, lambda c: c["stages"][0].update(launch_args=["--mixed_precision", "no"]))
    run(path, CopyLauncher(), dry_run=True)  # the documented fix: override it at launch


def test_gpu_recipes_dry_run_on_a_machine_without_gpu(capsys, monkeypatch):
    """bf16 GPU recipes: TrainingArguments refuses bf16 without a GPU; the dry run validates them as CPU runs and
    says so, instead of failing every stage."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("divalign.pipeline.stage_values.has_gpu", lambda: False)
    assert cli_main(["pipeline", "recipes/pipelines/tofu_dpo_grpo.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "no GPU on this machine: stage values were validated as CPU runs (use_cpu: true)" in out
    assert out.count("running: ") == 3 and "dry run: nothing was launched" in out


def test_stage_values_see_the_launch_world_size(tmp_path, assets):
    """GRPO's generation batch (per device x processes) must hold whole groups of num_generations completions."""
    _, grpo = preference_and_prompt_recipes(tmp_path)
    stages = [{"name": "grpo", "recipe": str(grpo), "overrides": {"per_device_train_batch_size": 2}}]
    path = write_pipeline(tmp_path, assets, stages=stages, launch_args=["--num_processes", "2", "--cpu"])
    run(path, CopyLauncher(), dry_run=True)  # 2 x 2 = 4 completions: one group of 4
    rewrite(path, lambda c: c.update(launch_args=["--num_processes", "1", "--cpu"]))
    with pytest.raises(PipelineError, match=r"^stage 'grpo' \(") as caught:
        run(path, CopyLauncher(), dry_run=True)
    # the refusal is TRL's own (GRPOConfig's check), passed on whole: asserted by where it was raised, not by its
    # wording; only the world size differs from the accepted run above
    refusal = caught.value
    while refusal.__cause__ is not None:
        refusal = refusal.__cause__
    assert type(refusal) is ValueError and str(refusal) in str(caught.value)
    raised_in = Path(traceback.extract_tb(refusal.__traceback__)[-1].filename)
    assert "trl" in raised_in.parts, raised_in


def test_stage_writing_into_the_output_root(tmp_path, assets):
    stages = [{"name": "sft", "recipe": str(SFT_RECIPE), "output_dir": str(tmp_path / "runs")}]
    with pytest.raises(PipelineError, match=r"stage 'sft' writes into .*runs, which is \(or holds\) the output_root"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))
    stages[0]["output_dir"] = str(tmp_path)  # a parent of output_root
    with pytest.raises(PipelineError, match="which is \\(or holds\\) the output_root"):
        load_pipeline(write_pipeline(tmp_path, assets, stages=stages))


# Locks: one pipeline per output_root, and no stage launched into a directory another run holds


def test_a_second_pipeline_on_the_same_output_root_is_refused(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    state = tmp_path / "runs" / ".divalign_state"
    state.mkdir(parents=True)
    (state / ".divalign_lock").write_text(json.dumps({**owner_record(), "command": "divalign pipeline other.yaml"}))
    launcher = CopyLauncher()
    with pytest.raises(RunLockError, match=r"pipeline state directory .*\.divalign_state is in use by another run: pid"):
        run(path, launcher)
    assert launcher.calls == []


def test_a_stage_dir_held_by_another_run_is_not_launched(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    sft = tmp_path / "runs" / "sft"
    sft.mkdir(parents=True)
    (sft / "checkpoint-2").mkdir()
    (sft / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (sft / ".divalign_lock").write_text(json.dumps(owner_record()))
    launcher = CopyLauncher()
    with pytest.raises(PipelineError, match=r"stage 'sft': .*runs/sft is in use by another run: pid \d+ on host"):
        run(path, launcher)
    assert launcher.calls == []


def test_dry_run_launches_nothing(tmp_path, assets, capsys):
    path = write_pipeline(tmp_path, assets)
    assert cli_main(["pipeline", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage 'tofu': running: " in out and f"--model_name_or_path {tmp_path / 'runs' / 'sft'}" in out
    assert "dry run: nothing was launched" in out
    assert not (tmp_path / "runs").exists()


def test_only_runs_one_stage_after_its_inputs(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    with pytest.raises(PipelineError, match="--only tofu needs stage 'sft' finished"):
        run(path, CopyLauncher(), only="tofu")
    launcher = CopyLauncher()
    run(path, launcher, only="sft")
    assert launcher.stages == ["sft"]
    with pytest.raises(PipelineError, match="no stage named 'dpo'"):
        run(path, CopyLauncher(), only="dpo")


# Chat template and EOS between stages


def change_template(output: Path, command: list[str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(output)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(output)


def change_eos(output: Path, command: list[str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(output)
    tokenizer.eos_token = "<pad>"
    tokenizer.save_pretrained(output)


def test_chat_template_drift_fails_naming_both(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    with pytest.raises(PipelineError, match=rf"stage 'sft' changed the tokenizer's chat_template: {assets / 'model'} "
                                            rf"has .*role.*, {tmp_path / 'runs' / 'sft'} has .*content"):  # fmt: skip
        run(path, CopyLauncher(change_template))
    assert not (tmp_path / "runs" / "sft" / DONE_MARKER).exists()


def test_eos_drift_fails_unless_the_recipe_sets_it(tmp_path, assets):
    path = write_pipeline(tmp_path, assets)
    with pytest.raises(PipelineError, match=r"changed the tokenizer's eos_token: .* has '</s>', .* has '<pad>'"):
        run(path, CopyLauncher(change_eos))
    shutil.rmtree(tmp_path / "runs")
    rewrite(path, lambda c: c["stages"][0]["overrides"].update(eos_token="<pad>"))
    logs = []
    run(path, CopyLauncher(change_eos), logs)  # tofu keeps sft's '<pad>': no drift there
    assert any("warning: stage 'sft' changed the tokenizer's eos_token" in line for line in logs)


# LoRA adapters between stages


def save_adapter(output: Path, command: list[str]) -> None:
    """What a LoRA stage leaves: adapter weights and config (non-zero B so merging changes the weights)."""
    from peft import LoraConfig, get_peft_model

    for weights in output.glob("model*.safetensors"):
        weights.unlink()
    (output / "config.json").unlink()
    base = AutoModelForCausalLM.from_pretrained(flag(command, "--model_name_or_path"))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(output)


def adapter_stages(mode: str) -> list[dict]:
    return [
        {"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"use_peft": True}},
        {"name": "tofu", "recipe": str(TOFU_RECIPE), "adapters": mode},
    ]


def test_adapters_merge_feeds_a_full_merged_model(tmp_path, assets):
    path = write_pipeline(tmp_path, assets, stages=adapter_stages("merge"))
    calls = []

    def launcher(command, env):
        calls.append(command)
        return CopyLauncher(save_adapter if len(calls) == 1 else None)(command, env)

    run(path, launcher)
    merged = tmp_path / "runs" / "sft" / "merged"
    assert flag(calls[1], "--model_name_or_path") == str(merged)
    base = AutoModelForCausalLM.from_pretrained(assets / "model")
    model = AutoModelForCausalLM.from_pretrained(merged)
    q_base, q_merged = (m.model.layers[0].self_attn.q_proj.weight for m in (base, model))
    assert not torch.equal(q_base, q_merged)  # the adapter's delta is in the weights
    assert torch.equal(base.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    assert (
        AutoTokenizer.from_pretrained(merged).chat_template
        == AutoTokenizer.from_pretrained(assets / "model").chat_template
    )


def test_adapters_continue_loads_the_adapter_trainable(tmp_path, assets):
    path = write_pipeline(tmp_path, assets, stages=adapter_stages("continue"))
    calls = []

    def launcher(command, env):
        calls.append(command)
        return CopyLauncher(save_adapter if len(calls) == 1 else None)(command, env)

    run(path, launcher)
    assert flag(calls[1], "--model_name_or_path") == str(assets / "model")  # the adapter's base ...
    assert flag(calls[1], "divalign.pipeline.adapter_stage") == str(tmp_path / "runs" / "sft")  # ... and the adapter
    assert "divalign.train" not in calls[1]


# End to end through accelerate launch and divalign.train


def resolved_recipe(directory: Path) -> dict:
    return yaml.safe_load((directory / "divalign_recipe.yaml").read_text())


def global_step(directory: Path) -> int:
    return json.loads((directory / "trainer_state.json").read_text())["global_step"]


def write_recipe(path: Path, **content) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def preference_and_prompt_recipes(directory: Path) -> tuple[Path, Path]:
    """Tiny local DPO and KL-free GRPO recipes: 'say a word wK' prefers 'wK wK' over two rare words."""
    user = [[{"role": "user", "content": f"say a word w{i % 5}"}] for i in range(8)]
    prefs = [{"prompt": u, "chosen": [{"role": "assistant", "content": f"w{i % 5} w{i % 5}"}],
              "rejected": [{"role": "assistant", "content": f"w{30 + i} w39"}]} for i, u in enumerate(user)]  # fmt: skip
    prompts = [{"prompt": u, "answer": f"w{i % 5}"} for i, u in enumerate(user)]
    common = {"dtype": "float32", "bf16": False, "gradient_checkpointing": False, "report_to": "none", "seed": 0,
              "learning_rate": 1.0e-3, "per_device_train_batch_size": 4, "logging_steps": 1, "max_steps": 4,
              "save_steps": 2}  # fmt: skip
    dpo = write_recipe(directory / "dpo.yaml", trainer="dpo", dataset_name=str(write_jsonl(directory / "prefs.jsonl", prefs)),
                       max_length=32, **common)  # fmt: skip
    grpo = write_recipe(directory / "grpo.yaml", trainer="grpo", dataset_name=str(write_jsonl(directory / "prompts.jsonl", prompts)),
                        beta=0.0, num_generations=4, max_completion_length=6,
                        rewards=["math_answer", {"length_penalty": {"target_tokens": 2}}], **common)  # fmt: skip
    return dpo, grpo


@pytest.mark.slow
def test_tofu_dpo_grpo_end_to_end(tmp_path, assets, monkeypatch, capsys):
    """SFT (TOFU) → DPO → GRPO(β=0) through accelerate, then the lineage eval; rerun skips; a killed stage resumes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dpo_recipe, grpo_recipe = preference_and_prompt_recipes(tmp_path)
    probe = write_jsonl(tmp_path / "probe.jsonl", [{"prompt": row["messages"][:1]} for row in messages_rows(3)])
    eval_block = {"prompts": str(probe), "samples": 2, "max_new_tokens": 4, "metrics": ["distinct_1"],
                  "bootstrap": 10, "backend": "hf"}  # fmt: skip
    stages = [
        {
            "name": "sft",
            "recipe": str(TOFU_RECIPE),
            "overrides": {"max_steps": 4, "save_steps": 2, **smoke_data(assets)},
        },
        {"name": "dpo", "recipe": str(dpo_recipe)},
        {"name": "grpo", "recipe": str(grpo_recipe)},
    ]
    path = write_pipeline(tmp_path, assets, stages=stages, eval=eval_block)
    sft, dpo, grpo = (tmp_path / "runs" / name for name in ("sft", "dpo", "grpo"))

    run_pipeline(str(path))
    assert resolved_recipe(sft)["model_name_or_path"] == str(assets / "model")
    assert resolved_recipe(dpo)["model_name_or_path"] == str(sft)  # each stage trained on the previous output
    assert resolved_recipe(grpo)["model_name_or_path"] == str(dpo)
    assert [resolved_recipe(d)["trainer"] for d in (sft, dpo, grpo)] == ["tofu", "dpo", "grpo"]
    assert (resolved_recipe(grpo)["beta"], resolved_recipe(dpo)["run_name"]) == (0.0, "tiny-dpo")
    assert [global_step(d) for d in (sft, dpo, grpo)] == [4, 4, 4]
    lineage = json.loads((tmp_path / "runs" / "lineage" / "results.json").read_text())
    assert [m["name"] for m in lineage["models"]] == ["base", "sft", "dpo", "grpo"]
    assert (tmp_path / "runs" / "lineage" / "results.md").is_file()

    capsys.readouterr()
    run_pipeline(str(path))  # nothing changed: nothing launched
    out = capsys.readouterr().out
    assert out.count("skipped") == 4 and "running" not in out

    # grpo was killed while saving checkpoint-4: no marker, no final model, checkpoint-4 without trainer_state.json
    for item in grpo.iterdir():
        if item.name not in ("checkpoint-2", "checkpoint-4", "divalign_recipe.yaml"):
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    (grpo / "checkpoint-4" / "trainer_state.json").unlink()
    with pytest.raises(PipelineError, match=r"stage 'eval': .*--force-rerun eval"):
        run_pipeline(str(path))  # grpo resumes from checkpoint-2, then the eval of the old grpo is refused
    out = capsys.readouterr().out
    assert "stage 'dpo': skipped" in out and "stage 'grpo': resuming" in out
    assert global_step(grpo) == 4 and (grpo / DONE_MARKER).is_file()
    assert json.loads((grpo / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    assert json.loads((grpo / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4  # saved anew
    assert len(list(grpo.glob("incomplete-checkpoint-4-*"))) == 1  # the cut-short one, moved aside
    assert resolved_recipe(grpo)["resumes"][0]["step"] == 2
    run_pipeline(str(path), force_rerun=["eval"])
    assert len(list((tmp_path / "runs").glob("lineage.old-*"))) == 1


@pytest.mark.slow
def test_lora_continue_then_merge_end_to_end(tmp_path, assets, monkeypatch):
    """LoRA SFT → the same adapter trained on (continue) → a full model on the merged weights (merge)."""
    from safetensors.torch import load_file

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    lora = {"max_steps": 2, "save_steps": 2, "use_peft": True, "lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"],
            **smoke_data(assets)}  # fmt: skip
    stages = [
        {"name": "sft", "recipe": str(SFT_RECIPE), "overrides": lora},
        # learning rate 0: the continued adapter must come out equal to the one it started from
        {"name": "cont", "recipe": str(TOFU_RECIPE), "adapters": "continue",
         "overrides": {"max_steps": 2, "save_steps": 2, "learning_rate": 0.0, **smoke_data(assets)}},
        {"name": "full", "recipe": str(TOFU_RECIPE), "adapters": "merge",
         "overrides": {"max_steps": 2, "save_steps": 2, **smoke_data(assets)}},
    ]  # fmt: skip
    run_pipeline(str(write_pipeline(tmp_path, assets, stages=stages)))
    sft, cont, full = (tmp_path / "runs" / name for name in ("sft", "cont", "full"))
    before, after = (load_file(d / "adapter_model.safetensors") for d in (sft, cont))
    assert sorted(before) == sorted(after) and any(t.abs().max() > 0 for k, t in before.items() if "lora_B" in k)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert resolved_recipe(cont)["model_name_or_path"] == str(assets / "model")
    assert resolved_recipe(full)["model_name_or_path"] == str(cont / "merged")
    assert (full / "model.safetensors").is_file() and not (full / "adapter_config.json").exists()


@pytest.mark.slow
def test_a_stage_on_two_processes(tmp_path, assets, monkeypatch):
    """SFT on one process, then TOFU on two (DDP, gloo on CPU) from the same pipeline file."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = yaml.safe_load((REPO / "accelerate_configs" / "ddp.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no", use_cpu=False)  # as tests/test_distributed.py runs DDP on CPU
    ddp = tmp_path / "ddp_cpu.yaml"
    ddp.write_text(yaml.safe_dump(config))
    steps = {"max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 4, **smoke_data(assets)}
    two_processes = {"accelerate_config": str(ddp), "launch_args": []}
    stages = [
        {"name": "sft", "recipe": str(SFT_RECIPE), "overrides": steps},
        {"name": "tofu", "recipe": str(TOFU_RECIPE), "overrides": {**steps, "ddp_backend": "gloo", "use_cpu": True}},
    ]
    stages[1].update(two_processes)
    run_pipeline(str(write_pipeline(tmp_path, assets, stages=stages)))
    sft, tofu = (tmp_path / "runs" / name for name in ("sft", "tofu"))
    assert resolved_recipe(tofu)["model_name_or_path"] == str(sft)
    # 64 rows, 4 per process: 16 steps per epoch on one process, 8 on two
    states = [json.loads((d / "trainer_state.json").read_text()) for d in (sft, tofu)]
    assert [(s["global_step"], s["epoch"]) for s in states] == [(2, 2 / 16), (2, 2 / 8)]
    assert (tofu / DONE_MARKER).is_file() and (tofu / "model.safetensors").is_file()
