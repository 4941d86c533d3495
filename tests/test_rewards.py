"""Reward functions of `divalign.rewards` on hand-made completions (no training, no Hub)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import divalign.rewards.darling as darling_module
from chat_checkpoints import save_reward_model
from divalign.rewards import REWARDS, build, parse_rewards, required_columns
from divalign.rewards.darling import distinctness, ngram_similarity
from divalign.rewards.groups import split_groups
from divalign.rewards.math_answer import extract_answer, last_boxed, normalize_answer
from divalign.smoke import build_tokenizer


def math_reward(completions: list, answers: list, **kwargs) -> list[float]:
    return build("math_answer")([""] * len(completions), completions, answer=answers, **kwargs)


# -- math_answer ---------------------------------------------------------------------------------------------------


def test_last_boxed_matches_nested_braces():
    assert last_boxed(r"first \boxed{1}, then \boxed{\frac{x^{2}}{\sqrt{y}}} done") == r"\frac{x^{2}}{\sqrt{y}}"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None  # cut off inside the box
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        (r"so \boxed{\frac{3}{4}}", "0.75"),
        (r"\boxed{\dfrac{6}{8}}", "3/4"),
        (r"\boxed{{12}}", "12"),
        (r"\boxed{1,234}", "1234"),
        ("Final answer: $1,000,000$.", "1000000"),
        ("The final answer is 5.0", "5"),
        ("#### 72", "Natalia sold 48/2 = 24 clips in May.\n#### 72"),  # GSM8K-style reference
        (r"\boxed{-3/6}", r"\boxed{-\frac{1}{2}}"),  # MATH-style reference
        (r"\boxed{x^{2}+1}", "x^{2} + 1"),
        (r"\boxed{50\%}", "50"),
        ([{"role": "assistant", "content": r"It is \boxed{7}."}], "7"),
    ],
)
def test_math_answer_matches(completion, answer):
    assert math_reward([completion], [answer]) == [1.0]


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("the answer is 7", "7"),  # not marked: no fallback to the last number
        (r"\boxed{8}", "7"),
        (r"\boxed{1,2}", "12"),  # a pair, not a thousands separator
        (r"\boxed{3/4", "0.75"),  # box never closed
        ("", "0"),
        (r"\boxed{7}", None),
    ],
)
def test_math_answer_rejects(completion, answer):
    assert math_reward([completion], [answer]) == [0.0]


def test_math_answer_prefers_the_box_and_the_last_marker():
    assert extract_answer("#### 3\n\\boxed{4}") == "4"
    assert extract_answer("Final answer: 3\nFinal answer: 5") == "5"
    assert normalize_answer("2.50") == normalize_answer(r"\frac{5}{2}")


def test_math_answer_equivalent_expressions():
    assert math_reward([r"so \boxed{\frac{\sqrt{2}}{2}}"], [r"\frac{1}{\sqrt{2}}"]) == [1.0]  # math_verify
    assert math_reward([r"\boxed{0.5}"], [r"\frac12"]) == [1.0]
    assert math_reward([r"\boxed{\pi}"], ["3.14"]) == [0.0]


def test_trls_accuracy_reward_on_whole_completions_misses_marked_answers():
    """Why math_answer extracts the marked answer itself and gives math_verify only that."""
    from trl.rewards import accuracy_reward

    cases = [
        ("The final answer is 5.0", "5"),
        ("#### 72", "Natalia sold 48/2 = 24 clips in May.\n#### 72"),
        (r"\boxed{x^{2}+1}", "x^{2} + 1"),
    ]
    for completion, answer in cases:
        assert accuracy_reward([[{"role": "assistant", "content": completion}]], [answer]) != [1.0]
        assert math_reward([completion], [answer]) == [1.0]


def test_math_answer_columns():
    reward = build({"math_answer": {"answer_column": "target"}})
    assert reward([""], [r"\boxed{2}"], target=["2"]) == [1.0]
    assert required_columns([reward]) == [("target",)]
    assert required_columns([build("math_answer")]) == [("answer",), ("solution",)]
    assert build("math_answer")([""], [r"\boxed{2}"], solution=[r"\boxed{2}"]) == [1.0]
    with pytest.raises(ValueError, match="'answer' or 'solution'"):
        build("math_answer")([""], [r"\boxed{2}"], question=["q"])


# -- format, length_penalty -----------------------------------------------------------------------------------------


def test_format_reward_is_the_fraction_of_checks_passed():
    reward = build({"format": {"boxed": True, "tags": ["think", "answer"]}})
    texts = [
        r"<think>hm</think><answer>\boxed{3}</answer>",
        r"<answer>x</answer><think>late</think> \boxed{3}",  # tags out of order
        "<think>hm</think><answer>3</answer>",
        "nothing",
    ]
    assert reward([""] * 4, texts) == [1.0, 0.5, 0.5, 0.0]
    assert build({"format": {"boxed": False, "pattern": r"^Answer: \d+$"}})([""], ["Answer: 4"]) == [1.0]
    with pytest.raises(ValueError, match="no check"):
        build({"format": {"boxed": False}})
    with pytest.raises(ValueError, match="not a valid regular expression"):
        build({"format": {"pattern": "("}})


def test_length_penalty_is_zero_up_to_target_then_monotone_and_capped():
    reward = build({"length_penalty": {"target_tokens": 10, "scale": 1.0, "max_penalty": 2.0}})
    lengths = list(range(0, 60, 3))
    values = reward([""] * len(lengths), [""] * len(lengths), completion_ids=[[0] * n for n in lengths])
    assert all(v == 0.0 for n, v in zip(lengths, values, strict=True) if n <= 10)
    assert all(later <= earlier for earlier, later in itertools.pairwise(values))
    assert values[lengths.index(15)] == pytest.approx(-0.5) and min(values) == -2.0
    with pytest.raises(ValueError, match="target_tokens"):
        build({"length_penalty": {"target_tokens": 0}})


# -- reward_model --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    return save_reward_model(tmp_path_factory.mktemp("rm"), build_tokenizer())


def test_reward_model_scores_prompt_plus_completion_with_its_own_tokenizer(reward_model_dir, monkeypatch):
    loads = []
    original = AutoModelForSequenceClassification.from_pretrained
    monkeypatch.setattr(
        AutoModelForSequenceClassification,
        "from_pretrained",
        lambda *a, **k: loads.append(a) or original(*a, **k),
    )
    reward = build({"reward_model": {"model": str(reward_model_dir), "batch_size": 2}})
    assert loads == []  # lazy: nothing loads while the recipe is checked
    prompts = [[{"role": "user", "content": "say a word w1"}]] * 3
    completions = [[{"role": "assistant", "content": text}] for text in ("w1", "w2 w3", "w4 w5 w6")]
    scores = reward(prompts, completions)
    reward(prompts, completions)
    assert len(loads) == 1
    tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    for prompt, completion, score in zip(prompts, completions, scores, strict=True):
        text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        assert text.startswith("user : say a word w1 </s> assistant : ")
        with torch.no_grad():
            expected = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == 3


def test_reward_model_needs_a_model():
    with pytest.raises(ValueError, match=r"needs the setting\(s\) \['model'\]"):
        parse_rewards(["reward_model"])


# -- DARLING-style diversity-aware reward ---------------------------------------------------------------------------


def test_ngram_similarity_and_distinctness():
    sim = ngram_similarity([[1, 2, 3], [1, 2, 3], [7, 8, 9], []], n=2)
    assert sim[0, 1] == 1.0 and sim[0, 2] == 0.0 and sim[3, 3] == 1.0
    d_mean, d_max = distinctness(sim, "mean"), distinctness(sim, "max")
    assert d_mean[2] == 1.0 and d_mean[0] == pytest.approx(2 / 3) and d_max[0] == 0.0
    assert distinctness(np.ones((1, 1))).tolist() == [1.0]


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_darling_ranks_a_duplicated_sample_below_a_distinct_one(aggregate):
    reward = build({"darling": {"quality": "math_answer", "aggregate": aggregate}}, num_generations=4)
    completions = [
        r"we add the two numbers and get \boxed{5}",
        r"we add the two numbers and get \boxed{5}",
        r"counting on from three twice gives \boxed{5}",
        r"two plus three equals \boxed{5}",
    ]
    values = reward(["q"] * 4, completions, answer=["5"] * 4)
    assert values[0] == values[1] < min(values[2], values[3])
    assert all(0.0 <= v <= 1.0 for v in values) and values[2] > 0
    wrong = reward(["q"] * 4, [c.replace("5", "6") for c in completions], answer=["5"] * 4)
    assert wrong == [0.0] * 4  # distinctness never rewards a wrong answer


def test_darling_negative_quality_still_prefers_distinct_samples():
    reward = build({"darling": {"quality": {"length_penalty": {"target_tokens": 1}}}}, num_generations=3)
    ids = [[1, 2, 3, 4], [1, 2, 3, 4], [9, 8, 7, 6]]
    values = reward(["q"] * 3, ["a", "a", "b"], completion_ids=ids)
    assert values[0] == values[1] < values[2] < 0


def test_darling_with_sentence_embeddings():
    reward = build({"darling": {"quality": "math_answer", "similarity": "embedding"}}, num_generations=3)
    completions = [r"The result is \boxed{4}.", r"The result is \boxed{4}.", r"Bananas are yellow, so \boxed{4}"]
    values = reward(["q"] * 3, completions, answer=["4"] * 3)
    assert values[0] == pytest.approx(values[1]) and values[1] < values[2]


def test_darling_scores_a_group_split_across_processes(monkeypatch):
    """Rank 1 holds the last row of group 0 and all of group 1: it must score them with their whole groups."""
    prompts = ["p0", "p0", "p0", "p1", "p1", "p1"]
    texts = [r"\boxed{1} a b", r"\boxed{1} a b", r"\boxed{1} c d", r"\boxed{1} e f", r"\boxed{1} g h", r"\boxed{1} g h"]
    whole = build({"darling": {"quality": "math_answer"}}, num_generations=3)(prompts, texts, answer=["1"] * 6)
    local = slice(2, 6)
    gathered: list = []
    real_gather = darling_module.gather_rows

    def fake_gather(rows):
        everything, _ = real_gather([(p, t, t.split()) for p, t in zip(prompts, texts, strict=True)])
        gathered.append(len(rows))
        return everything, local.start

    monkeypatch.setattr(darling_module, "gather_rows", fake_gather)
    reward = build({"darling": {"quality": "math_answer"}}, num_generations=3)
    split = reward(prompts[local], texts[local], answer=["1"] * 4)
    assert gathered == [4] and split == whole[local]
    assert whole[2] > whole[0] and whole[3] > whole[4]  # row 2 and row 3 are their groups' distinct samples


def test_darling_refuses_mixed_groups():
    reward = build({"darling": {"quality": "math_answer"}}, num_generations=2)
    with pytest.raises(ValueError, match="mixes prompts"):
        reward(["a", "b"], ["x", "y"], answer=["1", "1"])
    with pytest.raises(ValueError, match="do not split into groups"):
        reward(["a", "a", "a"], ["x", "y", "z"], answer=["1"] * 3)


# -- registry ------------------------------------------------------------------------------------------------------


def test_registry_parsing_and_names():
    specs = parse_rewards({"math_answer": None, "format": {"tags": ["think"]}})
    assert [(s.name, s.kwargs) for s in specs] == [("math_answer", {}), ("format", {"tags": ["think"]})]
    assert [build(s).__name__ for s in specs] == ["math_answer", "format"]
    names = {"math_answer", "format", "length_penalty", "reward_model", "darling", "toy_validity", "verifier"}
    assert set(REWARDS) == names
    with pytest.raises(ValueError, match="unknown reward 'rouge'; known rewards: math_answer"):
        parse_rewards(["rouge"])
    with pytest.raises(ValueError, match="num_generations"):
        parse_rewards([{"darling": {"num_generations": 4}}])  # filled in by the stage, not the recipe
    with pytest.raises(ValueError, match="non-empty list"):
        parse_rewards([])
    assert split_groups(list(range(6)), 3) == [[0, 1, 2], [3, 4, 5]]
    assert not math.isnan(build("length_penalty")([""], [""], completion_ids=[[1]])[0])


def test_reward_model_loads_whole_inside_a_zero3_run():
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    from divalign.zero3 import whole_model_loading

    ds_config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    assert is_deepspeed_zero3_enabled()
    with whole_model_loading():
        assert not is_deepspeed_zero3_enabled()
    assert is_deepspeed_zero3_enabled()
    del ds_config  # the global config is a weak reference: ZeRO-3 is off again for the other tests
    assert not is_deepspeed_zero3_enabled()
