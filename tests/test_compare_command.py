"""`divalign compare SPEC`: a spec refused before any training, the dry run, cells run one by one or all together,
finished cells reused, interrupted ones resumed, changed ones refused until --force, and the report.

The fast tests launch nothing real: `tests/pipelines.CopyLauncher` "trains" a stage by copying its input model (the
pipeline tests' stand-in for `accelerate launch`). The tests that compare reports train for real, in this process
(`InProcessLauncher` runs the launch command's `divalign.train RECIPE FLAGS` through `divalign.launch.train`), on the
tiny smoke model, with a calibration that stands in for `divalign.compare.calibration`: one number per model, read
from its weights, so two reports agree only when the same models were trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from divalign.cli import main as cli_main
from divalign.compare import CompareError, load_compare, run_compare
from divalign.launch import train
from divalign.smoke import build_smoke_assets, write_jsonl
from pipelines import SFT_RECIPE, TOFU_RECIPE, CopyLauncher, flag
from test_run_lifecycle import KillAt, Killed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    directory = build_smoke_assets(tmp_path_factory.mktemp("assets"))
    write_jsonl(directory / "eval.jsonl", [{"prompt": f"say a word w{i}", "answer": "w"} for i in range(3)])
    write_jsonl(directory / "calibration.jsonl", [{"prompt": f"tell a word w{i}", "answer": "w"} for i in range(3)])
    return directory


def write_spec(directory: Path, assets: Path, **changes) -> Path:
    """``directory/spec.yaml``: CE and TOFU on the smoke model x seeds 0 and 1, 2 steps each, one CPU process per
    cell, outputs under ``directory/out``; ``changes`` replace top-level keys (``evaluation`` is merged)."""
    content = {
        "name": "tiny",
        "output_root": str(directory / "out"),
        "base_model": str(assets / "model"),
        "variants": {"ce": str(SFT_RECIPE), "tofu": str(TOFU_RECIPE)},
        "seeds": [0, 1],
        "reference": "ce",
        "accelerate_config": None,
        "launch_args": ["--num_processes", "1", "--cpu"],
        "overrides": {"max_steps": 2, "save_steps": 1, "dataset_name": str(assets / "train.jsonl")},
        "evaluation": {
            "prompts": str(assets / "eval.jsonl"),
            "calibration_prompts": str(assets / "calibration.jsonl"),
            "verifier": "divalign.rewards.toy_validity:verify",
            "samples": 2,
            "max_new_tokens": 4,
        },
    }
    evaluation = {**content["evaluation"], **changes.pop("evaluation", {})}
    content.update(changes, evaluation=evaluation)
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def weight_sum(model: Path) -> float:
    return round(sum(float(t.double().sum()) for t in load_file(model / "model.safetensors").values()), 6)


class FakeCalibration:
    """Stands in for `calibrated_comparison`: per variant and seed, the sum of the model's weights (so it differs
    when the models differ); records each call's models."""

    def __init__(self):
        self.calls: list[dict[str, dict[int, Path]]] = []

    def __call__(self, models, reference, evaluation, out_dir):
        self.calls.append(models)
        weights = {
            variant: {str(seed): weight_sum(path) for seed, path in sorted(seeds.items())}
            for variant, seeds in models.items()
        }
        return {"reference": reference, "samples": evaluation.samples, "weights": weights}

    @staticmethod
    def markdown(results):
        return f"## Calibrated comparison (fake)\n\n{json.dumps(results['weights'], sort_keys=True)}\n"

    @property
    def pair(self):
        return self, self.markdown


