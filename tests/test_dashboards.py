"""W&B dashboards (divalign.dashboards), read back from the offline run file: the `diversity` section against
`train/global_step`, the run-config keys runs group by, the samples table that grows and its jsonl twin; a
pipeline's `pipeline/step` and `divalign plot` of its stages end to end.

The W&B runs are offline; `tests/wandb_records.py` parses their `run-*.wandb` protobuf log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from divalign.dashboards import (
    PIPELINE_OFFSET_ENV,
    SAMPLES_FILE,
    SAMPLES_REPLACED_PREFIX,
    SamplesLog,
    wandb_row,
)
from divalign.generation import render_prompt
from divalign.launch.train import run_stage
from divalign.plotting import load_run, plot_runs
from divalign.smoke import build_smoke_assets, build_tokenizer, write_jsonl
from wandb_records import offline_runs

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
SFT_RECIPE = REPO / "recipes" / "smoke" / "sft_smoke.yaml"
PROBES = ["say a word w1", "say a word w2", "say a word w3"]
SAMPLES = 2
FAST_METRICS = ["distinct_1", "distinct_2", "ead"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def offline_wandb(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(directory),
        "WANDB_SILENT": "true",
        "WANDB_PROJECT": "divalign-test",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_META": "true",
        "WANDB_X_DISABLE_MACHINE_INFO": "true",
        "WANDB_DISABLE_GIT": "true",
    }.items():
        monkeypatch.setenv(name, value)


def diversity_recipe(directory: Path, assets: Path, base: Path = SMOKE_RECIPE) -> Path:
    probe = write_jsonl(directory / "probe.jsonl", [{"prompt": [{"role": "user", "content": p}]} for p in PROBES])
    content = yaml.safe_load(base.read_text())
    content.update(
        model_name_or_path=str(assets / "model"),
        dataset_name=str(assets / "train.jsonl"),
        report_to="wandb",
        logging_steps=1,
        save_strategy="no",
        diversity={
            "prompts": str(probe),
            "samples_per_prompt": SAMPLES,
            "max_new_tokens": 4,
            "every_steps": 2,
            "table_every_steps": 4,
            "metrics": FAST_METRICS,
            "embedding_model": None,
        },
    )
    path = directory / f"{base.stem}_diversity.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture(scope="module")
def tofu_run(assets, tmp_path_factory):
    """The smoke TOFU recipe with a diversity block, 4 steps, reporting to an offline W&B run."""
    import wandb

    directory = tmp_path_factory.mktemp("dashboards")
    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_wandb(monkeypatch, directory)
        monkeypatch.delenv(PIPELINE_OFFSET_ENV, raising=False)
        output_dir = directory / "out"
        try:
            run_stage(str(diversity_recipe(directory, assets)), ["--output_dir", str(output_dir), "--max_steps", "4"])
        finally:
            wandb.finish()
            wandb.teardown()  # stops the wandb-core service, which flushes the run file
    (run,) = offline_runs(directory)
    return run, output_dir


def test_diversity_curves_have_their_own_section_against_the_global_step(tofu_run):
    run, output_dir = tofu_run
    curves = run.rows_with("diversity/distinct_1")
    assert [row["train/global_step"] for row in curves] == [0, 2, 4]
    assert all("diversity/ead_p90" in row and "diversity/distinct_2_across" in row for row in curves)
    assert not [key for row in run.rows for key in row if key.startswith("train/diversity")]
    assert run.metrics["diversity/*"] == "train/global_step"
    # the training keys keep transformers' `train/` section and axis
    assert [row["train/global_step"] for row in run.rows_with("train/loss")] == [1, 2, 3, 4]
    assert all("pipeline/step" not in row for row in run.rows)  # not a pipeline stage
    # trainer_state.json (what TensorBoard and every other backend are handed) holds the same diversity/* values
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    logged = [(e["step"], e["diversity/distinct_1"]) for e in history if "diversity/distinct_1" in e]
    assert logged == [(row["train/global_step"], row["diversity/distinct_1"]) for row in curves]


def test_run_config_carries_the_loss_keys_runs_group_by(tofu_run):
    run, _ = tofu_run
    assert (run.config["loss"], run.config["loss_gamma"], run.config["loss_beta"]) == ("tofu", 3.0, 0.8)
    assert run.config["seed"] == 0 and "loss_h" not in run.config
    assert run.config["tofu_gamma"] == 3.0  # transformers' own dump of the training arguments is still there


def test_samples_go_to_one_growing_table_and_to_the_jsonl(tofu_run):
    run, output_dir = tofu_run
    per_evaluation = len(PROBES) * SAMPLES
    logged = run.rows_with("diversity/samples")
    assert [row["train/global_step"] for row in logged] == [0, 4]  # table_every_steps: 4
    tables = [row["diversity/samples"] for row in logged]
    assert {table["_type"] for table in tables} == {"incremental-table-file"}  # wandb 0.31 logs increments
    assert [table["nrows"] for table in tables] == [per_evaluation, 2 * per_evaluation]
    assert [table["increment_num"] for table in tables] == [0, 1]
    increments = [json.loads((run.directory / "files" / table["path"]).read_text()) for table in tables]
    assert increments[0]["columns"] == ["step", "prompt", "sample_index", "sample"]
    table_rows = [row for increment in increments for row in increment["data"]]

    lines = (output_dir / SAMPLES_FILE).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    # every evaluation goes to the jsonl; the table holds the ones on its cadence
    assert [row["step"] for row in rows] == [0] * per_evaluation + [2] * per_evaluation + [4] * per_evaluation
    on_cadence = [row for row in rows if row["step"] % 4 == 0]
    assert table_rows == [[row["step"], row["prompt"], row["sample_index"], row["sample"]] for row in on_cadence]
    # each probe, rendered through the policy's chat template, with its K samples
    tokenizer = build_tokenizer()
    rendered = [render_prompt([{"role": "user", "content": p}], tokenizer) for p in PROBES]
    assert [(row["prompt_index"], row["prompt"], row["sample_index"]) for row in rows[:per_evaluation]] == [
        (i, rendered[i], k) for i in range(len(PROBES)) for k in range(SAMPLES)
    ]


def test_samples_log_sets_aside_rows_an_earlier_attempt_wrote(tmp_path, capsys):
    """A run resumed (or restarted) over an earlier attempt writes its next evaluation again: that step's rows and
    later ones from the earlier attempt, and a row cut short by a kill, move to a side file; earlier rows stay."""
    path = tmp_path / SAMPLES_FILE
    old = [{"step": s, "prompt_index": 0, "prompt": "p", "sample_index": 0, "sample": f"old {s}"} for s in (0, 2, 4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in old) + '{"step": 6, "prom')
    log = SamplesLog(tmp_path)
    log.record(NO_WANDB, 4, ["p"], [["new a", "new b"]])
    log.record(NO_WANDB, 6, ["p"], [["new c", "new d"]])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [(0, "old 0"), (2, "old 2"), (4, "new a"), (4, "new b"), (6, "new c"), (6, "new d")]
    assert [(row["step"], row["sample"]) for row in rows] == expected
    (aside,) = tmp_path.glob(f"{SAMPLES_REPLACED_PREFIX}*.jsonl")
    assert aside.read_text() == json.dumps(old[2]) + "\n" + '{"step": 6, "prom'
    assert str(aside) in capsys.readouterr().out


NO_WANDB = SimpleNamespace(report_to=["none"])


def test_a_run_killed_before_its_first_checkpoint_starts_over_despite_its_samples(tmp_path):
    """The step-0 samples are written before any checkpoint: like the resolved recipe, they do not make the
    directory "not empty" for the same command run again (whose first evaluation sets them aside)."""
    from divalign.launch.output_dir import RESOLVED_RECIPE, prepare_output_dir
    from divalign.launch.recipe import RecipeError, RunOptions

    (tmp_path / RESOLVED_RECIPE).write_text("trainer: tofu\n")
    (tmp_path / SAMPLES_FILE).write_text('{"step": 0}\n')
    (tmp_path / f"{SAMPLES_REPLACED_PREFIX}20261130-120000.jsonl").write_text('{"step": 0}\n')
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None)
    assert prepare_output_dir(args, {}, RunOptions()).resume_from is None
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match=r"is not empty \(notes\.txt\)"):
        prepare_output_dir(args, {}, RunOptions())


def test_a_row_carries_the_pipeline_step_inside_a_pipeline(monkeypatch):
    monkeypatch.delenv(PIPELINE_OFFSET_ENV, raising=False)
    logs = {"loss": 1.5, "diversity/ead": 0.4, "eval_loss": 2.0}
    assert wandb_row(logs, 7) == {"train/loss": 1.5, "eval/loss": 2.0, "diversity/ead": 0.4, "train/global_step": 7}
    monkeypatch.setenv(PIPELINE_OFFSET_ENV, "10")
    assert wandb_row(logs, 7)["pipeline/step"] == 17


@pytest.mark.slow
def test_pipeline_stages_share_a_group_and_line_up_on_the_pipeline_step(assets, tmp_path, monkeypatch):
    """A real two-stage pipeline (SFT → TOFU on the smoke model): one W&B group, the stage as job type, every row's
    `pipeline/step` = the stage's step + the steps before it; `divalign plot OUTPUT_ROOT` draws them end to end."""
    import wandb  # noqa: F401  (the stages' runs are offline; nothing to finish in this process)

    from divalign.pipeline import run_pipeline

    offline_wandb(monkeypatch, tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sft, tofu = (diversity_recipe(tmp_path, assets, base) for base in (SFT_RECIPE, SMOKE_RECIPE))
    stages = [
        {"name": "sft", "recipe": str(sft), "overrides": {"max_steps": 3}},
        {"name": "tofu", "recipe": str(tofu), "overrides": {"max_steps": 4}},
    ]
    pipeline = tmp_path / "pipeline.yaml"
    root = tmp_path / "runs"
    content = {"name": "lineup", "output_root": str(root), "base_model": str(assets / "model"), "stages": stages}
    pipeline.write_text(yaml.safe_dump({**content, "launch_args": ["--num_processes", "1", "--cpu"]}))
    run_pipeline(str(pipeline))

    first, second = offline_runs(tmp_path)
    assert (first.group, first.job_type, second.group, second.job_type) == ("lineup", "sft", "lineup", "tofu")
    assert first.config["loss"] == "ce" and second.config["loss"] == "tofu"
    for run, offset in ((first, 0), (second, 3)):
        rows = [row for key in ("train/loss", "diversity/ead", "diversity/samples") for row in run.rows_with(key)]
        assert all(row["pipeline/step"] == offset + row["train/global_step"] for row in rows)
        assert [row["pipeline/step"] for row in run.rows_with("diversity/ead")] == [
            offset + s for s in ([0, 2, 3] if offset == 0 else [0, 2, 4])
        ]
    assert second.metrics["pipeline/step"] == ""

    drawn = load_run(root)
    assert drawn.stage_starts == [(0, "sft"), (3, "tofu")]
    assert [s for s, _ in drawn.segments[1]["diversity/ead"]] == [3, 5, 7]
    assert [s for s, _ in drawn.segments[0]["loss"]] == [1, 2, 3]
    out = plot_runs([root], tmp_path / "lineage.png", ["loss", "ead"])
    assert out.read_bytes()[:4] == b"\x89PNG"


class _OldWandb:
    """A wandb whose tables cannot be logged again (no `log_mode`): each log sends the whole table, anew."""

    run = object()

    def __init__(self):
        self.logged: list[dict] = []

    class Table:
        def __init__(self, columns, data=None):
            self.columns, self.data = columns, list(data or [])

    def log(self, row: dict) -> None:
        self.logged.append(row)


def test_without_growing_tables_every_log_sends_all_rows_so_far(tmp_path, monkeypatch):
    old = _OldWandb()
    monkeypatch.setitem(sys.modules, "wandb", old)
    monkeypatch.delenv(PIPELINE_OFFSET_ENV, raising=False)
    log = SamplesLog(tmp_path)
    log.record(SimpleNamespace(report_to=["wandb"]), 0, ["p"], [["a", "b"]])
    log.record(SimpleNamespace(report_to=["wandb"]), 5, ["p"], [["c", "d"]])
    tables = [row["diversity/samples"] for row in old.logged]
    assert [row["train/global_step"] for row in old.logged] == [0, 5]
    assert [len(table.data) for table in tables] == [2, 4]
    assert tables[1].data[2:] == [[5, "p", 0, "c"], [5, "p", 1, "d"]]


def test_the_loss_keys_of_every_trainer(tmp_path):
    from trl import DPOConfig, SFTConfig

    from divalign.dashboards import loss_config
    from divalign.trainers.gem_config import GEMConfig
    from divalign.trainers.grpo_config import DivGRPOConfig
    from divalign.trainers.tofu_config import TOFUConfig

    common = {"output_dir": str(tmp_path), "use_cpu": True, "report_to": "none", "seed": 7}
    gem = {"loss": "gem", "loss_beta": 0.6, "loss_h": "logsigmoid", "seed": 7}
    assert loss_config(GEMConfig(**common, gem_beta=0.6, gem_h="logsigmoid")) == gem
    tofu = {"loss": "tofu", "loss_gamma": 2.0, "loss_beta": 0.9, "seed": 7}
    assert loss_config(TOFUConfig(**common, tofu_gamma=2.0, tofu_beta=0.9)) == tofu
    assert loss_config(SFTConfig(**common)) == {"loss": "ce", "seed": 7}
    assert loss_config(SFTConfig(**common, loss_type="dft")) == {"loss": "dft", "seed": 7}
    assert loss_config(DPOConfig(**common, beta=0.2)) == {"loss": "dpo", "loss_beta": 0.2, "seed": 7}
    grpo = DivGRPOConfig(**common, rewards=["format"], per_device_train_batch_size=8)
    assert loss_config(grpo) == {"loss": "grpo", "loss_beta": 0.0, "seed": 7}
