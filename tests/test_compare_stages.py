"""`divalign compare` at several stages (`evaluate_stages`: e.g. after SFT and after the GRPO stage that follows it),
the SFT stages of an SFT spec reused by an SFT-then-RL spec sharing its output root, each spec's own report
(`report_dir`), the outcomes read from the samples (pass@1, pass@k, coverage, entropy), and the RL curves figure.

The fast tests launch nothing real (`tests/pipelines.CopyLauncher`) and stand in for the calibration
(`test_compare_command.FakeCalibration`); the quick mode at the end trains a tiny toy world's SFT → GRPO cells and
runs the real report, then recomputes its numbers from the saved samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from divalign.compare import CompareError, load_compare
from divalign.compare.curves_figure import plot_stage_curves
from divalign.compare.outcomes import (
    answer_count,
    answer_entropy,
    outcomes_from_samples,
    prompt_outcomes,
    stage_changes,
    summarize,
)
from divalign.compare.spec import EvaluationSpec
from divalign.rewards.toy_validity import verify
from divalign.smoke import build_smoke_assets, write_jsonl
from pipelines import REPO, SFT_RECIPE, TOFU_RECIPE, CopyLauncher, flag
from test_compare_command import FakeCalibration, compare, write_spec


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """test_compare_command's smoke assets (the model, its data, evaluation and calibration prompts)."""
    directory = build_smoke_assets(tmp_path_factory.mktemp("assets"))
    write_jsonl(directory / "eval.jsonl", [{"prompt": f"say a word w{i}", "answer": "w"} for i in range(3)])
    write_jsonl(directory / "calibration.jsonl", [{"prompt": f"tell a word w{i}", "answer": "w"} for i in range(3)])
    return directory


THEN = [{"name": "rl", "recipe": str(SFT_RECIPE)}]  # stands in for the GRPO stage: any recipe, the same for all


# The spec: stage names checked before anything trains


BAD_STAGES = [
    ({"evaluate_stages": ["sft", "rl"]}, r"`evaluate_stages` names 'sft', which is no stage of the reference variant 'ce'; its stages are sft_smoke, rl"),
    ({"evaluate_stages": "rl"}, r"`evaluate_stages` must be a non-empty list of stage names of the reference 'ce' \(sft_smoke, rl\), got 'rl'"),
    ({"evaluate_stages": []}, r"`evaluate_stages` must be a non-empty list"),
    ({"evaluate_stages": ["rl", "rl"]}, r"`evaluate_stages` lists 'rl' twice"),
    ({"evaluate_stages": ["rl"], "variants": {"ce": str(SFT_RECIPE), "tofu": [str(SFT_RECIPE), str(TOFU_RECIPE)]}},
     r"the variants need equally many stages; stages per variant: ce 2, tofu 3"),
    ({"report_dir": ""}, r"`report_dir` must be a directory path, got ''"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), BAD_STAGES, ids=[m[:40] for _, m in BAD_STAGES])
def test_bad_stage_names_are_refused_before_any_training(tmp_path, assets, changes, message):
    launcher = CopyLauncher()
    with pytest.raises(CompareError, match=message):
        compare(write_spec(tmp_path, assets, **{"then": THEN, **changes}), launcher)
    assert launcher.calls == [] and not (tmp_path / "out").exists()


def test_without_evaluate_stages_the_last_stage_is_compared_once(tmp_path, assets):
    path = write_spec(tmp_path, assets, then=THEN, seeds=[0])
    calibration = FakeCalibration()
    compare(path, CopyLauncher(), calibration)
    cells = tmp_path / "out" / "cells"
    assert calibration.calls == [{v: {0: cells / f"{v}-seed0" / "rl"} for v in ("ce", "tofu")}]
    results = json.loads((tmp_path / "out" / "report" / "results.json").read_text())
    assert "stages" not in results and results["calibration"]["reference"] == "ce"
    assert load_compare(path).report_dir == tmp_path / "out" / "report"


