"""The toy world's truth, SFT set, tokenizer and truth metrics (fast, CPU, offline)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from divalign.toyworld.tokenizer import build_tokenizer
from divalign.toyworld.truth_metrics import (
    entropy,
    exact_metrics,
    expected_coverage,
    kl_divergence,
    sampled_metrics,
)
from divalign.toyworld.world import PLAIN_FORMATS, ToyWorld, WorldConfig, sharpen, zipf_probs


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return ToyWorld(WorldConfig(pretrain_examples=1000))


# ----- world -----
def test_truth_sums_to_one_and_is_long_tailed(world):
    for prompt in world.prompts:
        assert math.isclose(sum(prompt.probs), 1.0, rel_tol=1e-12)
        assert list(prompt.probs) == sorted(prompt.probs, reverse=True)
        assert len(set(prompt.answers)) == len(prompt.answers)
        assert prompt.probs[0] / prompt.probs[-1] == pytest.approx(len(prompt.answers))  # Zipf, s = 1


def test_zipf_and_sharpen_closed_forms():
    probs = zipf_probs(4, 1.0)
    harmonic = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert probs == pytest.approx([1 / harmonic, 1 / (2 * harmonic), 1 / (3 * harmonic), 1 / (4 * harmonic)])
    squares = 1 + 1 / 4 + 1 / 9 + 1 / 16
    assert sharpen(probs, 2.0) == pytest.approx([1 / squares, 1 / (4 * squares), 1 / (9 * squares), 1 / (16 * squares)])


def test_world_is_deterministic(world):
    again = ToyWorld(WorldConfig(pretrain_examples=1000))
    assert again.prompts == world.prompts
    assert again.sft_records() == world.sft_records()
    assert list(again.pretrain_texts(50, seed=3)) == list(world.pretrain_texts(50, seed=3))


def test_sft_set_under_represents_the_tail(world):
    records = world.sft_records()
    by_prompt: dict[str, Counter] = {}
    for record in records:
        by_prompt.setdefault(record["prompt"][0]["content"], Counter())[record["completion"][0]["content"]] += 1
    seen = {p.text: p for p in world.seen_prompts}
    assert set(by_prompt) == set(seen)
    tail_rank = world.config.tail_start_rank
    sft_tail = sum(sum(c[a] for a in seen[t].answers[tail_rank:]) for t, c in by_prompt.items()) / len(records)
    truth_tail = sum(world.tail_share(p) for p in seen.values()) / len(seen)
    assert sft_tail < 0.5 * truth_tail, (sft_tail, truth_tail)
    # every SFT answer is valid for its prompt
    assert all(set(c) <= set(seen[t].answers) for t, c in by_prompt.items())


def test_heldout_prompts_absent_from_sft(world):
    heldout = world.heldout_prompts
    assert heldout and len(heldout) < len(world.prompts)
    sft_prompts = {r["prompt"][0]["content"] for r in world.sft_records()}
    sft_answers = {r["completion"][0]["content"] for r in world.sft_records()}
    for prompt in heldout:
        assert prompt.text not in sft_prompts
    # held-out categories are whole categories: not even their answers are taught in the chat format
    heldout_only = {a for p in heldout for a in p.answers} - {a for p in world.seen_prompts for a in p.answers}
    assert heldout_only and not heldout_only & sft_answers


def test_pretraining_corpus_covers_the_full_truth_in_plain_format(world):
    texts = list(world.pretrain_texts(20_000, seed=0))
    assert all("<|" not in t for t in texts)
    prefixes = [ToyWorld.plain_prefix(p.text, f) for p in world.prompts for f in range(len(PLAIN_FORMATS))]
    answers = Counter()
    for text in texts:
        prefix = next(x for x in prefixes if text.startswith(x + " "))
        answers[text[len(prefix) + 1 :]] += 1
    tail = {a for p in world.prompts for a in p.answers[world.config.tail_start_rank :]}
    assert sum(answers[a] for a in tail) / len(texts) == pytest.approx(world.tail_share(world.prompts[0]), abs=0.02)


def test_write_and_reload(tmp_path, world):
    paths = world.write(tmp_path)
    assert ToyWorld.from_truth_file(paths["truth"]).prompts == world.prompts
    rows = [json.loads(line) for line in paths["heldout_prompts"].read_text().splitlines()]
    assert [r["prompt"][0]["content"] for r in rows] == [p.text for p in world.heldout_prompts]
    assert len(paths["sft"].read_text().splitlines()) == len(world.sft_records())


# ----- tokenizer -----
def test_chat_template_prompt_is_a_prefix_and_marks_the_answer(world):
    tokenizer = build_tokenizer(world)
    messages = [{"role": "user", "content": "name a color"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "ice cream"}], return_dict=True, return_assistant_tokens_mask=True
    )
    assert full["input_ids"][: len(prompt)] == prompt
    assert full["input_ids"][0] == tokenizer.bos_token_id and full["input_ids"][-1] == tokenizer.eos_token_id
    answer = [t for t, m in zip(full["input_ids"], full["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(answer) == "ice cream <eos>"
    assert tokenizer.unk_token_id not in full["input_ids"]


# ----- truth metrics -----
def test_entropy_and_kl_closed_forms():
    assert entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    assert entropy({"a": 1.0, "b": 0.0}) == 0.0
    truth = {"a": 0.5, "b": 0.5}
    assert kl_divergence(truth, truth) == pytest.approx(0.0)
    assert kl_divergence(truth, {"a": 0.25, "b": 0.75}) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    # sub-normalised model: the missing mass Z counts as −log Z
    assert kl_divergence(truth, {"a": 0.25, "b": 0.25}) == pytest.approx(math.log(2))


def test_sampled_metrics_on_a_hand_made_list():
    truth = {"red": 0.5, "blue": 0.25, "green": 0.25}
    samples = ["red", "red", "blue", "dog", "red <no-eos>", "red", "blue", "red"]
    m = sampled_metrics(samples, truth, smoothing=0.5)
    assert m.validity == pytest.approx(6 / 8)
    assert m.coverage == pytest.approx(2 / 3)
    assert m.mass_coverage == pytest.approx(0.75)
    assert m.distinct == 2
    assert m.entropy == pytest.approx(-(4 / 6) * math.log(4 / 6) - (2 / 6) * math.log(2 / 6))
    smoothed = {"red": 4.5 / 7.5, "blue": 2.5 / 7.5, "green": 0.5 / 7.5}
    expected_kl = sum(t * math.log(t / smoothed[a]) for a, t in truth.items())
    assert m.kl == pytest.approx(expected_kl)


def test_sampled_metrics_without_valid_samples():
    m = sampled_metrics(["x", "y"], {"a": 1.0})
    assert (m.validity, m.coverage, m.mass_coverage, m.entropy, m.distinct) == (0.0, 0.0, 0.0, 0.0, 0)


def test_exact_metrics_closed_forms():
    truth = {"a": 0.5, "b": 0.3, "c": 0.2}
    model = {"a": 0.6, "b": 0.2, "c": 0.0}  # 0.2 of the mass is invalid
    m = exact_metrics(model, truth, k=2, tail=["c"])
    assert m.validity == pytest.approx(0.8)
    assert m.entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert m.tail_mass == 0.0
    seen_a, seen_b = 1 - 0.4**2, 1 - 0.8**2
    assert m.coverage == pytest.approx((seen_a + seen_b) / 3)
    assert m.mass_coverage == pytest.approx(0.5 * seen_a + 0.3 * seen_b)
    assert m.kl > 10  # an answer with zero probability costs (almost) infinitely much
    perfect = exact_metrics(truth, truth, k=1, tail=["c"])
    assert (perfect.validity, perfect.kl, perfect.tail_mass) == pytest.approx((1.0, 0.0, 0.2))
    assert perfect.entropy == pytest.approx(entropy(truth))
    assert perfect.coverage == pytest.approx(1 / 3)  # one sample covers exactly one of three answers


def test_expected_coverage_limits():
    truth = {"a": 0.9, "b": 0.1}
    assert expected_coverage(truth, truth, k=0) == 0.0
    assert expected_coverage(truth, truth, k=10_000) == pytest.approx(1.0)
    assert expected_coverage({"a": 1.0}, {"a": 1.0}, k=3) == pytest.approx(1.0)


# ----- exact probabilities at a sampling temperature, the sampler, the frontier -----
@pytest.fixture(scope="module")
def random_model(world):
    import torch
    from transformers import LlamaForCausalLM

    from divalign.toyworld.pretrain import PretrainConfig, model_config

    tokenizer = build_tokenizer(world)
    torch.manual_seed(0)
    return LlamaForCausalLM(model_config(tokenizer, PretrainConfig())).eval(), tokenizer


@pytest.mark.parametrize("fmt", ["chat", "plain"])
def test_exact_answer_probabilities_at_temperature_are_token_by_token_products(world, random_model, fmt):
    """P_T(answer + EOS | prompt), batched over every answer, against a token-at-a-time product of softmax(z / T)."""
    import torch

    from divalign.toyworld.evaluate import answer_probabilities, prompt_ids

    model, tokenizer = random_model
    prompt = world.seen_prompts[3]
    probs = answer_probabilities(model, tokenizer, [prompt], fmt, temperatures=(0.5, 1.0, 2.0))
    for t in (0.5, 1.0, 2.0):
        for answer in prompt.answers[:4]:
            ids = prompt_ids(tokenizer, prompt, fmt)
            expected = 1.0
            for token in [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]:
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0, -1].double()
                expected *= float(torch.softmax(logits / t, dim=-1)[token])
                ids.append(token)
            assert probs[t][0][answer] == pytest.approx(expected, rel=1e-4)


def test_sample_answers_are_keyed_by_prompt_and_seed(world, random_model):
    from divalign.toyworld.evaluate import sample_answers

    model, tokenizer = random_model
    prompts = world.seen_prompts[:3]
    answers = sample_answers(model, tokenizer, prompts, "chat", num_samples=5, seed=0)
    assert [len(a) for a in answers] == [5, 5, 5]
    assert sample_answers(model, tokenizer, prompts[:2], "chat", num_samples=5, seed=0) == answers[:2]
    assert sample_answers(model, tokenizer, prompts, "chat", num_samples=5, seed=1) != answers
    # an untrained model never stops within 6 tokens: every sample is marked, so it can never count as valid
    assert all(a.endswith("<no-eos>") for group in answers for a in group)


def test_sampled_answers_end_at_the_eos(world, random_model):
    """A model whose EOS logit dominates after the first token: its samples are that one token, unmarked."""
    import copy

    import torch

    from divalign.toyworld.evaluate import prompt_ids, sample_answers

    model, tokenizer = random_model
    model = copy.deepcopy(model)
    prompt = world.seen_prompts[0]
    with torch.no_grad():
        hidden = model.model(torch.tensor([prompt_ids(tokenizer, prompt, "chat")])).last_hidden_state[0, -1]
        model.lm_head.weight[tokenizer.eos_token_id] = 50 * hidden / hidden.norm() ** 2  # EOS logit ~50 there
    (answers,) = sample_answers(model, tokenizer, [prompt], "chat", num_samples=6, seed=0)
    first_tokens = [a for a in answers if not a.endswith("<no-eos>")]
    assert first_tokens and all(len(tokenizer(a, add_special_tokens=False)["input_ids"]) <= 1 for a in first_tokens)


def test_the_pretraining_schedule_against_transformers_cosine():
    """The base model's schedule is transformers' cosine-with-minimum after warm-up, bit for bit, and one step ahead
    of it during warm-up (why the demo keeps its own: the library's would change every number)."""
    import torch
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    from divalign.toyworld.pretrain import PretrainConfig, _lr_factor

    cfg = PretrainConfig()
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    library = get_cosine_with_min_lr_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps, min_lr_rate=0.1)
    factor = library.lr_lambdas[0]
    assert [_lr_factor(step, cfg) for step in range(cfg.warmup_steps, cfg.steps)] == [
        factor(step) for step in range(cfg.warmup_steps, cfg.steps)
    ]
    assert [_lr_factor(step, cfg) for step in range(cfg.warmup_steps - 1)] == [
        factor(step + 1) for step in range(cfg.warmup_steps - 1)
    ]
    assert factor(0) == 0.0 and _lr_factor(0, cfg) == 1 / cfg.warmup_steps
