"""Quality next to diversity in the training callback (issue 21): the `quality:` of the diversity block (a reward of
the registry), `diversity/quality/*`, `diversity/correct_only/*`, `diversity/retained/*`, the quality-control /
narrowing split against step 0 with `divalign eval`'s code, the alert and stop thresholds, the step-0 reference kept
across a resume, and the keys of a toy run read back from its offline W&B file and trainer_state.json."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from chat_checkpoints import save_reward_model
from divalign.callback import DiversityCallback, DiversityConfig, load_probe_records
from divalign.callback.probe_scores import against_reference, score_probe
from divalign.callback.state import STATE_KEY, Reference, TrackingRecord
from divalign.rewards.quality import Quality, parse_quality
from divalign.rewards.registry import RewardSpec
from wandb_records import offline_runs

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from diversity_tiny import InterruptAt, save_tiny_policy, train_records, write_probe_prompts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = ["distinct_1", "distinct_2", "ead", "exact_dup_rate", "length_mean"]
# A one-check format reward is a verifier: a sample is correct when it names one of these words
WORDS = r"\b(the|a|cat|dog|sat|ran|on|mat|tree|bird)\b"
VERIFIER = {"format": {"boxed": False, "pattern": WORDS}}


# ---------------------------------------------------------------------------------------------------------------
# the quality: forms, scoring, verdicts


def test_quality_takes_a_registry_name_a_mapping_or_a_reward_model_directory(tmp_path):
    assert parse_quality("toy_validity") == RewardSpec("toy_validity", {})
    assert parse_quality({"math_answer": {"answer_column": "solution"}}) == RewardSpec(
        "math_answer", {"answer_column": "solution"}
    )
    with pytest.raises(ValueError, match=rf"diversity.quality: {tmp_path} has no config.json; expected a saved seq"):
        parse_quality(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert parse_quality(str(tmp_path)) == RewardSpec("reward_model", {"model": str(tmp_path)})
    assert parse_quality("reward_model:rm/path") == RewardSpec("reward_model", {"model": "rm/path"})
    with pytest.raises(
        ValueError,
        match=r"diversity.quality: 'judge' is neither a reward of the registry \(math_answer.*\), reward_model:PATH, MODULE",
    ):
        parse_quality("judge")
    with pytest.raises(ValueError, match=r"diversity.quality: unknown setting\(s\) \['column'\] for 'math_answer'"):
        parse_quality({"math_answer": {"column": "x"}})
    with pytest.raises(ValueError, match="'darling' scores a sample against its rollout group"):
        parse_quality({"darling": {"quality": "math_answer"}})


def test_quality_scores_every_sample_as_trl_calls_a_reward():
    """toy_validity reads each prompt's own `valid_answers`; chat prompts get chat-message completions."""
    quality = Quality("toy_validity")
    prompts = [[{"role": "user", "content": "name a fruit"}], "name a colour"]
    groups = [["kiwi", "carrot", "mango"], ["red", "kiwi"]]
    columns = [{"valid_answers": ["kiwi", "mango"], "category": "fruit"}, {"valid_answers": ["red"]}]
    ids = [[[1], [2], [3]], [[4], [1]]]
    scores = quality.score(prompts, groups, ids, columns)
    assert scores == [[1.0, 0.0, 1.0], [1.0, 0.0]]
    assert quality.binary and quality.verdicts(scores) == [[True, False, True], [True, False]]
    with pytest.raises(ValueError, match=r"reads the column 'valid_answers' of each prompt, but record 1 of "):
        quality.check_columns([{"valid_answers": []}, {"answer": "x"}], "probe.jsonl")