# Several stages in one report


def outcomes_stand_in(calls: list):
    """Stands in for `stage_outcomes`: one prompt whose pass@1 is the sum of the model's path length (differs per
    stage), enough for the sections and the stage-to-stage changes."""

    def outcomes(models, reference, evaluation, out_dir):
        calls.append((models, out_dir))
        values = {
            v: {s: {n: [float(len(str(p)))] * 3 for n in ("pass_at_1", "pass_at_k", "coverage", "entropy")}
                for s, p in by_seed.items()}
            for v, by_seed in models.items()
        }  # fmt: skip
        from divalign.compare.outcomes import summarize_stage

        return {
            "temperature": 1.0,
            "k": evaluation.samples,
            "prompts": 3,
            "per_prompt": {v: {str(s): o for s, o in by_seed.items()} for v, by_seed in values.items()},
            "variants": summarize_stage(values, reference, evaluation),
        }

    return outcomes


def test_each_named_stage_gets_its_own_comparison_against_the_reference_at_that_stage(tmp_path, assets):
    path = write_spec(tmp_path, assets, then=THEN, evaluate_stages=["sft_smoke", "rl"])
    calibration, calls = FakeCalibration(), []
    compare(path, CopyLauncher(), calibration, outcomes=outcomes_stand_in(calls))
    cells, report_dir = tmp_path / "out" / "cells", tmp_path / "out" / "report"
    first = {"ce": {s: cells / f"ce-seed{s}" / "sft_smoke" for s in (0, 1)},
             "tofu": {s: cells / f"tofu-seed{s}" / "tofu_smoke" for s in (0, 1)}}  # fmt: skip
    second = {v: {s: cells / f"{v}-seed{s}" / "rl" for s in (0, 1)} for v in ("ce", "tofu")}
    assert calibration.calls == [first, second]  # each variant at its own stage in that position
    assert [out_dir for _, out_dir in calls] == [report_dir / "calibration" / n for n in ("sft_smoke", "rl")]
    results = json.loads((report_dir / "results.json").read_text())
    assert list(results["stages"]) == ["sft_smoke", "rl"] and "calibration" not in results
    assert results["stages"]["sft_smoke"]["stages"] == {"ce": "sft_smoke", "tofu": "tofu_smoke"}
    assert results["stages"]["rl"]["calibration"]["reference"] == "ce"
    # CopyLauncher copies: every stage's model has the same weights, so only the path lengths differ
    change = results["stage_changes"]["sft_smoke -> rl"]["tofu"]["pass_at_1"]["pooled"]["estimate"]
    assert change == len(str(second["tofu"][0])) - len(str(first["tofu"][0]))
    tofu = results["stages"]["sft_smoke"]["outcomes"]["variants"]["tofu"]["pass_at_1"]
    assert tofu["vs_reference"]["pooled"]["estimate"] == len(str(first["tofu"][0])) - len(str(first["ce"][0]))
    markdown = (report_dir / "results.md").read_text()
    for heading in ("## After stage `sft_smoke`", "## After stage `rl`", "### Calibrated comparison (fake)",
                    "### Outcomes", "## From `sft_smoke` to `rl`", "| tofu − ce |"):  # fmt: skip
        assert heading in markdown, heading
    assert markdown.index("## After stage `sft_smoke`") < markdown.index("## After stage `rl`")


def test_each_stages_calibration_figure_is_linked_from_the_report(tmp_path, assets):
    """The calibration's figure lies in its stage's directory; the markdown beside it links it from the report dir."""

    class WithFigure(FakeCalibration):
        def __call__(self, models, reference, evaluation, out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "calibrated_frontiers.png").write_bytes(b"png")
            figure = str(out_dir / "calibrated_frontiers.png")
            return {**super().__call__(models, reference, evaluation, out_dir), "figure": figure, "figure_link": "x"}

    path = write_spec(tmp_path, assets, then=THEN, evaluate_stages=["sft_smoke", "rl"], seeds=[0])
    compare(path, CopyLauncher(), WithFigure())
    report_dir = tmp_path / "out" / "report"
    results = json.loads((report_dir / "results.json").read_text())
    for stage in ("sft_smoke", "rl"):
        link = results["stages"][stage]["calibration"]["figure_link"]
        assert link == f"calibration/{stage}/calibrated_frontiers.png" and (report_dir / link).is_file()


