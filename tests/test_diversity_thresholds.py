"""The diversity thresholds (`alert_below`, `stop_below`) where they cannot do what they say: a metric that is NaN
(or 0) at step 0, a new run continued from a stopped one, and a pipeline stage a threshold stopped."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import datasets
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

import divalign.callback.callback as callback_module
from divalign.callback import DiversityCallback, DiversityConfig
from divalign.callback.state import Reference, inactive_thresholds

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from diversity_tiny import save_tiny_policy, train_records, write_probe_prompts

METRICS = ["distinct_1", "distinct_2", "ead"]


def test_a_threshold_on_a_metric_nan_or_zero_at_step_0_is_named_as_inactive():
    reference = Reference(0, {"distinct_1": 0.8, "distinct_2": 0.0, "ead": math.nan}, {"all": {}})
    notes = inactive_thresholds(reference, {"alert": {"distinct_1": 0.9, "ead": 0.7}, "stop": {"distinct_2": 0.5}})
    assert notes == [
        "diversity alert_below {ead: 0.7} can never fire in this run: ead is NaN at step 0 (its reference), so "
        "diversity/retained/ead is undefined at every evaluation",
        "diversity stop_below {distinct_2: 0.5} can never fire in this run: distinct_2 is 0 at step 0 (its "
        "reference), so diversity/retained/distinct_2 is undefined at every evaluation",
    ]


def test_the_step_0_evaluation_says_which_thresholds_can_never_fire(tmp_path, monkeypatch, capsys):
    """EAD made NaN at step 0 (as when every base-model sample is empty): the run says so at step 0, once."""
    real = callback_module.score_probe

    def ead_undefined(*args, **kwargs):
        probe = real(*args, **kwargs)
        probe.means["ead"] = math.nan
        return probe

    monkeypatch.setattr(callback_module, "score_probe", ead_undefined)
    policy = save_tiny_policy(tmp_path / "policy")
    config = DiversityConfig(
        prompts=str(write_probe_prompts(tmp_path / "probe.jsonl")), every_steps=1, samples_per_prompt=2,
        max_new_tokens=4, table_every_steps=0, metrics=METRICS, embedding_model=None,
        stop_below={"ead": 0.5}, alert_below={"distinct_1": 0.5},
    )  # fmt: skip
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                     save_strategy="no", report_to="none", use_cpu=True, bf16=False, disable_tqdm=True)  # fmt: skip
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        args=args,
        train_dataset=datasets.Dataset.from_list(train_records(8)),
        processing_class=AutoTokenizer.from_pretrained(policy),
    )
    trainer.add_callback(DiversityCallback(config).bind(trainer))
    trainer.train()
    out = capsys.readouterr().out
    assert out.count("divalign: diversity stop_below {ead: 0.5} can never fire in this run: ead is NaN at step 0") == 1
    assert "alert_below {distinct_1" not in out  # defined at step 0: it can fire


def test_a_new_run_from_a_stopped_run_says_its_reference_is_the_stopped_model(tmp_path, capsys):
    """The refusal of a stopped run advises a new run from it; that run's step 0 is the stopped model, so its retained
    ratios and thresholds start again from 1.0: the advice and the new run both say so."""
    import json
    import shutil

    import yaml

    from divalign.launch.output_dir import FINISHED_MARKER, write_finished
    from divalign.launch.recipe import RecipeError
    from divalign.launch.train import run_stage

    stopped = tmp_path / "stopped"
    shutil.copytree(save_tiny_policy(tmp_path / "policy"), stopped)
    reason = "step 4: diversity/retained/ead = 0.400 is below stop_below 0.5"
    write_finished(str(stopped), 4, reason)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train_records(8)))
    recipe = {
        "trainer": "sft", "model_name_or_path": str(stopped), "dataset_name": str(data), "max_steps": 1,
        "per_device_train_batch_size": 4, "save_strategy": "no", "report_to": "none", "use_cpu": True, "bf16": False,
        "output_dir": str(stopped),
        "diversity": {"prompts": str(write_probe_prompts(tmp_path / "probe.jsonl")), "samples_per_prompt": 2,
                      "max_new_tokens": 4, "metrics": METRICS, "embedding_model": None, "stop_below": {"ead": 0.5}},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=f"stopped early: {reason}.*a new run from it measures diversity/retained"):
        run_stage(str(path))  # the stopped run itself: nothing to resume
    run_stage(str(path), ["--output_dir", str(tmp_path / "continued")])
    out = capsys.readouterr().out
    assert (
        f"divalign.train: note: model_name_or_path {stopped} is a run a diversity threshold stopped ({reason}); this "
        "run's step-0 diversity reference is that stopped model"
    ) in out
    assert (tmp_path / "continued" / FINISHED_MARKER).is_file()
    (stopped / FINISHED_MARKER).write_text(json.dumps({"global_step": 4}))  # a run that was not stopped: no note
    run_stage(str(path), ["--output_dir", str(tmp_path / "after_a_whole_run")])
    assert "divalign.train: note:" not in capsys.readouterr().out


def test_a_pipeline_stops_at_a_stage_a_threshold_stopped_and_so_does_its_rerun(tmp_path):
    """sft is stopped by its stop_below (its divalign_finished.json says why): tofu is not launched, the pipeline does
    not say "done", and a rerun stops there again instead of going on as if sft had finished; --accept-stopped sft
    goes on from sft's model."""
    import json

    from divalign.launch.output_dir import FINISHED_MARKER, write_finished
    from divalign.pipeline import DONE_MARKER, PipelineError
    from divalign.smoke import build_smoke_assets
    from pipelines import CopyLauncher, run, write_pipeline

    reason = "step 2: diversity/retained/ead = 0.400 is below stop_below 0.5 (...); training stops here"

    def finish(output: Path, command: list[str]) -> None:  # what divalign.train writes at the end of the stage
        stage = "sft" if output.name == "sft" else "tofu"
        write_finished(str(output), 2, reason if stage == "sft" else None)

    path = write_pipeline(tmp_path, build_smoke_assets(tmp_path / "assets"))
    stop = (
        f"stage 'sft' was stopped by a diversity threshold: {reason}. The pipeline stops here (tofu did not run); the "
        f"stage's model is in {tmp_path / 'runs' / 'sft'}. To go on from that model, rerun with --accept-stopped sft"
    )
    for attempt in ("run", "rerun"):
        launcher, logs = CopyLauncher(finish), []
        with pytest.raises(PipelineError) as caught:
            run(path, launcher, logs)
        assert str(caught.value).startswith(stop), attempt
        assert launcher.stages == (["sft"] if attempt == "run" else [])  # the rerun trains nothing: sft is recorded
        assert not any(line.endswith("done") for line in logs)
    marker = json.loads((tmp_path / "runs" / "sft" / DONE_MARKER).read_text())
    assert marker["stopped_early"] == reason  # recorded, nothing lost
    launcher, logs = CopyLauncher(finish), []
    run(path, launcher, logs, accept_stopped=["sft"])
    assert launcher.stages == ["tofu"] and logs[-1].endswith("done")
    assert any("stopped early by a diversity threshold" in line and "--accept-stopped sft" in line for line in logs)
    assert "stopped_early" not in json.loads((tmp_path / "runs" / "tofu" / FINISHED_MARKER).read_text())