def test_math_answer_reads_the_answer_column_of_the_probe_records(tmp_path):
    probe = tmp_path / "probe.jsonl"
    probe.write_text(
        json.dumps({"prompt": "2 + 2?", "answer": "4"}) + "\n" + json.dumps({"prompt": "3 * 3?", "answer": 9})
    )
    records = load_probe_records(DiversityConfig(prompts=str(probe), quality="math_answer", metrics=["ead"]))
    groups = [[r"so \boxed{4}", "5"], ["The final answer is 9.", r"\boxed{6}"]]
    scores = Quality("math_answer").score(
        [r.prompt for r in records], groups, [[[1], [2]]] * 2, [r.columns for r in records]
    )
    assert scores == [[1.0, 0.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match=rf"reads the column 'solution' of each prompt, but record 0 of {probe}"):
        load_probe_records(
            DiversityConfig(prompts=str(probe), quality={"math_answer": {"answer_column": "solution"}}, metrics=["ead"])
        )


def test_correctness_of_a_graded_reward_needs_a_threshold():
    graded = {"format": {"boxed": True, "pattern": "cat"}}  # two checks: 0, 0.5 or 1
    scores = Quality(graded).score(["p"], [[r"\boxed{1} cat", "cat", "dog"]], [[[1], [2], [3]]], [{}])
    assert scores == [[1.0, 0.5, 0.0]]
    assert not Quality(graded).binary and Quality(graded).verdicts(scores) is None
    assert Quality(graded, correct_threshold=0.5).verdicts(scores) == [[True, True, False]]
    assert Quality(VERIFIER).binary


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"quality": "judge"}, "neither a reward of the registry"),
        ({"quality": ["toy_validity"]}, "diversity.quality must be of type"),
        ({"correct_threshold": 0.5}, "correct_threshold needs diversity.quality"),
        ({"alert_below": {"sbert": 0.7}}, r"alert_below: 'sbert' has no retained ratio.*\['distinct_1', 'ead'\]"),
        ({"stop_below": {"exact_dup_rate": 0.7}}, "stop_below: 'exact_dup_rate' has no retained ratio"),
        ({"alert_below": {"ead": 1.5}}, r"alert_below.ead must be a retained ratio in \(0, 1\]"),
        ({"stop_below": {"ead": 0}}, r"stop_below.ead must be a retained ratio in \(0, 1\]"),
        ({"stop_below": {"ead": "low"}}, r"^diversity.stop_below.ead must be a number, got 'low' \(str\)$"),
        ({"stop_below": {"ead": "0.5"}}, r"^diversity.stop_below.ead must be a number, got '0.5' \(str\)$"),
        ({"alert_below": {3: 0.5}}, r"^diversity.alert_below: key 3 must be a string$"),
        ({"alert_below": ["ead"]}, "alert_below must be of type dict"),
    ],
)
def test_bad_quality_and_threshold_keys_are_refused(block, match):
    base = {"prompts": "p.jsonl", "metrics": ["distinct_1", "ead", "exact_dup_rate"], "embedding_model": None}
    with pytest.raises(ValueError, match=match):
        DiversityConfig.from_dict({**base, **block})


# ---------------------------------------------------------------------------------------------------------------
# one evaluation's keys, by hand (the samples of tests/test_eval_cli.py's hand-computed split)

BASE_SAMPLES = [["a b", "a c", "d e", "f g"], ["b x", "y z", "b y", "b x"], ["q r", "s t", "u v", "w z"]]
LATER_SAMPLES = [["a b", "a b", "a c", "h h"], ["b b", "b b", "b b", "b b"], ["s s", "s s", "t t", "s t"]]
ANSWERS = "abq"  # a sample is correct when its first word is its prompt's answer


def _scored(groups):
    ids = {w: i for i, w in enumerate("abcdefghqrstuvwxyz")}
    token_ids = [[[ids[w] for w in t.split()] for t in g] for g in groups]
    correct = [[t.split()[0] == ANSWERS[i] for t in g] for i, g in enumerate(groups)]
    quality = [[float(c) for c in g] for g in correct]
    return score_probe(
        groups, token_ids, ["distinct_1", "exact_dup_rate", "length_mean"], quality, correct, vocab_size=18
    )