def test_no_finished_reference_says_why_for_every_stage(tmp_path, assets):
    path = write_spec(tmp_path, assets, then=THEN, evaluate_stages=["rl"])
    compare(path, CopyLauncher(), cell="tofu-seed0")
    calibration = FakeCalibration()
    compare(path, CopyLauncher(), calibration, report=True)
    results = json.loads((tmp_path / "out" / "report" / "results.json").read_text())
    assert calibration.calls == [] and results["stages"] == {}
    assert results["calibration_skipped"] == "no cell of the reference 'ce' has finished"


# An SFT spec's finished cells reused by the SFT-then-RL spec on the same output root


def test_the_rl_spec_reuses_the_sft_specs_finished_stages_and_keeps_its_own_report(tmp_path, assets):
    sft = write_spec(tmp_path, assets)
    compare(sft, CopyLauncher())
    cells = tmp_path / "out" / "cells"
    weights = {c: (cells / c / s / "model.safetensors") for c, s in (("ce-seed0", "sft_smoke"), ("tofu-seed1", "tofu_smoke"))}  # fmt: skip
    before = {c: w.stat().st_mtime_ns for c, w in weights.items()}
    markers = {c: (w.parent / ".divalign_stage_done.json").read_text() for c, w in weights.items()}
    sft_report = (tmp_path / "out" / "report" / "results.md").read_text()

    rl_dir = tmp_path / "rl"
    rl_dir.mkdir()
    rl = write_spec(rl_dir, assets, output_root=str(tmp_path / "out"), then=THEN,
                    report_dir=str(tmp_path / "out" / "report_rl"), evaluate_stages=["sft_smoke", "rl"])  # fmt: skip
    launcher, logs = CopyLauncher(), []
    compare(rl, launcher, logs=logs)
    # only the new stage trained, each from the SFT spec's model of the same cell
    assert [Path(flag(c, "--output_dir")).name for c, _ in launcher.calls] == ["rl"] * 4
    assert {flag(c, "--model_name_or_path") for c, _ in launcher.calls} == {
        str(cells / f"{v}-seed{s}" / stem) for v, stem in (("ce", "sft_smoke"), ("tofu", "tofu_smoke")) for s in (0, 1)
    }
    assert sum("skipped, finished with the same inputs" in line for line in logs) == 4
    assert {c: w.stat().st_mtime_ns for c, w in weights.items()} == before
    assert {c: (w.parent / ".divalign_stage_done.json").read_text() for c, w in weights.items()} == markers
    # the two reports stand side by side; the SFT spec still reads its cells as finished, its report unchanged
    assert (tmp_path / "out" / "report" / "results.md").read_text() == sft_report
    assert "## After stage `rl`" in (tmp_path / "out" / "report_rl" / "results.md").read_text()
    again = CopyLauncher()
    compare(sft, again)
    assert again.calls == []


