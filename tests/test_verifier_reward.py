"""The `verifier` GRPO reward: a `divalign eval --verifier` function (MODULE:FUNCTION) as a 0/1 reward, reading each
prompt's answer from the dataset's answer column."""

import json

import pytest

from divalign.rewards import build, parse_rewards, required_columns


def test_a_verifier_function_rewards_the_completions_it_accepts():
    reward = build({"verifier": {"function": "divalign.rewards.toy_validity:verify"}})
    fruit = json.dumps(["mango", "passion fruit"])
    completions = ["mango", [{"role": "assistant", "content": "passion  fruit"}], "carrot", ""]
    assert reward(["p"] * 4, completions, answer=[fruit] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert reward.__name__ == "verifier" and reward.binary
    assert required_columns([reward]) == [("answer",)]


def test_the_answer_column_is_a_setting_and_a_missing_one_is_named():
    reward = build({"verifier": {"function": "divalign.rewards.toy_validity:verify", "answer_column": "valid"}})
    assert reward(["p"], ["red"], valid=[json.dumps(["red"])]) == [1.0]
    with pytest.raises(ValueError, match=r"needs a dataset column 'valid' \(each prompt's answer\); got \['answer'\]"):
        reward(["p"], ["red"], answer=["x"])


def test_a_bad_function_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"'verifier' needs the setting\(s\) \['function'\]"):
        parse_rewards(["verifier"])
    with pytest.raises(ValueError, match=r"rewards: verifier.function must be MODULE:FUNCTION, got 'verify'"):
        build({"verifier": {"function": "verify"}})
    with pytest.raises(ValueError, match=r"rewards: verifier.function"):
        build({"verifier": {"function": "no_such_module_xyz:verify"}})