def test_one_evaluation_against_hand_computed_values():
    """Quality 2/4, 3/4, 1/4 per prompt at step 0; correct-only distinct-1 over prompts with >= 2 correct samples
    (prompt 2 has one: left out); later: retained = mean distinct-1 over its step-0 value, and the split equal to
    the hand-computed one of `divalign eval` (tests/test_eval_cli.py): drop 0.375 = 0.0625 quality control +
    0.3125 narrowing."""
    base = _scored(BASE_SAMPLES)
    logs = base.logs
    assert logs["quality/mean"] == pytest.approx((2 / 4 + 3 / 4 + 1 / 4) / 3)
    assert logs["quality/pass_at_1"] == pytest.approx(logs["quality/mean"])
    assert logs["quality/pass_at_k"] == pytest.approx(1.0)  # every prompt has a correct sample among its 4
    assert logs["correct_only/distinct_1"] == pytest.approx((3 / 4 + 3 / 6) / 2)
    assert logs["correct_only/num_prompts"] == 2
    assert math.isnan(base.per_prompt["correct_only"]["distinct_1"][2])
    assert "correct_only/length_mean" not in logs  # not a diversity score
    reference = Reference(0, base.means, base.per_prompt)
    assert against_reference(base, reference) == {
        "retained/distinct_1": 1.0, "quality_control/distinct_1": 0.0, "narrowing/distinct_1": 0.0,
        "quality_control/exact_dup_rate": 0.0, "narrowing/exact_dup_rate": 0.0,
    }  # fmt: skip
    later = _scored(LATER_SAMPLES)
    assert later.logs["quality/pass_at_k"] == pytest.approx(2 / 3)  # prompt 2: no correct sample
    compared = against_reference(later, reference)
    assert compared["retained/distinct_1"] == pytest.approx(((4 + 1 + 2) / 8 / 3) / ((7 + 4 + 8) / 8 / 3))
    assert compared["quality_control/distinct_1"] == pytest.approx(0.0625)
    assert compared["narrowing/distinct_1"] == pytest.approx(0.3125)
    assert "retained/exact_dup_rate" not in compared  # lower = more diverse: no ratio


def test_the_record_round_trips_through_json_with_nan_as_null():
    base = _scored(BASE_SAMPLES)
    record = TrackingRecord(Reference(0, base.means, base.per_prompt), ["ead"], None)
    text = json.dumps(record.to_json(), allow_nan=False)  # strict JSON in trainer_state.json
    back = TrackingRecord.from_json(json.loads(text))
    assert back.alerted == ["ead"] and back.reference.step == 0
    assert back.reference.per_prompt["correct_only"]["distinct_1"] == pytest.approx(
        base.per_prompt["correct_only"]["distinct_1"], nan_ok=True
    )


# ---------------------------------------------------------------------------------------------------------------
# training runs on the tiny policy


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_policy(tmp_path_factory.mktemp("policy"))


def quality_config(probe: Path, **overrides) -> DiversityConfig:
    settings = dict(prompts=str(probe), every_steps=2, samples_per_prompt=4, max_new_tokens=6, table_every_steps=0,
                    metrics=METRICS, embedding_model=None, batch_size=2, quality=VERIFIER)  # fmt: skip
    return DiversityConfig(**{**settings, **overrides})


def make_trainer(policy: Path, out: Path, callback: DiversityCallback, **args) -> SFTTrainer:
    settings = dict(output_dir=str(out), max_steps=6, per_device_train_batch_size=4, learning_rate=5e-2,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
                    disable_tqdm=True)  # fmt: skip
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        args=SFTConfig(**{**settings, **args}),
        train_dataset=datasets.Dataset.from_list(train_records(24)),
        processing_class=AutoTokenizer.from_pretrained(policy),
    )
    trainer.add_callback(callback.bind(trainer))
    return trainer


def evaluations(history: list[dict]) -> dict[int, dict]:
    return {
        e["step"]: {k: v for k, v in e.items() if k.startswith("diversity/")} for e in history if "diversity/ead" in e
    }


class RecordSamples(TrainerCallback):
    """The samples of every evaluation (the callback keeps the latest only); added after it."""

    def __init__(self, diversity: DiversityCallback) -> None:
        self.diversity, self.samples = diversity, {}

    def on_step_end(self, args, state, control, **kwargs):
        last = self.diversity.last_samples
        self.samples[last["step"]] = last

    on_train_begin = on_step_end


def distinct_1(groups: list[list[list[int]]]) -> list[float]:
    return [len({t for ids in g for t in ids}) / sum(map(len, g)) for g in groups]