def test_the_toy_rl_spec_is_toy_yamls_sft_cells_then_the_same_grpo_stage(tmp_path, monkeypatch):
    """recipes/compare/toy_rl.yaml on a `make demo`-like runs/demo: its cells' SFT stages are toy.yaml's cells' own
    stages (same directory, recipe, overrides, seed, launch: the inputs a finished stage is reused for), each
    followed by the same GRPO stage (beta 0, the validity reward) with the cell's seed; its report is its own."""
    import yaml

    from divalign.compare.cells import build_cells
    from divalign.smoke import save_tiny_model
    from divalign.toyworld.preference_data import write_preference_data
    from divalign.toyworld.world import ToyWorld

    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    save_tiny_model(tmp_path / "runs" / "demo" / "base_model")
    write_preference_data(ToyWorld(), tmp_path / "runs" / "demo" / "world", pairs_per_prompt=1)
    monkeypatch.chdir(tmp_path)
    toy, rl = load_compare("recipes/compare/toy.yaml"), load_compare("recipes/compare/toy_rl.yaml")
    assert list(rl.variants) == ["ce", "tofu", "gem"] and len(rl.seeds) >= 3 and set(rl.seeds) <= set(toy.seeds)
    assert rl.output_root == toy.output_root and rl.report_dir != toy.report_dir and rl.group == toy.group
    # the same evaluation, reading the SFT models' samples from toy.yaml's cache
    assert rl.evaluation.samples_dir == str(toy.report_dir / "calibration" / "samples")
    shared = dataclasses.replace(rl.evaluation, samples_dir=None)
    assert (shared, rl.reference, rl.evaluate_stages) == (toy.evaluation, "ce", ("ce_sft", "grpo"))
    sft_cells = {c.name: c.pipeline for c in build_cells(toy)}
    for cell in build_cells(rl):
        sft, grpo = cell.pipeline.stages
        assert (cell.pipeline.output_root, cell.pipeline.base_model) == (
            sft_cells[cell.name].output_root,
            sft_cells[cell.name].base_model,
        )
        assert sft == sft_cells[cell.name].stages[0], cell.name
        assert (grpo.name, grpo.trainer, grpo.overrides["seed"]) == ("grpo", "grpo", cell.seed)
        recipe = yaml.safe_load(grpo.recipe.read_text())
        assert (recipe["beta"], recipe["rewards"]) == (0.0, ["toy_validity"])
        assert {k: v for k, v in grpo.overrides.items() if k != "seed"} == dict(rl.overrides)


def test_the_real_rl_spec_is_real_yamls_sft_cells_then_the_same_verifier_grpo_stage(tmp_path, monkeypatch):
    """recipes/compare/real_rl.yaml on a `make demo-real`-like runs/demo-real (a stand-in base model, the world's files
    and its GRPO prompts): real.yaml's SFT stages, then GRPO rewarded by the evaluation's own verifier on the seen
    categories' prompts as chat turns, every held-out category left out."""
    import yaml

    from divalign.compare.cells import build_cells
    from divalign.realworld.grpo_data import main as grpo_data
    from divalign.realworld.world import RealWorld
    from divalign.smoke import save_tiny_model

    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    save_tiny_model(tmp_path / "runs" / "demo-real" / "base_model")
    world_dir = RealWorld().write(tmp_path / "runs" / "demo-real" / "world")
    monkeypatch.chdir(tmp_path)
    assert grpo_data(["runs/demo-real/world"]) == 0
    rows = [json.loads(line) for line in (world_dir / "grpo.jsonl").read_text().splitlines()]
    world = RealWorld()
    seen = world.prompts(heldout=False)  # every phrasing of every seen category, and nothing else
    assert sorted((r["prompt"][0]["content"], r["answer"]) for r in rows) == sorted((p.text, p.category) for p in seen)
    assert {r["prompt"][0]["role"] for r in rows} == {"user"} and world.prompts(heldout=True)

    real, rl = load_compare("recipes/compare/real.yaml"), load_compare("recipes/compare/real_rl.yaml")
    assert list(rl.variants) == ["ce", "tofu", "gem"] and len(rl.seeds) >= 2 and set(rl.seeds) <= set(real.seeds)
    assert rl.output_root == real.output_root and rl.report_dir != real.report_dir
    assert rl.evaluation.samples_dir == str(real.report_dir / "calibration" / "samples")
    shared = dataclasses.replace(rl.evaluation, samples_dir=None)
    assert (shared, rl.evaluate_stages) == (real.evaluation, ("ce_sft", "grpo"))
    sft_cells = {c.name: c.pipeline for c in build_cells(real)}
    for cell in build_cells(rl):
        sft, grpo = cell.pipeline.stages
        assert sft == sft_cells[cell.name].stages[0], cell.name
        assert (grpo.name, grpo.trainer, grpo.overrides["seed"]) == ("grpo", "grpo", cell.seed)
    recipe = yaml.safe_load(grpo.recipe.read_text())
    assert recipe["beta"] == 0.0
    assert recipe["rewards"] == [{"verifier": {"function": rl.evaluation.verifier}}]
    assert recipe["max_completion_length"] == rl.evaluation.max_new_tokens


