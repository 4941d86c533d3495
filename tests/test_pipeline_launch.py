"""`divalign pipeline` launches its stages the way `divalign train` launches a recipe (divalign.launch): a stage's
`accelerate_config` may be a preset, the recipe's launcher keys count, the stage's settings beat them and its
overrides beat both; each stage learns the steps trained before it (`pipeline/step`); the eval's `prompts` are any
source `divalign eval` reads, local ones checked before anything trains.

Stages are "trained" by a launcher that copies the input checkpoint into the output dir (tests/test_pipeline.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml

from divalign.dashboards import PIPELINE_OFFSET_ENV
from divalign.launch.relaunch import preset_directory
from divalign.pipeline import PipelineError, PipelineRunner, load_pipeline
from divalign.smoke import build_smoke_assets, write_jsonl
from pipelines import CopyLauncher, flag

REPO = Path(__file__).resolve().parents[1]
TOFU_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("assets"))


class StepsLauncher(CopyLauncher):
    """A copying launcher that also records `steps` trained per stage, as divalign.train would."""

    def __init__(self, steps: dict[str, int] | None = None):
        super().__init__()
        self.steps = steps or {}

    def __call__(self, command: list[str], env: dict[str, str]) -> int:
        status = super().__call__(command, env)
        steps = self.steps.get(env["WANDB_JOB_TYPE"], 0)
        (Path(flag(command, "--output_dir")) / "divalign_finished.json").write_text(json.dumps({"global_step": steps}))
        return status


def recipe(directory: Path, assets: Path, name: str = "tofu", **keys) -> Path:
    content = yaml.safe_load(TOFU_RECIPE.read_text())
    content.update(dataset_name=str(assets / "train.jsonl"), **keys)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def write_pipeline(directory: Path, assets: Path, stages: list[dict], **top) -> Path:
    content = {"name": "tiny", "output_root": str(directory / "runs"), "base_model": str(assets / "model")}
    path = directory / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**content, "stages": stages, **top}, sort_keys=False))
    return path


def run(path: Path, launcher, **kwargs):
    return PipelineRunner(load_pipeline(path), launcher=launcher, log=lambda _: None, **kwargs).run()


def launch_args(command: list[str]) -> list[str]:
    """What `accelerate launch` is given, before `-m divalign.train`."""
    return command[3 : command.index("divalign.train") - 1]


def test_a_stage_names_a_preset_which_trains_in_the_recipes_precision(tmp_path, assets):
    stages = [{"name": "tofu", "recipe": str(recipe(tmp_path, assets)), "accelerate_config": "zero2"}]
    launcher = StepsLauncher()
    run(write_pipeline(tmp_path, assets, stages, launch_args=["--num_processes", "1", "--cpu"]), launcher)
    ((command, _),) = launcher.calls
    zero2 = str(preset_directory() / "zero2.yaml")
    assert launch_args(command) == ["--config_file", zero2, "--num_processes", "1", "--cpu", "--mixed_precision", "no"]


def test_the_recipes_launcher_keys_then_the_stage_then_its_overrides(tmp_path, assets):
    keyed = recipe(tmp_path, assets, accelerate_config="ddp", num_processes=2, main_process_port=2950)
    stages = [
        {"name": "a", "recipe": str(keyed), "launch_args": ["--cpu"]},
        {"name": "b", "recipe": str(keyed), "launch_args": ["--num_processes", "3"]},
        {"name": "c", "recipe": str(keyed), "launch_args": ["--num_processes", "3"], "overrides": {"num_processes": 1}},
    ]
    launcher = StepsLauncher()
    run(write_pipeline(tmp_path, assets, stages), launcher)
    (a, _), (b, _), (c, _) = launcher.calls
    ddp = str(preset_directory() / "ddp.yaml")
    settings = ["--num_processes", "2", "--main_process_port", "2950"]
    assert launch_args(a) == ["--config_file", ddp, *settings, "--cpu", "--mixed_precision", "no"]
    assert flag(launch_args(b), "--num_processes") == "3" and flag(launch_args(c), "--num_processes") == "1"
    # launcher keys are the launcher's: the stage's divalign.train flags do not carry them
    assert "--num_processes" not in c[c.index("divalign.train") :]


def test_an_unknown_preset_is_refused_before_anything_runs(tmp_path, assets):
    stages = [{"name": "tofu", "recipe": str(recipe(tmp_path, assets)), "accelerate_config": "zero9"}]
    with pytest.raises(PipelineError, match=r"stage 'tofu'.*'zero9' is neither a file nor a preset; presets: ddp"):
        load_pipeline(write_pipeline(tmp_path, assets, stages))


def test_each_stage_learns_the_steps_trained_before_it_and_the_stages_are_recorded(tmp_path, assets):
    tofu = str(recipe(tmp_path, assets))
    stages = [{"name": name, "recipe": tofu} for name in ("sft", "dpo", "grpo")]
    launcher = StepsLauncher({"sft": 30, "dpo": 12, "grpo": 5})
    path = write_pipeline(tmp_path, assets, stages, launch_args=["--num_processes", "1", "--cpu"])
    run(path, launcher)
    assert [env[PIPELINE_OFFSET_ENV] for _, env in launcher.calls] == ["0", "30", "42"]
    manifest = json.loads((tmp_path / "runs" / ".divalign_state" / "pipeline.json").read_text())
    assert manifest == {
        "name": "tiny",
        "stages": [{"name": n, "output_dir": str(tmp_path / "runs" / n)} for n in ("sft", "dpo", "grpo")],
    }
    # a rerun after `--force-rerun dpo`: dpo starts after sft's 30 steps again, grpo after the new dpo's
    again = StepsLauncher({"dpo": 20, "grpo": 5})
    run(path, again, force_rerun=["dpo"])
    assert [(env["WANDB_JOB_TYPE"], env[PIPELINE_OFFSET_ENV]) for _, env in again.calls] == [("dpo", "30"), ("grpo", "50")]


# The lineage eval's prompts: any source `divalign eval` reads


def eval_pipeline(tmp_path: Path, assets: Path, prompts: str, **eval_keys) -> Path:
    stages = [{"name": "tofu", "recipe": str(recipe(tmp_path, assets))}]
    sampling = {"samples": 2, "max_new_tokens": 3, "backend": "hf", "device": "cpu"}
    block = {"prompts": prompts, **sampling, "metrics": ["distinct_1"], "bootstrap": 10, **eval_keys}
    return write_pipeline(tmp_path, assets, stages, launch_args=["--num_processes", "1", "--cpu"], eval=block)


def test_eval_prompts_from_a_saved_dataset_run_the_lineage_eval(tmp_path, assets):
    rows = {"question": ["say a word", "say a word w2", "say a word w3"]}
    saved = tmp_path / "probes"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows)}).save_to_disk(str(saved))
    path = eval_pipeline(tmp_path, assets, str(saved), prompts_split="validation", prompts_column="question")
    run(path, StepsLauncher())
    lineage = tmp_path / "runs" / "lineage"
    samples = [json.loads(line) for line in (lineage / "samples" / "tofu.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and "say a word w2" in samples[1]["prompt"]
    # the eval's hash covers the folder's content: other prompts make the finished eval stale, not silently reused
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"question": ["say"]})}).save_to_disk(str(saved))
    with pytest.raises(PipelineError, match=r"stage 'eval'.*already holds a result, but it finished with other inputs"):
        run(path, StepsLauncher())


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: d / "missing.parquet", {}, r"eval prompts file not found: .*missing\.parquet"),
        (lambda d: d / "nowhere" / "probes", {}, r"eval prompts file not found: .*nowhere/probes"),
        (lambda d: write_jsonl(d / "p.jsonl", [{"text": "hi"}]), {}, r"eval prompts: .*p\.jsonl:1: has no 'prompt' or"),
        (lambda d: d / "saved", {"prompts_split": "test"}, r"eval prompts: .*split 'test'.*its splits: \['validation'\]"),
    ],
    ids=["missing file", "missing folder", "bad row", "missing split"],
)
def test_a_bad_local_prompt_source_is_refused_before_anything_trains(tmp_path, assets, make, extra, message):
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"prompt": ["a"]})}).save_to_disk(
        str(tmp_path / "saved")
    )
    launcher = StepsLauncher()
    with pytest.raises(PipelineError, match=message):
        run(eval_pipeline(tmp_path, assets, str(make(tmp_path)), **extra), launcher)
    assert launcher.calls == []


def test_a_hub_dataset_id_is_left_for_the_eval_to_read(tmp_path, assets):
    spec = load_pipeline(eval_pipeline(tmp_path, assets, "someone/probe-prompts", prompts_split="test"))
    assert spec.eval["prompts_path"] == "someone/probe-prompts"