def test_quality_keys_at_every_evaluation_recomputed_from_the_samples(policy_dir, tmp_path, monkeypatch):
    """Also: one run parses its quality once (the config's check builds the object the probe check and every
    evaluation use) and reads its probe prompts once (as `divalign train` does, before the trainer)."""
    import divalign.callback.probes as probes_module
    import divalign.rewards.quality as quality_module

    calls = {"parse": 0, "read": 0}

    def counted(name, real):
        return lambda *args, **kwargs: calls.update({name: calls[name] + 1}) or real(*args, **kwargs)

    monkeypatch.setattr(quality_module, "parse_quality", counted("parse", quality_module.parse_quality))
    monkeypatch.setattr(probes_module, "load_prompts", counted("read", probes_module.load_prompts))
    config = quality_config(write_probe_prompts(tmp_path / "probe.jsonl"))
    callback = DiversityCallback(config, probes=load_probe_records(config))
    trainer = make_trainer(policy_dir, tmp_path / "out", callback, max_steps=4)
    recorder = RecordSamples(callback)
    trainer.add_callback(recorder)
    trainer.train()
    assert calls == {"parse": 1, "read": 1}
    logged = evaluations(trainer.state.log_history)
    assert list(logged) == [0, 2, 4]
    step0 = {}
    for step, keys in logged.items():
        samples = recorder.samples[step]
        correct = [[re.search(WORDS, t) is not None for t in g] for g in samples["samples"]]
        assert keys["diversity/quality/mean"] == pytest.approx(np.mean([np.mean(c) for c in correct]))
        assert keys["diversity/quality/pass_at_1"] == pytest.approx(keys["diversity/quality/mean"])
        assert keys["diversity/quality/pass_at_k"] == pytest.approx(np.mean([any(c) for c in correct]))
        kept = [
            [i for i, ok in zip(g, c, strict=True) if ok] for g, c in zip(samples["token_ids"], correct, strict=True)
        ]
        by_hand = [d for d, g in zip(distinct_1(kept), kept, strict=True) if len(g) >= 2]
        assert keys["diversity/correct_only/num_prompts"] == len(by_hand)
        assert keys["diversity/correct_only/distinct_1"] == pytest.approx(np.mean(by_hand))
        step0 = step0 or keys
        for name in ("distinct_1", "distinct_2", "ead"):
            ratio = keys[f"diversity/{name}"] / step0[f"diversity/{name}"]
            assert keys[f"diversity/retained/{name}"] == pytest.approx(ratio)
        assert {f"diversity/{view}/{name}" for view in ("quality_control", "narrowing") for name in METRICS[:4]} <= set(
            keys
        )
    assert logged[0]["diversity/narrowing/distinct_1"] == 0.0 and logged[0]["diversity/retained/ead"] == 1.0
    record = trainer.state.stateful_callbacks[STATE_KEY]
    assert record["reference"]["step"] == 0 and record["stopped"] is None
    assert record["reference"]["means"]["distinct_1"] == logged[0]["diversity/distinct_1"]


def test_a_resumed_run_keeps_its_step0_reference(policy_dir, tmp_path, capsys):
    """Killed after step 3 (checkpoint 2) and resumed: the retained ratios and the split of steps 4 and 6 are the
    uninterrupted run's, measured against the first attempt's step 0 (kept in checkpoint-2's trainer_state.json).
    A checkpoint without the reference (deleted here, as in a run of an older divalign) says so and logs none."""
    probe = write_probe_prompts(tmp_path / "probe.jsonl")
    checkpoints = dict(save_strategy="steps", save_steps=2)
    whole = make_trainer(policy_dir, tmp_path / "whole", DiversityCallback(quality_config(probe)), **checkpoints)
    whole.train()
    killed = make_trainer(policy_dir, tmp_path / "killed", DiversityCallback(quality_config(probe)), **checkpoints)
    killed.add_callback(InterruptAt(3))
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    checkpoint = tmp_path / "killed" / "checkpoint-2"
    stored = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"][STATE_KEY]
    assert stored["reference"] == whole.state.stateful_callbacks[STATE_KEY]["reference"]
    resumed = make_trainer(policy_dir, tmp_path / "killed", DiversityCallback(quality_config(probe)), **checkpoints)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected = evaluations(whole.state.log_history)
    assert evaluations(resumed.state.log_history) == expected
    assert expected[6]["diversity/retained/distinct_1"] != 1.0  # the ratios moved: a real comparison

    bare = tmp_path / "bare"
    shutil.copytree(checkpoint, bare / "checkpoint-2")
    state = json.loads((bare / "checkpoint-2" / "trainer_state.json").read_text())
    del state["stateful_callbacks"][STATE_KEY]
    (bare / "checkpoint-2" / "trainer_state.json").write_text(json.dumps(state))
    capsys.readouterr()
    older = make_trainer(policy_dir, bare, DiversityCallback(quality_config(probe)), **checkpoints)
    older.train(resume_from_checkpoint=str(bare / "checkpoint-2"))
    assert "holds no step-0 diversity reference" in capsys.readouterr().out
    later = evaluations(older.state.log_history)[4]
    assert "diversity/quality/mean" in later and not any("retained" in key for key in later)