def test_the_real_grpo_prompts_need_the_world_first(tmp_path, capsys):
    from divalign.realworld.grpo_data import main as grpo_data

    with pytest.raises(SystemExit) as stopped:
        grpo_data([str(tmp_path)])
    assert stopped.value.code == 2
    assert f"{tmp_path / 'world.json'} not found: build the world first (make demo-real)" in capsys.readouterr().err
    (tmp_path / "world.json").write_text(json.dumps({"categories": {"c": {"heldout": False}}}))
    (tmp_path / "prompts_eval.jsonl").write_text(json.dumps({"prompt": ["x"], "answer": "c"}) + "\n")
    with pytest.raises(SystemExit):
        grpo_data([str(tmp_path)])
    assert "prompts_eval.jsonl:1: expected a string `prompt` and `answer`" in capsys.readouterr().err


# Outcomes from samples


def test_outcomes_of_hand_made_samples():
    valid = json.dumps(["red", "blue", "passion fruit", "teal"])
    texts = ["red", "red", "blue", "green", "passion  fruit", "red"]
    verdicts = [verify(t, valid) for t in texts]
    assert verdicts == [True, True, True, False, True, True]
    row = prompt_outcomes(texts, verdicts, answer_count(valid))
    assert row["pass_at_1"] == pytest.approx(5 / 6) and row["pass_at_k"] == 1.0
    assert row["coverage"] == pytest.approx(3 / 4)  # red, blue, passion fruit of 4
    shares = np.array([3, 1, 1, 1]) / 6  # red x3, blue, green, passion fruit
    assert row["entropy"] == pytest.approx(float(-(shares * np.log(shares)).sum()))
    none_valid = prompt_outcomes(["x", "y"], [False, False], 4)
    assert (none_valid["pass_at_1"], none_valid["pass_at_k"], none_valid["coverage"]) == (0.0, 0.0, 0.0)
    assert answer_entropy(["a", "a"]) == 0.0 and math.isnan(answer_entropy([]))
    assert answer_count("w") is None and answer_count(json.dumps("red")) is None and answer_count(None) is None
    assert answer_count(json.dumps(["a", "a ", "b"])) == 2  # answers the verifier cannot tell apart count once
    unknown = outcomes_from_samples([["red"]], ["not json"], lambda t, a: True)
    assert unknown["pass_at_1"] == [1.0] and math.isnan(unknown["coverage"][0])
    with pytest.raises(ValueError, match="2 groups of samples for 1 prompts"):
        outcomes_from_samples([["a"], ["b"]], [valid], verify)


