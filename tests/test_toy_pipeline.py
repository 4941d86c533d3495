"""The toy world's post-SFT stages: the `toy_validity` reward, the DPO/GRPO data writers, and the toy pipeline
(TOFU SFT → DPO → GRPO β=0 → lineage eval) run end to end through `divalign pipeline` on a tiny world, offline."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from divalign.launch.datasets_io import check_columns, load_recipe_dataset
from divalign.launch.stages import dpo_columns
from divalign.prompts import load_prompts
from divalign.rewards import build, parse_rewards
from divalign.rewards.toy_validity import ToyValidityReward, is_valid, normalize_completion, verify
from divalign.toyworld.preference_data import (
    ANSWERS_COLUMN,
    dpo_records,
    eval_records,
    grpo_records,
    write_preference_data,
)
from divalign.toyworld.tokenizer import build_tokenizer
from divalign.toyworld.world import ToyWorld, WorldConfig

REPO = Path(__file__).resolve().parents[1]
TOY_RECIPES = ("tofu_sft.yaml", "dpo.yaml", "grpo_klfree.yaml", "pipeline.yaml")


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return ToyWorld(WorldConfig(pretrain_examples=2000))


def message(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# -- the reward ----------------------------------------------------------------------------------------------------


def test_validity_reward_on_hand_made_completions():
    reward = build("toy_validity")
    valid = ["mango", "passion fruit", "kiwi"]
    completions = {
        "mango": 1.0,
        "  passion   fruit ": 1.0,  # the word-level decoder's spacing does not matter
        "kiwi <eos>": 1.0,  # EOS kept by a decoder that keeps special tokens
        "kiwi <eos> mango": 1.0,  # generation stops at EOS: what follows is not part of the answer
        "passion": 0.0,  # a prefix of a valid answer
        "mango mango": 0.0,  # a truncated or run-on completion
        "carrot": 0.0,  # valid for another category only
        "Mango": 0.0,  # the toy vocabulary is lower case: another token
        "": 0.0,
    }
    as_messages = reward(
        [[{"role": "user", "content": "name a fruit"}]] * len(completions),
        [message(c) for c in completions],
        **{ANSWERS_COLUMN: [valid] * len(completions)},
    )
    assert as_messages == list(completions.values())
    as_text = reward(["name a fruit"] * len(completions), list(completions), valid_answers=[valid] * len(completions))
    assert as_text == list(completions.values())
    assert reward.__name__ == "toy_validity" and reward.required_columns() == [("valid_answers",)]


def test_validity_reward_reads_each_rows_own_answers():
    reward = ToyValidityReward(answers_column="truth", eos_token=None)
    scores = reward([None, None], ["red", "red"], truth=[["red", "blue"], ["apple"]])
    assert scores == [1.0, 0.0]
    assert normalize_completion("red <eos>", None) == "red <eos>"  # eos_token null: nothing is cut
    with pytest.raises(ValueError, match="needs a dataset column 'truth'"):
        reward([None], ["red"], valid_answers=[["red"]])


def test_validity_reward_settings_through_the_registry():
    (spec,) = parse_rewards([{"toy_validity": {"answers_column": "answers"}}])
    assert build(spec).answers_column == "answers"
    with pytest.raises(ValueError, match="unknown setting"):
        parse_rewards([{"toy_validity": {"answers": "x"}}])


def test_verify_reads_a_json_list_of_answers():
    assert verify("green bean", json.dumps(["carrot", "green bean"]))
    assert not verify("green", json.dumps(["carrot", "green bean"]))
    assert not verify("carrot", None)
    with pytest.raises(ValueError, match="JSON list"):
        verify("carrot", json.dumps("carrot"))


# -- the data writers ----------------------------------------------------------------------------------------------


def test_dpo_pairs_prefer_a_valid_answer_over_an_invalid_one(world):
    records = dpo_records(world, pairs_per_prompt=4)
    by_text = {p.text: p for p in world.prompts}
    assert len(records) == 4 * len(world.seen_prompts)
    vocabulary = build_tokenizer(world).get_vocab()
    for row in records:
        assert sorted(row) == ["chosen", "prompt", "rejected"]
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"] + row["rejected"]] == ["assistant", "assistant"]
        prompt = by_text[row["prompt"][0]["content"]]
        assert not prompt.heldout
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert is_valid(chosen, prompt.answers) and not is_valid(rejected, prompt.answers)
        assert all(word in vocabulary for word in rejected.split())  # a wrong answer, not an unknown token
    assert dpo_records(world, pairs_per_prompt=4) == records  # a pure function of the world's config


def test_grpo_rows_carry_the_truth_and_eval_rows_a_json_answer_list(world):
    rows = grpo_records(world)
    assert [r["prompt"][0]["content"] for r in rows] == [p.text for p in world.seen_prompts]
    for row, prompt in zip(rows, world.seen_prompts, strict=True):
        assert row[ANSWERS_COLUMN] == list(prompt.answers) and row["category"] == prompt.category
    evals = eval_records(world)
    assert {r["category"] for r in evals} == set(world.config.categories)  # one phrasing of every category
    assert any(r["heldout"] for r in evals)
    assert all(verify(json.loads(r["answer"])[-1], r["answer"]) for r in evals)  # the tail is valid too


def test_written_files_load_with_the_columns_each_stage_reads(world, tmp_path):
    paths = write_preference_data(world, tmp_path, pairs_per_prompt=2)
    assert sorted(p.name for p in paths.values()) == [
        "dpo.jsonl",
        "grpo.jsonl",
        "prompts_calibration.jsonl",
        "prompts_eval.jsonl",
    ]
    evaluation, calibration = (load_prompts(paths[k]) for k in ("eval_prompts", "calibration_prompts"))
    assert {r.columns["category"] for r in calibration} == {r.columns["category"] for r in evaluation}
    assert not {json.dumps(r.prompt) for r in calibration} & {json.dumps(r.prompt) for r in evaluation}

    class Args:
        dataset_train_split = "train"
        dataset_config = None
        dataset_streaming = False

    for name, columns in (("dpo", dpo_columns(None)), ("grpo", [("prompt", ANSWERS_COLUMN)])):
        Args.dataset_name = str(paths[name])
        train = load_recipe_dataset(Args)["train"]
        check_columns(train, columns, str(paths[name]))
    assert len(train) == len(world.seen_prompts) and train[0][ANSWERS_COLUMN] == list(world.seen_prompts[0].answers)


def test_cli_adds_the_files_to_a_world_written_earlier(world, tmp_path, capsys):
    from divalign.toyworld.preference_data import main

    world.write(tmp_path)
    assert main([str(tmp_path), "--pairs-per-prompt", "3"]) == 0
    assert "dpo: " in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert rows == dpo_records(world, pairs_per_prompt=3)  # the world rebuilt from truth.json gives the same pairs


# -- the toy pipeline, end to end ----------------------------------------------------------------------------------


def build_tiny_demo(root: Path) -> None:
    """The layout `make demo` leaves behind (world + base model under runs/demo), with a few pretraining steps."""
    from divalign.toyworld.pretrain import PretrainConfig, pretrain

    world = ToyWorld(WorldConfig(pretrain_examples=2000))
    world.write(root / "runs" / "demo" / "world")
    write_preference_data(world, root / "runs" / "demo" / "world", pairs_per_prompt=2)
    pretrain(world, root / "runs" / "demo" / "base_model", PretrainConfig(steps=20, batch_size=64, warmup_steps=2))
    (root / "recipes" / "toy").mkdir(parents=True)
    for name in TOY_RECIPES:
        shutil.copy(REPO / "recipes" / "toy" / name, root / "recipes" / "toy" / name)


def shrink_pipeline(path: Path) -> None:
    """Two optimizer steps per stage, a few eval samples; no W&B process (the logs land in trainer_state.json)."""
    content = yaml.safe_load(path.read_text())
    common = {"max_steps": 2, "save_steps": 2, "logging_steps": 1, "report_to": "none"}
    batch = {"sft": 16, "dpo": 16, "grpo": 8}  # grpo: 2 prompts x num_generations 4
    for stage in content["stages"]:
        stage["overrides"] = {**common, "per_device_train_batch_size": batch[stage["name"]]}
    content["eval"].update(samples=4, bootstrap=10)
    path.write_text(yaml.safe_dump(content, sort_keys=False))


def resolved_recipe(directory: Path) -> dict:
    return yaml.safe_load((directory / "divalign_recipe.yaml").read_text())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_toy_pipeline_end_to_end(tmp_path, monkeypatch):
    """recipes/toy/pipeline.yaml as shipped (only smaller), run from a directory laid out like `make demo`'s."""
    from divalign.cli import main as cli_main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    build_tiny_demo(tmp_path)
    shrink_pipeline(tmp_path / "recipes" / "toy" / "pipeline.yaml")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["pipeline", "recipes/toy/pipeline.yaml"]) == 0

    root = Path("runs/demo/pipeline")
    sft, dpo, grpo = (root / name for name in ("sft", "dpo", "grpo"))
    assert resolved_recipe(sft)["model_name_or_path"] == "runs/demo/base_model"
    assert resolved_recipe(dpo)["model_name_or_path"] == str(sft)  # each stage trained on the previous output
    assert resolved_recipe(grpo)["model_name_or_path"] == str(dpo)
    assert [resolved_recipe(d)["trainer"] for d in (sft, dpo, grpo)] == ["tofu", "dpo", "grpo"]
    assert resolved_recipe(grpo)["beta"] == 0.0
    state = json.loads((grpo / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    logged = {key for entry in state["log_history"] for key in entry}
    assert {"diversity/rollout/distinct_1", "diversity/rollout/exact_dup_rate"} <= logged
    # every stage logs validity (the toy recipes' quality); the pipeline's trajectory joins the stages end to end
    from divalign.run_history import load_run
    from divalign.trajectory_plot import trajectory

    points = trajectory(load_run(root), "ead")
    assert [(p.step, p.stage) for p in points] == [
        (0, "sft"), (2, None), (2, "dpo"), (4, None), (4, "grpo"), (6, None)]  # fmt: skip
    assert all(0 <= p.quality <= 1 for p in points)
    assert cli_main(["plot", str(root), "--trajectory", "ead", "--out", str(tmp_path / "pipeline_qd")]) == 0
    assert (tmp_path / "pipeline_qd.png").stat().st_size > 0
    steps = [e for e in state["log_history"] if "rewards/toy_validity/mean" in e]
    assert len(steps) == 2
    for entry in steps:  # the only reward, weight 1: the step's reward is the share of its 8 rollouts that are valid
        valid_share = entry["rewards/toy_validity/mean"]
        assert valid_share * 8 == pytest.approx(round(valid_share * 8))
        assert entry["reward"] == pytest.approx(valid_share)
    lineage = json.loads((root / "lineage" / "results.json").read_text())
    assert [m["name"] for m in lineage["models"]] == ["base", "sft", "dpo", "grpo"]
    assert lineage["config"]["verifier"] == "divalign.rewards.toy_validity:verify"
    # pass@1 of every model, recomputed from its written samples: a sample is valid when its words are one of the
    # prompt's valid answers
    prompt_rows = Path("runs/demo/world/prompts_eval.jsonl").read_text().splitlines()
    answers = [json.loads(json.loads(line)["answer"]) for line in prompt_rows]
    for model in lineage["models"]:
        lines = (root / "lineage" / "samples" / f"{model['name']}.jsonl").read_text().splitlines()
        written = [json.loads(line)["samples"] for line in lines]
        shares = [
            sum(" ".join(text.split()) in valid for text in group) / len(group)
            for group, valid in zip(written, answers, strict=True)
        ]
        assert model["metrics"]["pass_at_1"]["mean"] == pytest.approx(sum(shares) / len(shares)), model["name"]