# ---------------------------------------------------------------------------------------------------------------
# alert and stop, through `divalign train` with W&B offline


def offline_wandb(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    for name, value in {
        "WANDB_MODE": "offline", "WANDB_DIR": str(directory), "WANDB_SILENT": "true", "WANDB_PROJECT": "divalign-test",
        "WANDB_X_DISABLE_STATS": "true", "WANDB_X_DISABLE_META": "true", "WANDB_X_DISABLE_MACHINE_INFO": "true",
        "WANDB_DISABLE_GIT": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)


def tiny_recipe(directory: Path, policy: Path, diversity: dict) -> Path:
    data = directory / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train_records(24)))
    recipe = {
        "trainer": "sft", "model_name_or_path": str(policy), "dataset_name": str(data), "max_steps": 6,
        "per_device_train_batch_size": 4, "learning_rate": 5e-2, "lr_scheduler_type": "linear", "logging_steps": 1,
        "save_strategy": "no", "bf16": False, "use_cpu": True, "seed": 0, "report_to": "wandb",
        "output_dir": str(directory / "out"),
        "diversity": {
            "prompts": str(write_probe_prompts(directory / "probe.jsonl")), "every_steps": 2, "samples_per_prompt": 4,
            "max_new_tokens": 6, "table_every_steps": 0, "metrics": METRICS, "embedding_model": None,
            "batch_size": 2, **diversity,
        },
    }  # fmt: skip
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_alert_once_then_stop_with_a_checkpoint_and_the_reason(policy_dir, tmp_path, monkeypatch, capsys):
    """distinct-1 keeps under 99 % of its step-0 value from step 2 on: one alert (step 2), not one per evaluation.
    distinct-2 falls under 97 % at step 4: training stops there (of 6 steps) with a checkpoint although
    save_strategy is `no`, and says why: a printed line, a W&B alert, the trainer state, divalign_finished.json,
    and the error of a rerun."""
    import wandb

    from divalign.launch.recipe import RecipeError
    from divalign.launch.train import run_stage

    offline_wandb(monkeypatch, tmp_path)
    recipe = tiny_recipe(
        tmp_path, policy_dir, {"alert_below": {"distinct_1": 0.99}, "stop_below": {"distinct_2": 0.97}}
    )
    try:
        run_stage(str(recipe))
    finally:
        wandb.finish()
        wandb.teardown()
    out = capsys.readouterr().out
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    logged = evaluations(state["log_history"])
    assert list(logged) == [0, 2, 4] and state["global_step"] == 4
    retained = {
        step: (keys["diversity/retained/distinct_1"], keys["diversity/retained/distinct_2"])
        for step, keys in logged.items()
    }
    assert retained[2][0] < 0.99 and retained[4][0] < 0.99 and retained[2][1] >= 0.97 > retained[4][1]
    assert out.count("divalign: diversity alert: step 2: diversity/retained/distinct_1 = ") == 1
    assert "diversity alert: step 4" not in out
    assert "divalign: diversity stop: step 4: diversity/retained/distinct_2 = " in out
    assert "training stops here. A checkpoint of this step is saved." in out
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-4"]
    record = state["stateful_callbacks"][STATE_KEY]
    assert record["alerted"] == ["distinct_1"]
    assert (record["stopped"]["metric"], record["stopped"]["step"], record["stopped"]["threshold"]) == (
        "distinct_2",
        4,
        0.97,
    )
    assert record["stopped"]["retained"] == pytest.approx(retained[4][1])
    finished = json.loads((tmp_path / "out" / "divalign_finished.json").read_text())
    assert finished["global_step"] == 4 and finished["stopped_early"] == record["stopped"]["reason"]
    (run,) = offline_runs(tmp_path)
    assert [(a["title"], a["level"]) for a in run.alerts] == [
        ("divalign: diversity alert", "WARN"), ("divalign: training stopped", "ERROR")]  # fmt: skip
    assert run.alerts[1]["text"] == record["stopped"]["reason"]
    with pytest.raises(RecipeError, match="stopped early: step 4: diversity/retained/distinct_2"):
        run_stage(str(recipe))