def test_summaries_over_seeds_and_prompts():
    model = {0: [1.0, 0.0, 1.0, 1.0], 1: [1.0, 1.0, 1.0, 0.0]}
    reference = {0: [0.0, 0.0, 1.0, 1.0], 1: [0.0, 1.0, 0.0, 0.0]}
    out = summarize(model, reference, 200, 0)
    assert out["per_seed"] == {"0": 0.75, "1": 0.75} and out["seed_mean"] == 0.75 and out["seed_std"] == 0.0
    pooled = out["pooled"]
    assert pooled["estimate"] == pytest.approx(0.75) and pooled["ci_low"] <= 0.75 <= pooled["ci_high"]
    assert out["vs_reference"]["per_seed"]["0"]["estimate"] == pytest.approx(0.25)
    assert out["vs_reference"]["per_seed"]["1"]["estimate"] == pytest.approx(0.5)
    assert out["vs_reference"]["pooled"]["estimate"] == pytest.approx(0.375)
    coverage = summarize({0: [math.nan, 0.5], 1: [math.nan, 0.25]}, None, 200, 0)
    assert coverage["seed_mean"] == pytest.approx(0.375)
    assert coverage["pooled"]["n"] == 1  # a prompt with no defined value is left out
    evaluation = EvaluationSpec(prompts="p", calibration_prompts="c", n_bootstrap=200)
    names = ("pass_at_1", "pass_at_k", "coverage", "entropy")
    before, after = ({"per_prompt": {"ce": {"0": dict.fromkeys(names, v)}}} for v in ([0.5, 0.5], [0.75, 1.0]))
    changes = stage_changes(before, after, evaluation)
    assert changes["ce"]["pass_at_1"]["pooled"]["estimate"] == pytest.approx(0.375)


# The RL curves figure