class InProcessLauncher:
    """Runs a launch command's ``-m divalign.train RECIPE FLAGS`` in this process with the launch's W&B variables;
    ``kill_at`` (cell name -> step) stops that cell's stage at that step, as a killed process would (exit 137)."""

    def __init__(self, kill_at: dict[str, int] | None = None):
        self.kill_at = dict(kill_at or {})
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, command: list[str], env: dict[str, str]) -> int:
        self.calls.append((command, env))
        at = command.index("divalign.train") + 1
        recipe, flags = command[at], command[at + 1 :]
        cell = Path(flag(command, "--output_dir")).parent.name
        step = self.kill_at.pop(cell, None)
        stages = dict(train.STAGES)
        if step is not None:
            for name, stage in stages.items():
                train.STAGES[name] = dataclasses.replace(stage, build=armed(stage.build, KillAt(step)))
        try:
            train.run_stage(recipe, flags)
        except Killed:
            return 137
        finally:
            train.STAGES.update(stages)
        return 0

    @property
    def cells(self) -> list[str]:
        return [Path(flag(command, "--output_dir")).parent.name for command, _ in self.calls]


def armed(build, callback):
    def build_and_arm(run):
        trainer = build(run)
        trainer.add_callback(callback)
        return trainer

    return build_and_arm


def compare(path: Path, launcher, calibration=None, logs: list[str] | None = None, **kwargs):
    log = (logs if logs is not None else []).append
    calibration = calibration or FakeCalibration()
    return run_compare(str(path), launcher=launcher, calibration=calibration.pair, log=log, **kwargs)


def report(path: Path) -> dict:
    spec = load_compare(path)
    return json.loads((spec.output_root / "report" / "results.json").read_text())


# A bad spec is refused before any training, naming the key and what was expected


def _recipe_with_unknown_key(tmp_path: Path) -> str:
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(SFT_RECIPE.read_text() + "learnin_rate: 0.1\n")
    return str(recipe)


BAD_SPECS = [
    ({"variant": {"ce": "x"}}, r"unknown compare spec key 'variant' in .*spec\.yaml; did you mean 'variants'"),
    ({"variants": {"ce": str(SFT_RECIPE), "gem": "recipes/nope.yaml"}}, r"variants\.gem: recipe file not found: recipes/nope\.yaml"),
    ({"variants": {"ce": str(SFT_RECIPE), "tofu": {"recip": "x"}}}, r"variants\.tofu: expected a recipe path or a mapping with `recipe: PATH`"),
    ({"variants": {"ce-sft": str(SFT_RECIPE)}}, r"variants\.ce-sft: a variant name is a word"),
    ({"variants": {"ce": [str(SFT_RECIPE), {"recipe": str(SFT_RECIPE), "overides": {}}]}}, r"unknown stage key 'overides' in .*variants\.ce\[1\]"),
    ({"variants": {"ce": [str(SFT_RECIPE), str(SFT_RECIPE)]}}, r"variants\.ce: two stages are named 'sft_smoke'"),
    ({"variants": {"ce": str(SFT_RECIPE)}, "reference": "cee"}, r"`reference` must name a variant \(ce\), got 'cee'"),
    ({"seeds": [0, 0]}, r"`seeds` lists 0 twice"),
    ({"seeds": [0, "1"]}, r"`seeds` must be distinct non-negative integers, got '1'"),
    ({"seeds": [0, 1.5]}, r"`seeds` must be distinct non-negative integers, got 1\.5"),
    ({"seeds": []}, r"`seeds` must be a non-empty list"),
    ({"seeds": None}, r"`seeds` is required"),
    ({"overrides": {"max_step": 2}}, r"variants\.ce \(cell ce-seed0\): .*unknown override key 'max_step'"),
    ({"overrides": {"output_dir": "x"}}, r"`overrides` cannot set 'output_dir'"),
    ({"evaluation": {"samples": 1}}, r"evaluation: `samples` must be an integer >= 2, got 1"),
    ({"evaluation": {"temperature_range": [1.5, 0.5]}}, r"`temperature_range` must be \[LOW, HIGH\] with 0 < LOW < HIGH"),
    ({"evaluation": {"temperature_grid": [1.0, 0]}}, r"`temperature_grid` must be a non-empty list of temperatures > 0, got \[1\.0, 0\]"),
    ({"evaluation": {"temperature_grid": []}}, r"`temperature_grid` must be a non-empty list of temperatures > 0"),
    ({"evaluation": {"samples_dir": 3}}, r"`samples_dir` must be a non-empty string, got 3"),
    ({"evaluation": {"tolerance": 0}}, r"`tolerance` must be a number > 0, got 0"),
    ({"evaluation": {"sample": 4}}, r"unknown evaluation key 'sample' .*did you mean 'samples'"),
    ({"evaluation": {"diversity_metric": "distinct_9"}}, r"`diversity_metric`: Unknown diversity metric"),
    ({"evaluation": {"verifier": None}}, r"evaluation: set `quality` .* or `verifier`"),
    ({"evaluation": {"quality": "no_such_reward"}}, r"`quality` 'no_such_reward'.* neither a reward of the registry"),
    ({"evaluation": {"verifier": "nomodule_xyz:verify"}}, r"evaluation: `verifier`"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), BAD_SPECS, ids=[m[:40] for _, m in BAD_SPECS])