def test_a_graded_quality_gives_correct_only_keys_only_with_a_threshold(policy_dir, tmp_path):
    graded = {"format": {"boxed": True, "pattern": WORDS}}  # 0, 0.5 or 1: not a verifier
    probe = write_probe_prompts(tmp_path / "probe.jsonl")
    keys = {}
    for threshold in (None, 0.5):
        config = quality_config(probe, quality=graded, correct_threshold=threshold, every_steps=100)
        trainer = make_trainer(policy_dir, tmp_path / str(threshold), DiversityCallback(config), max_steps=1)
        trainer.train()
        keys[threshold] = evaluations(trainer.state.log_history)[0]
    assert "diversity/quality/mean" in keys[None]
    assert not [
        k
        for k in keys[None]
        if k.startswith(("diversity/correct_only", "diversity/quality/pass", "diversity/narrowing"))
    ]
    # nothing is boxed: every score is 0 or 0.5, so at 0.5 "correct" means "names a word", the verifier's verdict
    verifier = quality_config(probe, every_steps=100)
    trainer = make_trainer(policy_dir, tmp_path / "verifier", DiversityCallback(verifier), max_steps=1)
    trainer.train()
    expected = evaluations(trainer.state.log_history)[0]
    assert keys[0.5]["diversity/quality/mean"] == pytest.approx(expected["diversity/quality/mean"] / 2)
    for key in ("diversity/correct_only/distinct_1", "diversity/quality/pass_at_1", "diversity/narrowing/ead"):
        assert keys[0.5][key] == expected[key]


# ---------------------------------------------------------------------------------------------------------------
# a toy run: the shipped toy recipe (quality: toy_validity), its keys read back from W&B and trainer_state.json

NEW_KEYS = {
    *["diversity/quality/mean", "diversity/quality/pass_at_1", "diversity/quality/pass_at_k"],
    *[f"diversity/correct_only/{m}" for m in ("distinct_1", "distinct_2", "ead", "exact_dup_rate", "num_prompts")],
    *[f"diversity/retained/{m}" for m in ("distinct_1", "distinct_2", "ead")],
    *[f"diversity/{view}/{m}" for view in ("quality_control", "narrowing") for m in METRICS[:4]],
}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """recipes/toy/tofu_sft.yaml as shipped, shortened to 4 steps (evaluations at 0, 2, 4), on a tiny toy world and
    a briefly pretrained base model, with W&B offline."""
    import wandb

    from divalign.launch.train import run_stage
    from divalign.toyworld.pretrain import PretrainConfig, pretrain
    from divalign.toyworld.world import ToyWorld, WorldConfig

    root = tmp_path_factory.mktemp("toy")
    world = ToyWorld(WorldConfig(pretrain_examples=2000))
    world.write(root / "world")
    pretrain(world, root / "base_model", PretrainConfig(steps=60, batch_size=64, warmup_steps=2))
    recipe = yaml.safe_load((REPO / "recipes" / "toy" / "tofu_sft.yaml").read_text())
    assert recipe["diversity"]["quality"] == "toy_validity"
    recipe["diversity"].update(prompts=str(root / "world" / "prompts_probe.jsonl"), every_steps=2)
    (root / "tofu_sft.yaml").write_text(yaml.safe_dump(recipe))
    flags = ["--model_name_or_path", str(root / "base_model"), "--dataset_name", str(root / "world" / "sft.jsonl"),
             "--output_dir", str(root / "tofu_sft"), "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1"]  # fmt: skip
    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_wandb(monkeypatch, root)
        monkeypatch.setenv("WANDB_PROJECT", "divalign-toy")  # the recipe's env: block sets it; restored afterwards
        try:
            run_stage(str(root / "tofu_sft.yaml"), flags)
        finally:
            wandb.finish()
            wandb.teardown()
    (run,) = offline_runs(root)
    return run, root / "tofu_sft"