def write_state(directory: Path, history: list[dict]) -> Path:
    directory.mkdir(parents=True)
    (directory / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return directory


def test_the_curves_figure_draws_an_rl_stage_of_every_start_and_skips_a_stage_without_reward(tmp_path):
    rl = {
        v: {s: write_state(tmp_path / f"{v}{s}", [{"step": i, "reward": 0.1 * i, "diversity/retained/ead": 1 - 0.05 * i}
                                                   for i in range(1, 4)]) for s in (0, 1)}
        for v in ("ce", "gem")
    }  # fmt: skip
    figure = plot_stage_curves(rl, tmp_path / "fig" / "rl.png")
    assert figure == tmp_path / "fig" / "rl.png" and figure.stat().st_size > 5_000
    sft = {"ce": {0: write_state(tmp_path / "sft", [{"step": 1, "loss": 2.0, "diversity/ead": 0.5}])}}
    assert plot_stage_curves(sft, tmp_path / "sft.png") is None and not (tmp_path / "sft.png").exists()
    assert plot_stage_curves({"ce": {0: tmp_path / "missing"}}, tmp_path / "none.png") is None


# Quick mode: recipes/compare/toy_rl.yaml, only smaller, on a tiny toy world; its numbers recomputed from its samples

TOY_RL_RECIPES = ("ce_sft.yaml", "tofu_sft.yaml", "grpo_klfree.yaml")


def build_tiny_toy_world(root: Path) -> None:
    """`make demo`'s layout under `root` (world with its prompt files, a base model pretrained a few steps) and the
    toy recipes toy_rl.yaml runs."""
    import shutil

    from divalign.toyworld.preference_data import write_preference_data
    from divalign.toyworld.pretrain import PretrainConfig, pretrain
    from divalign.toyworld.world import ToyWorld, WorldConfig

    world = ToyWorld(WorldConfig(pretrain_examples=2000))
    world.write(root / "runs" / "demo" / "world")
    write_preference_data(world, root / "runs" / "demo" / "world", pairs_per_prompt=2)
    pretrain(world, root / "runs" / "demo" / "base_model", PretrainConfig(steps=20, batch_size=64, warmup_steps=2))
    (root / "recipes" / "toy").mkdir(parents=True)
    for name in TOY_RL_RECIPES:
        shutil.copy(REPO / "recipes" / "toy" / name, root / "recipes" / "toy" / name)


def quick_toy_rl_spec(root: Path) -> Path:
    """recipes/compare/toy_rl.yaml with CE and TOFU x 2 seeds, 2 optimizer steps per stage, 4 samples a prompt, no
    W&B process (the logs land in trainer_state.json), a one-temperature frontier grid."""
    import yaml

    content = yaml.safe_load((REPO / "recipes" / "compare" / "toy_rl.yaml").read_text())
    content["variants"].pop("gem")
    content["seeds"] = [0, 1]
    content["overrides"].update(max_steps=2, logging_steps=1, report_to="none", per_device_train_batch_size=16)
    content["then"][0]["overrides"] = {"per_device_train_batch_size": 8}  # 2 prompts x num_generations 4
    content["evaluation"].update(samples=4, n_bootstrap=50, max_bisection_steps=2, temperature_grid=[1.0])
    path = root / "toy_rl_quick.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def recomputed(samples_file: Path, prompts_file: Path) -> dict[str, float]:
    """pass@1, pass@k and coverage from a cached samples file, by the toy world's definition of a valid answer (the
    words of the completion are one of the prompt's valid answers), independently of divalign's code."""
    groups = json.loads(samples_file.read_text())["texts"]
    answers = [set(json.loads(json.loads(line)["answer"])) for line in prompts_file.read_text().splitlines()]
    valid = [[" ".join(t.split()) in truth for t in group] for group, truth in zip(groups, answers, strict=True)]
    kinds = [{" ".join(t.split()) for t in group} & truth for group, truth in zip(groups, answers, strict=True)]
    return {
        "pass_at_1": float(np.mean([np.mean(v) for v in valid])),
        "pass_at_k": float(np.mean([any(v) for v in valid])),
        "coverage": float(np.mean([len(k) / len(truth) for k, truth in zip(kinds, answers, strict=True)])),
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_toy_sft_then_grpo_report_recomputes_from_its_samples(tmp_path, monkeypatch):
    from divalign.compare import run_compare
    from test_compare_command import InProcessLauncher

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    build_tiny_toy_world(tmp_path)
    spec = quick_toy_rl_spec(tmp_path)
    monkeypatch.chdir(tmp_path)
    launcher = InProcessLauncher()
    run_compare(str(spec), launcher=launcher, log=lambda line: None)

    cells = Path("runs/demo/compare/cells")
    launched = [(flag(c, "--model_name_or_path"), flag(c, "--output_dir")) for c, _ in launcher.calls]
    assert (str(cells / "tofu-seed1" / "tofu_sft"), str(cells / "tofu-seed1" / "grpo")) in launched
    report_dir = Path("runs/demo/compare/report_rl")
    results = json.loads((report_dir / "results.json").read_text())
    assert list(results["stages"]) == ["ce_sft", "grpo"] and results["missing"] == []
    prompts = Path("runs/demo/world/prompts_eval.jsonl")
    for stage, variant in (("grpo", "tofu"), ("ce_sft", "ce")):
        outcomes = results["stages"][stage]["outcomes"]
        assert outcomes["k"] == 4 and outcomes["temperature"] == 1.0
        summary = outcomes["variants"][variant]
        per_seed = {s: recomputed(Path(f), prompts) for s, f in outcomes["samples"][variant].items()}
        for name in ("pass_at_1", "pass_at_k", "coverage"):
            assert summary[name]["per_seed"] == pytest.approx({s: v[name] for s, v in per_seed.items()}), name
            assert summary[name]["seed_mean"] == pytest.approx(np.mean([v[name] for v in per_seed.values()]))
        # pass@1 is the calibration's quality at the reference temperature on the same samples
        (point,) = results["stages"][stage]["calibration"]["seed_mean"]["grid"][variant]  # T = 1 only
        quality = point["quality"]
        assert summary["pass_at_1"]["seed_mean"] == pytest.approx(quality)
    # the GRPO stage's curves of every start, in one figure
    assert results["stages"]["grpo"]["curves_figure"] == "grpo_curves.png"
    assert (report_dir / "grpo_curves.png").stat().st_size > 5_000
    assert "curves_figure" not in results["stages"]["ce_sft"]  # SFT logs no reward: no RL curves
    markdown = (report_dir / "results.md").read_text()
    assert "## From `ce_sft` to `grpo`" in markdown and "| pass@1 | pass@4 | coverage |" in markdown