def test_a_bad_spec_is_refused_before_any_training(tmp_path, assets, changes, message):
    launcher = CopyLauncher()
    with pytest.raises(CompareError, match=message):
        compare(write_spec(tmp_path, assets, **changes), launcher)
    assert launcher.calls == [] and not (tmp_path / "out").exists()


def test_a_recipe_key_no_trainer_knows_is_refused(tmp_path, assets):
    path = write_spec(tmp_path, assets, variants={"ce": _recipe_with_unknown_key(tmp_path)})
    with pytest.raises(CompareError, match=r"variants\.ce \(cell ce-seed0\): .*unknown recipe key 'learnin_rate'"):
        compare(path, CopyLauncher())


def test_a_recipe_the_launch_check_refuses_fails_before_the_first_cell(tmp_path, assets):
    """tofu_beta = -1 is refused by the launch check of every TOFU cell; CE's cells come first and do not train."""
    variants = {"ce": str(SFT_RECIPE), "tofu": {"recipe": str(TOFU_RECIPE), "overrides": {"tofu_beta": -1}}}
    launcher = CopyLauncher()
    with pytest.raises(CompareError, match=r"cell tofu-seed0: stage 'tofu_smoke' \(.*\): .*`tofu_beta` must be > 0"):
        compare(write_spec(tmp_path, assets, variants=variants), launcher)
    assert launcher.calls == []


def test_overlapping_evaluation_and_calibration_prompts_are_refused(tmp_path, assets):
    overlap = write_jsonl(tmp_path / "calibration.jsonl", [{"prompt": "tell a word"}, {"prompt": "say a word w1"}])
    path = write_spec(tmp_path, assets, evaluation={"calibration_prompts": str(overlap)})
    with pytest.raises(CompareError, match=r"1 prompt\(s\) are in both `prompts` and `calibration_prompts` \(e\.g\. 'say a word w1'\)"):  # fmt: skip
        compare(path, CopyLauncher())
    same = write_spec(tmp_path, assets, evaluation={"calibration_prompts": str(assets / "eval.jsonl")})
    with pytest.raises(CompareError, match=r"`calibration_prompts` must be other prompts than `prompts`"):
        compare(same, CopyLauncher())
    missing = write_spec(tmp_path, assets, evaluation={"calibration_prompts": str(tmp_path / "nope.jsonl")})
    with pytest.raises(CompareError, match=r"`calibration_prompts` file not found: .*nope\.jsonl"):
        compare(missing, CopyLauncher())


def test_the_cli_reports_a_bad_spec_in_one_line(tmp_path, assets, capsys):
    assert cli_main(["compare", str(write_spec(tmp_path, assets, seeds=[3, 3]))]) == 2
    assert capsys.readouterr().err.startswith("divalign compare: error: ")


# Dry run and cell names