@pytest.mark.slow
def test_a_toy_run_logs_quality_to_wandb_and_trainer_state(toy_run, tmp_path):
    run, output_dir = toy_run
    rows = run.rows_with("diversity/quality/mean")
    assert [row["train/global_step"] for row in rows] == [0, 2, 4]
    wandb_keys = {key for row in rows for key in row if key.startswith("diversity/")}
    assert wandb_keys >= NEW_KEYS
    assert not [key for row in run.rows for key in row if key.startswith("train/diversity")]  # their own section
    state = json.loads((output_dir / "trainer_state.json").read_text())
    logged = evaluations(state["log_history"])
    assert list(logged) == [0, 2, 4]
    for row in rows:  # the same values in both places (NaN where a view is undefined, e.g. 2-grams of 1-word answers)
        keys = logged[row["train/global_step"]]
        assert set(keys) >= NEW_KEYS
        assert all(row[k] == pytest.approx(keys[k], nan_ok=True) for k in NEW_KEYS)
    assert all(0 <= keys["diversity/quality/mean"] <= 1 for keys in logged.values())
    assert logged[0]["diversity/quality/mean"] == logged[0]["diversity/quality/pass_at_1"]
    record = state["stateful_callbacks"][STATE_KEY]
    assert sorted(record) == ["alerted", "reference", "stopped"]
    assert sorted(record["reference"]) == ["means", "per_prompt", "step"]
    assert sorted(record["reference"]["per_prompt"]) == ["all", "correct_only"]
    assert len(record["reference"]["per_prompt"]["all"]["ead"]) == 20  # one value per probe prompt
    assert record["reference"]["means"]["ead"] == logged[0]["diversity/ead"]
    resolved = yaml.safe_load((output_dir / "divalign_recipe.yaml").read_text())
    assert resolved["diversity"]["quality"] == "toy_validity"
    assert (resolved["diversity"]["alert_below"], resolved["diversity"]["stop_below"]) == ({}, {})
    # and its trajectory in the quality-diversity plane
    from divalign.cli import main

    assert main(["plot", str(output_dir), "--trajectory", "ead", "--out", str(tmp_path / "toy_trajectory")]) == 0
    assert (tmp_path / "toy_trajectory.png").read_bytes()[:4] == b"\x89PNG"


def test_a_reward_model_directory_as_the_quality(policy_dir, tmp_path):
    """`quality: <directory>` scores each prompt + sample with the sequence-classification model there: the policy
    read its prompts through its chat template, so the reward model sees that conversation (the prompt a user turn,
    the sample the assistant's) through its own chat template, and its first logit is the score. The logged mean is
    the mean of those logits computed here directly."""
    import torch
    from diversity_tiny import build_tokenizer
    from transformers import AutoModelForSequenceClassification

    tokenizer = build_tokenizer()
    judge = save_reward_model(tmp_path / "judge", tokenizer)
    probe = write_probe_prompts(tmp_path / "probe.jsonl")
    config = quality_config(probe, quality=str(judge), correct_threshold=0.0, every_steps=100)
    callback = DiversityCallback(config)
    trainer = make_trainer(policy_dir, tmp_path / "out", callback, max_steps=1)
    recorder = RecordSamples(callback)
    trainer.add_callback(recorder)
    trainer.train()
    logged = evaluations(trainer.state.log_history)[0]
    model = AutoModelForSequenceClassification.from_pretrained(judge).eval()
    samples = recorder.samples[0]["samples"]
    prompts = [json.loads(line)["prompt"] for line in probe.read_text().splitlines()]
    scores = []
    for prompt, group in zip(prompts, samples, strict=True):
        with torch.no_grad():
            chats = [[{"role": "user", "content": prompt}, {"role": "assistant", "content": t}] for t in group]
            rendered = [tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats]
            encoded = [tokenizer(text, return_tensors="pt", add_special_tokens=False) for text in rendered]
            scores.append([model(**e).logits[0, 0].item() for e in encoded])
    assert logged["diversity/quality/mean"] == pytest.approx(np.mean([np.mean(s) for s in scores]), abs=1e-5)
    correct = [[s >= 0.0 for s in group] for group in scores]
    assert logged["diversity/quality/pass_at_1"] == pytest.approx(np.mean([np.mean(c) for c in correct]))


