"""`divalign compare` at several stages (`evaluate_stages`: e.g. after SFT and after the GRPO stage that follows it),
the SFT stages of an SFT spec reused by an SFT-then-RL spec sharing its output root, each spec's own report
(`report_dir`), the outcomes read from the samples (pass@1, pass@k, coverage, entropy), and the RL curves figure.

The fast tests launch nothing real (`tests/pipelines.CopyLauncher`) and stand in for the calibration
(`test_compare_command.FakeCalibration`); the quick mode at the end trains a tiny toy world's SFT → GRPO cells and
runs the real report, then recomputes its numbers from the saved samples.
"""

from __future__ import annotations

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
from pipelines import SFT_RECIPE, TOFU_RECIPE, CopyLauncher, flag
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