def test_dry_run_lists_every_cell_its_seed_and_its_commands(tmp_path, assets, capsys):
    path = write_spec(tmp_path, assets)
    assert cli_main(["compare", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for variant, recipe in (("ce", SFT_RECIPE), ("tofu", TOFU_RECIPE)):
        for seed in (0, 1):
            cell = f"{variant}-seed{seed}"
            assert f"cell {cell} (seed {seed}): divalign compare {path} --cell {cell}" in out
            (launch,) = [
                line for line in out.splitlines() if f"[divalign pipeline {cell}]" in line and "running:" in line
            ]
            words = shlex.split(launch.split("running: ", 1)[1])
            assert words[words.index("divalign.train") + 1] == str(recipe)
            assert (flag(words, "--seed"), flag(words, "--output_dir")) == (
                str(seed),
                str(tmp_path / "out" / "cells" / cell / recipe.stem),
            )
    assert "dry run: 4 cells, nothing was launched" in out
    assert not (tmp_path / "out").exists()


def test_list_cells_prints_the_names_a_job_array_takes(tmp_path, assets, capsys):
    assert cli_main(["compare", str(write_spec(tmp_path, assets)), "--list-cells"]) == 0
    assert capsys.readouterr().out.split() == ["ce-seed0", "ce-seed1", "tofu-seed0", "tofu-seed1"]


def test_an_unknown_cell_is_named_with_the_cells_there_are(tmp_path, assets):
    with pytest.raises(CompareError, match=r"no cell named 'gem-seed0'; cells are ce-seed0, ce-seed1, tofu-seed0"):
        compare(write_spec(tmp_path, assets), CopyLauncher(), cell="gem-seed0")


def test_a_data_seed_the_recipes_set_follows_the_cell_seed(tmp_path, assets):
    recipe = tmp_path / "sft_data_seed.yaml"
    recipe.write_text(SFT_RECIPE.read_text() + "data_seed: 7\n")
    launcher = CopyLauncher()
    compare(write_spec(tmp_path, assets, variants={"ce": str(recipe), "tofu": str(TOFU_RECIPE)}), launcher)
    seeds = {Path(flag(c, "--output_dir")).parent.name: (flag(c, "--seed"), "--data_seed" in c and flag(c, "--data_seed")) for c, _ in launcher.calls}  # fmt: skip
    assert seeds == {
        "ce-seed0": ("0", "0"),
        "ce-seed1": ("1", "1"),
        "tofu-seed0": ("0", False),
        "tofu-seed1": ("1", False),
    }


# Running cells: one W&B group, reuse, resume, refuse until --force (stand-in launcher)


def test_a_full_run_trains_every_cell_in_one_wandb_group_then_reports(tmp_path, assets):
    path = write_spec(tmp_path, assets, wandb_group="my-group")
    launcher, calibration = CopyLauncher(), FakeCalibration()
    compare(path, launcher, calibration)
    envs = {Path(flag(c, "--output_dir")).parent.name: e for c, e in launcher.calls}
    assert sorted(envs) == ["ce-seed0", "ce-seed1", "tofu-seed0", "tofu-seed1"]
    assert {e["WANDB_RUN_GROUP"] for e in envs.values()} == {"my-group"}
    assert [envs[c]["WANDB_JOB_TYPE"] for c in sorted(envs)] == ["ce", "ce", "tofu", "tofu"]
    (models,) = calibration.calls
    cells = tmp_path / "out" / "cells"
    assert models == {v: {s: cells / f"{v}-seed{s}" / stem for s in (0, 1)} for v, stem in (("ce", "sft_smoke"), ("tofu", "tofu_smoke"))}  # fmt: skip
    results = report(path)
    assert results["missing"] == [] and [row["state"] for row in results["cells"]] == ["finished"] * 4
    assert results["calibration"]["reference"] == "ce" and results["wandb_group"] == "my-group"
    markdown = (tmp_path / "out" / "report" / "results.md").read_text()
    assert "## Calibrated comparison (fake)" in markdown and "| tofu-seed1 | tofu | 1 | finished |" in markdown


def test_finished_cells_are_reused(tmp_path, assets):
    path = write_spec(tmp_path, assets)
    compare(path, CopyLauncher())
    again, logs = CopyLauncher(), []
    compare(path, again, logs=logs)
    assert again.calls == []
    assert sum("skipped, finished with the same inputs" in line for line in logs) == 4


def test_the_report_names_the_missing_cells_and_reports_the_finished_ones(tmp_path, assets, capsys):
    path = write_spec(tmp_path, assets)
    for cell in ("tofu-seed1", "ce-seed0"):
        compare(path, CopyLauncher(), cell=cell)
    calibration, logs = FakeCalibration(), []
    compare(path, CopyLauncher(), calibration, logs, report=True)
    (models,) = calibration.calls
    assert {v: sorted(s) for v, s in models.items()} == {"ce": [0], "tofu": [1]}
    results = report(path)
    assert results["missing"] == ["ce-seed1", "tofu-seed0"]
    missing = {row["cell"]: row for row in results["cells"] if row["state"] != "finished"}
    assert missing["tofu-seed0"]["command"] == f"divalign compare {path} --cell tofu-seed0"
    assert any("missing cells (not in the report): ce-seed1, tofu-seed0" in line for line in logs)
    assert (
        "Missing cells (2), not in the comparison: ce-seed1, tofu-seed0."
        in (tmp_path / "out" / "report" / "results.md").read_text()
    )


def test_a_report_without_a_finished_reference_says_why_there_is_no_comparison(tmp_path, assets):
    path = write_spec(tmp_path, assets)
    compare(path, CopyLauncher(), cell="tofu-seed0")
    calibration = FakeCalibration()
    compare(path, CopyLauncher(), calibration, report=True)
    assert calibration.calls == []
    results = report(path)
    assert (
        results["calibration"] is None
        and results["calibration_skipped"] == "no cell of the reference 'ce' has finished"
    )


def test_a_changed_recipe_is_refused_until_force(tmp_path, assets):
    recipe = tmp_path / "tofu.yaml"
    recipe.write_text(TOFU_RECIPE.read_text())
    path = write_spec(tmp_path, assets, variants={"ce": str(SFT_RECIPE), "tofu": str(recipe)})
    compare(path, CopyLauncher())
    recipe.write_text(TOFU_RECIPE.read_text().replace("tofu_gamma: 3.0", "tofu_gamma: 2.0"))
    launcher = CopyLauncher()
    with pytest.raises(CompareError, match=r"cell tofu-seed0: .*/out/cells/tofu-seed0/tofu already holds a result, but it finished with other inputs.*with `divalign compare`, pass --force"):  # fmt: skip
        compare(path, launcher)
    assert launcher.calls == []  # refused before any cell ran, the unchanged ones included
    with pytest.raises(CompareError, match="cell tofu-seed1: "):
        compare(path, CopyLauncher(), cell="tofu-seed1")
    launcher, logs = CopyLauncher(), []
    compare(path, launcher, logs=logs, force=True)
    assert sorted(Path(flag(c, "--output_dir")).parent.name for c, _ in launcher.calls) == ["tofu-seed0", "tofu-seed1"]
    assert len(list((tmp_path / "out" / "cells" / "tofu-seed0").glob("tofu.old-*"))) == 1
    assert not list((tmp_path / "out" / "cells" / "ce-seed0").glob("*.old-*"))  # unchanged: kept, not retrained


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path, assets):
    def killed_after_checkpoint(output: Path, command: list[str]) -> None:
        (output / "checkpoint-1").mkdir()
        (output / "checkpoint-1" / "model.safetensors").write_text("weights")
        (output / "checkpoint-1" / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
        (output / "model.safetensors").unlink()

    path = write_spec(tmp_path, assets)
    with pytest.raises(
        CompareError, match=r"cell ce-seed1: stage 'sft_smoke' failed \(exit status 137.*resume it from"
    ):
        compare(path, CopyLauncher(killed_after_checkpoint, exit_status=137), cell="ce-seed1")
    assert load_status(path, "ce-seed1") == "interrupted"
    launcher = CopyLauncher()
    compare(path, launcher, cell="ce-seed1")
    ((command, _),) = launcher.calls
    assert flag(command, "--resume_from_checkpoint") == "true"
    assert load_status(path, "ce-seed1") == "finished"


def load_status(path: Path, cell: str) -> str:
    compare(path, CopyLauncher(), report=True)
    return {row["cell"]: row["state"] for row in report(path)["cells"]}[cell]


def test_a_multi_stage_variant_and_shared_then_stages(tmp_path, assets):
    """`then:` appends the same stage to every variant; each cell's model is its last stage's output."""
    variants = {"ce": str(SFT_RECIPE), "tofu": str(TOFU_RECIPE)}
    then = [{"name": "after", "recipe": str(SFT_RECIPE)}]
    path = write_spec(tmp_path, assets, variants=variants, then=then, seeds=[0])
    launcher, calibration = CopyLauncher(), FakeCalibration()
    compare(path, launcher, calibration)
    cells = tmp_path / "out" / "cells"
    chain = [(flag(c, "--model_name_or_path"), flag(c, "--output_dir")) for c, _ in launcher.calls]
    assert chain[:2] == [(str(assets / "model"), str(cells / "ce-seed0" / "sft_smoke")),
                         (str(cells / "ce-seed0" / "sft_smoke"), str(cells / "ce-seed0" / "after"))]  # fmt: skip
    assert calibration.calls[0] == {
        "ce": {0: cells / "ce-seed0" / "after"},
        "tofu": {0: cells / "tofu-seed0" / "after"},
    }


# Real (tiny) training in this process


def normalized(path: Path) -> dict:
    """The report with the output root written as ROOT, so reports of two roots compare."""
    spec = load_compare(path)
    text = (spec.output_root / "report" / "results.json").read_text().replace(str(spec.output_root), "ROOT")
    return json.loads(text.replace(str(path), "SPEC"))


def test_cells_run_one_by_one_in_any_order_give_the_report_of_one_full_run(tmp_path, assets, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    full = write_spec(whole, assets)
    compare(full, InProcessLauncher())
    split = write_spec(parts, assets)
    launcher = InProcessLauncher()
    for cell in ("tofu-seed1", "ce-seed1", "tofu-seed0", "ce-seed0"):
        compare(split, launcher, cell=cell)
    assert launcher.cells == ["tofu-seed1", "ce-seed1", "tofu-seed0", "ce-seed0"]
    compare(split, InProcessLauncher(), report=True)
    first, second = normalized(full), normalized(split)
    assert first == second
    weights = first["calibration"]["weights"]
    assert weights["ce"]["0"] != weights["ce"]["1"] != weights["tofu"]["1"]  # the seeds and losses trained apart


def test_a_cell_killed_during_training_resumes_to_the_same_model(tmp_path, assets, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    steps = {"max_steps": 3, "save_steps": 1, "dataset_name": str(assets / "train.jsonl")}
    full = write_spec(whole, assets, seeds=[0], overrides=steps)
    compare(full, InProcessLauncher(), cell="tofu-seed0")
    path = write_spec(killed, assets, seeds=[0], overrides=steps)
    with pytest.raises(CompareError, match=r"cell tofu-seed0: .*exit status 137.*resume it from .*checkpoint-1$"):
        compare(path, InProcessLauncher(kill_at={"tofu-seed0": 2}), cell="tofu-seed0")
    logs = []
    compare(path, InProcessLauncher(), logs=logs, cell="tofu-seed0")
    assert any("stage 'tofu_smoke': resuming" in line for line in logs)
    resumed, uninterrupted = (root / "out" / "cells" / "tofu-seed0" / "tofu_smoke" for root in (killed, whole))
    a, b = (load_file(d / "model.safetensors") for d in (resumed, uninterrupted))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert yaml.safe_load((resumed / "divalign_recipe.yaml").read_text())["resumes"][0]["step"] == 1


@pytest.mark.slow
def test_a_real_run_through_accelerate_shares_one_wandb_group(tmp_path, assets, monkeypatch):
    """Two cells through the real `accelerate launch -m divalign.train` (the CLI, one `--cell` each), W&B offline:
    one group, the variant as job type."""
    from wandb_records import offline_runs

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    overrides = {"max_steps": 1, "save_steps": 1, "dataset_name": str(assets / "train.jsonl"), "report_to": "wandb"}
    path = write_spec(tmp_path, assets, seeds=[0], overrides=overrides)
    assert cli_main(["compare", str(path), "--cell", "ce-seed0"]) == 0
    assert cli_main(["compare", str(path), "--cell", "tofu-seed0"]) == 0
    runs = offline_runs(tmp_path)
    assert sorted((run.group, run.job_type) for run in runs) == [("tiny", "ce"), ("tiny", "tofu")]
    assert os.path.isfile(tmp_path / "out" / "cells" / "tofu-seed0" / "tofu_smoke" / "model.safetensors")


# The shipped specs


def test_the_toy_spec_loads_with_make_demos_layout(tmp_path, monkeypatch):
    """recipes/compare/toy.yaml on a `make demo`-like runs/demo (a base model, the world's prompt files): 4 variants
    x 3 seeds, every cell validated as a pipeline, the evaluation and calibration prompts the world writes."""
    from divalign.compare.cells import build_cells
    from divalign.smoke import save_tiny_model
    from divalign.toyworld.preference_data import write_preference_data
    from divalign.toyworld.world import ToyWorld

    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    save_tiny_model(tmp_path / "runs" / "demo" / "base_model")
    write_preference_data(ToyWorld(), tmp_path / "runs" / "demo" / "world", pairs_per_prompt=1)
    monkeypatch.chdir(tmp_path)
    spec = load_compare("recipes/compare/toy.yaml")
    assert (list(spec.variants), spec.seeds, spec.reference) == (["ce", "tofu", "gem", "dft"], (0, 1, 2), "ce")
    cells = build_cells(spec)
    assert [c.name for c in cells[:3]] == ["ce-seed0", "ce-seed1", "ce-seed2"] and len(cells) == 12
    assert {c.pipeline.stages[0].overrides["seed"] for c in cells} == {0, 1, 2}
    assert spec.evaluation.verifier == "divalign.rewards.toy_validity:verify"


def test_the_dft_recipe_is_the_ce_recipe_with_trls_dft_loss():
    ce, dft = (yaml.safe_load((REPO / "recipes" / "toy" / f"{n}_sft.yaml").read_text()) for n in ("ce", "dft"))
    assert {k for k in ce.keys() | dft.keys() if ce.get(k) != dft.get(k)} == {"loss_type", "output_dir", "run_name"}
    assert dft["loss_type"] == "dft" and dft["trainer"] == "sft"


# The SLURM job array


def test_the_slurm_array_script_submits_one_task_per_cell_then_the_report(tmp_path, assets):
    """examples/slurm/compare_array.sbatch with a stand-in `sbatch` (it records its arguments) and the real
    `divalign compare --list-cells`: an array of 4 tasks, then a report job after it; a task runs its own cell."""
    spec = write_spec(tmp_path, assets)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake_sbatch = f'#!/bin/bash\necho "sbatch $*" >> {calls}\nwc -l < {calls}\n'
    real = Path(os.environ["PATH"].split(os.pathsep)[0]) / "divalign"
    fake_divalign = f'#!/bin/bash\nif [[ " $* " == *" --list-cells "* ]]; then exec {real} "$@"; fi\necho "divalign $*" >> {calls}\n'
    for name, text in (("sbatch", fake_sbatch), ("divalign", fake_divalign)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = REPO / "examples" / "slurm" / "compare_array.sbatch"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    done = subprocess.run(["bash", str(script), str(spec)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    array, report_job = calls.read_text().splitlines()
    assert array == f"sbatch --parsable --array=0-3 {script} {spec}"
    assert "--dependency=afterany:1 " in report_job and report_job.endswith(f"--wrap divalign compare {spec} --report")
    assert "array job 1 (4 tasks); report: job 2" in done.stdout
    calls.unlink()
    task = subprocess.run(["bash", str(script), str(spec)], env={**env, "SLURM_ARRAY_TASK_ID": "2"}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert task.returncode == 0, task.stderr[-3000:]
    assert calls.read_text() == f"divalign compare {spec} --cell tofu-seed0\n"


def test_a_temperature_grid_is_read_sorted_for_the_frontier_figure(tmp_path, assets):
    spec = load_compare(write_spec(tmp_path, assets, evaluation={"temperature_grid": [1.6, 0.7, 1, 0.7]}))
    assert spec.evaluation.temperature_grid == (0.7, 1.0, 1.6)
    assert load_compare(write_spec(tmp_path, assets)).evaluation.temperature_grid is None