# ---------------------------------------------------------------------------------------------------------------
# one grammar with `divalign eval --quality` (issue 30); a causal LM is no reward model


@pytest.fixture
def importable_here(tmp_path, monkeypatch):
    """Run in `tmp_path` with the import path as the `divalign` script has it (not the current directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "here_quality.py").write_text(
        "def score(completion, answer):\n    return len(completion) + (answer == 'x')\n"
    )
    return tmp_path


def test_training_and_eval_accept_and_refuse_the_same_quality_specs(importable_here):
    """Each spec through the recipe's `diversity.quality` and through `divalign eval --quality`: both accept it, or
    both refuse it with the same reason."""
    from diversity_tiny import build_tokenizer

    from divalign.evaluation.quality import load_quality
    from divalign.prompts import PromptRecord

    judge = save_reward_model(importable_here / "rm_dir", build_tokenizer())
    accepted = ["toy_validity", {"format": {"boxed": False, "pattern": "x"}}, '{"format": {"tags": ["a"]}}',
                f"reward_model:{judge}", str(judge), "here_quality:score"]  # fmt: skip
    refused = {
        "judge": "is neither a reward of the registry",
        "format:abc": "only reward_model takes an argument",
        "nowhere_quality:score": "cannot import module 'nowhere_quality'",
        "here_quality:missing": "module 'here_quality' has no callable 'missing'",
        f"reward_model:{importable_here / 'none'}": "does not exist (a local path, not a Hub id)",
        "darling": "scores a sample against its rollout group",
        '{"format": {"boxed": false}}': "format reward has no check",
    }
    records = [PromptRecord("p", "x", {"valid_answers": ["x"], "answer": "x"})]
    base = {"prompts": "p.jsonl", "metrics": ["distinct_1"], "embedding_model": None}
    for spec in accepted:
        DiversityConfig.from_dict({**base, "quality": spec})
        load_quality(spec if isinstance(spec, str) else json.dumps(spec), records)
    for spec, reason in refused.items():
        with pytest.raises(ValueError, match=re.escape(reason)):
            DiversityConfig.from_dict({**base, "quality": spec})
        with pytest.raises(ValueError, match=re.escape(reason)):
            load_quality(spec, records)


def test_a_function_of_your_own_scores_the_probe_samples_with_the_records_answer(importable_here):
    quality = Quality("here_quality:score")
    assert quality.name == "here_quality:score" and not quality.has_verdicts
    columns = [{"answer": "x"}, {"solution": "y"}, {}]
    scores = quality.score(["p", "q", "r"], [["ab", "c"], ["d"], ["efg"]], [[[1], [2]], [[3]], [[4]]], columns)
    assert scores == [[3.0, 2.0], [1.0], [3.0]]  # len + 1 where the answer is 'x'
    assert Quality("here_quality:score", correct_threshold=2.5).verdicts(scores) == [[True, False], [False], [True]]


def test_a_causal_lm_as_the_quality_fails_before_step_0_samples(policy_dir, tmp_path):
    """A causal LM given as the reward model would be scored through a randomly initialised head: the run stops in
    on_train_begin, before the step-0 evaluation samples anything."""
    probe = write_probe_prompts(tmp_path / "probe.jsonl")
    callback = DiversityCallback(quality_config(probe, quality=f"reward_model:{policy_dir}", correct_threshold=0.0))
    trainer = make_trainer(policy_dir, tmp_path / "out", callback, max_steps=1)
    with pytest.raises(ValueError, match=rf"reward model {re.escape(str(policy_dir))}: its weights have no score"):
        trainer.train()
    assert callback.last_samples is None
