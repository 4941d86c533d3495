"""`divalign.generation`: the one sampling path (seeded inverse-CDF draw, neutral settings, batches and ranks)."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pytest
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, TemperatureLogitsWarper, TopPLogitsWarper

from divalign import generation, sampling_progress, smoke
from divalign.generation import (
    SamplingProgress,
    SamplingSettings,
    SeededSampler,
    cut_at_stop,
    encode_prompt,
    generate_batch,
    left_pad,
    pad_token_id,
    prompt_batches,
    prompt_uniforms,
    rank_batches,
    render_prompt,
    sample_completions,
    stop_token_ids,
)

PROMPTS = ["say a word w1", "say w2", "a word", "say say", [{"role": "user", "content": "say a"}]]


@pytest.fixture(scope="module")
def tiny():
    tokenizer = smoke.build_tokenizer()
    model = smoke.build_model(tokenizer).eval()
    stop = stop_token_ids(tokenizer, model.generation_config)
    return model, tokenizer, stop, pad_token_id(tokenizer, stop)


def draw(probs: list[float], uniforms: list[float]) -> list[int]:
    """Run the sampler on one step of rows that all share `probs`."""
    scores = torch.tensor([probs] * len(uniforms)).log()
    out = SeededSampler(torch.tensor(uniforms)[:, None], prompt_width=3)(torch.zeros(len(uniforms), 3), scores)
    assert torch.isinf(out).sum(dim=1).tolist() == [len(probs) - 1] * len(uniforms)  # one token kept per row
    return out.argmax(dim=1).tolist()


def test_seeded_sampler_is_inverse_cdf_sampling():
    # cdf = 0.1, 0.1, 0.7, 1.0: token 1 has probability 0 and is never drawn
    assert draw([0.1, 0.0, 0.6, 0.3], [0.05, 0.0999, 0.1001, 0.69, 0.71, 1.0]) == [0, 0, 2, 2, 3, 3]


def test_seeded_sampler_frequencies_match_the_distribution():
    probs = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    n = 20_000
    counts = np.bincount(draw(probs.tolist(), (1.0 - np.random.default_rng(0).random(n)).tolist()), minlength=5)
    chi2 = float((((counts - n * probs) ** 2) / (n * probs)).sum())
    assert chi2 < 18.5  # chi-square, 4 degrees of freedom, p = 0.001


def test_first_token_follows_the_warped_model_distribution(tiny):
    """End to end through `generate`: temperature 0.7 and top-p 0.8 applied to the model's own logits, nothing else."""
    model, tokenizer, stop, pad = tiny
    prompt = encode_prompt("say a word", tokenizer)
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].double()
    probs = torch.softmax(logits / 0.7, dim=-1)
    ordered, index = probs.sort(descending=True)
    keep = index[(ordered.cumsum(0) - ordered) < 0.8]  # the smallest set whose mass reaches 0.8
    expected = torch.zeros_like(probs)
    expected[keep] = probs[keep] / probs[keep].sum()
    n = 3000
    settings = SamplingSettings(num_samples=n, max_new_tokens=1, temperature=0.7, top_p=0.8)
    (group,) = generate_batch(model, [prompt], [0], settings, stop, pad)  # raw: an EOS first token counts too
    counts = torch.bincount(torch.tensor([ids[0] for ids in group]), minlength=len(probs)).double()
    assert set(counts.nonzero().flatten().tolist()) <= set(keep.tolist())
    used = expected > 0
    chi2 = float((((counts[used] - n * expected[used]) ** 2) / (n * expected[used])).sum())
    assert chi2 < 3 * int(used.sum())  # far below what a missing warper (or a leftover top-k) gives


def test_samples_depend_on_seed_and_prompt_only(tiny):
    model, tokenizer, stop, pad = tiny
    ids = [encode_prompt(p, tokenizer) for p in PROMPTS]
    settings = SamplingSettings(num_samples=3, max_new_tokens=6, seed=7, batch_size=2)
    reference = sample_completions(model, ids, settings, stop, pad)
    assert sorted(reference) == list(range(5)) and all(len(group) == 3 for group in reference.values())
    for batch_size in (1, 3, 8):
        assert (
            sample_completions(model, ids, SamplingSettings(3, 6, seed=7, batch_size=batch_size), stop, pad)
            == reference
        )
    for world in (2, 3):
        shares = [sample_completions(model, ids, settings, stop, pad, rank=r, world=world) for r in range(world)]
        assert {i: g for share in shares for i, g in share.items()} == reference
    assert sample_completions(model, ids, SamplingSettings(3, 6, seed=8, batch_size=2), stop, pad) != reference
    # stop tokens are cut, never counted
    assert all(t not in stop and t != pad for group in reference.values() for row in group for t in row)


def test_samples_depend_on_max_new_tokens_but_not_on_the_number_of_samples(tiny):
    """What the docs say the noise depends on: more samples per prompt leave the first ones unchanged; another length
    budget keeps only each prompt's first sample (up to the shorter budget) and draws the others anew."""
    model, tokenizer, stop, pad = tiny
    ids = [encode_prompt(p, tokenizer) for p in PROMPTS]
    short = sample_completions(model, ids, SamplingSettings(4, 4, seed=5), stop, pad, cut=False)
    more = sample_completions(model, ids, SamplingSettings(6, 4, seed=5), stop, pad, cut=False)
    longer = sample_completions(model, ids, SamplingSettings(4, 12, seed=5), stop, pad, cut=False)
    assert all(more[i][:4] == short[i] for i in short)
    assert all(longer[i][0][:4] == short[i][0] for i in short)
    moved = [(i, k) for i in short for k in range(1, 4) if longer[i][k][:4] != short[i][k]]
    assert len(moved) >= 5, moved  # of 15: the noise of samples 1-3 changed with the budget
    u4, u12 = prompt_uniforms(5, 0, 4, 4), prompt_uniforms(5, 0, 4, 12)
    assert np.array_equal(u12[0, :4], u4[0]) and not any(np.array_equal(u12[k, :4], u4[k]) for k in range(1, 4))


def test_checkpoint_generation_config_is_not_applied(tiny, monkeypatch):
    """`generate` merges a checkpoint's generation config (here: top-k 1, repetition penalty 1.5, n-gram blocking,
    a minimum length, suppressed tokens) into every call; the processors it actually builds must be only
    temperature, top-p and the seeded draw, and the model keeps its own config afterwards."""
    model, tokenizer, stop, pad = tiny
    ids = [encode_prompt(p, tokenizer) for p in PROMPTS[:3]]
    settings = SamplingSettings(num_samples=4, max_new_tokens=5, temperature=0.9, top_p=0.95)
    plain = sample_completions(model, ids, settings, stop, pad)
    custom = GenerationConfig(
        top_k=1,
        repetition_penalty=1.5,
        no_repeat_ngram_size=1,
        min_new_tokens=4,
        suppress_tokens=[5, 6],
        do_sample=True,
        temperature=0.1,
    )
    monkeypatch.setattr(model, "generation_config", custom)
    built, received = [], []
    original = type(model)._get_logits_processor

    def spy(self, generation_config, *args, **kwargs):
        received.append(generation_config)
        processors = original(self, generation_config, *args, **kwargs)
        built.append(processors)
        return processors

    monkeypatch.setattr(type(model), "_get_logits_processor", spy)
    assert sample_completions(model, ids, settings, stop, pad) == plain
    assert model.generation_config is custom
    for processors, config in zip(built, received, strict=True):
        assert [type(p) for p in processors] == [TemperatureLogitsWarper, TopPLogitsWarper, SeededSampler]
        assert processors[0].temperature == 0.9 and processors[1].top_p == 0.95
        assert not config.do_sample and config.num_beams == 1  # the draw is SeededSampler's, decoding greedy over it
        assert (config.repetition_penalty, config.no_repeat_ngram_size, config.min_length) == (1.0, 0, 0)
        assert config.min_new_tokens is None
        assert config.suppress_tokens is None and config.max_new_tokens == 5 and config.eos_token_id == stop


def test_batches_are_fixed_and_dealt_round_robin():
    assert prompt_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert rank_batches(5, 2, rank=0, world=2, lockstep=False) == [[0, 1], [4]]
    assert rank_batches(5, 2, rank=1, world=2, lockstep=False) == [[2, 3]]
    # lock-step: every rank makes the same number of generate calls, the short one with a dummy batch
    assert rank_batches(5, 2, rank=1, world=2, lockstep=True) == [[2, 3], None]
    assert rank_batches(1, 4, rank=2, world=3, lockstep=True) == [None]
    for n, size, world in [(7, 3, 2), (1, 1, 4), (12, 5, 3)]:
        dealt = [b for r in range(world) for b in rank_batches(n, size, r, world, False)]
        assert sorted(i for b in dealt for i in b) == list(range(n))


def test_uniforms_are_keyed_by_seed_and_prompt():
    a = prompt_uniforms(0, 3, num_samples=2, steps=4)
    assert a.shape == (2, 4) and ((a > 0) & (a <= 1)).all()
    assert np.array_equal(a, prompt_uniforms(0, 3, 2, 4))
    assert np.array_equal(prompt_uniforms(0, 3, 3, 4)[:2], a)  # more samples leave the first ones unchanged
    assert not np.array_equal(a, prompt_uniforms(0, 4, 2, 4)) and not np.array_equal(a, prompt_uniforms(1, 3, 2, 4))


def test_rendering_stop_ids_padding_and_cutting(tiny):
    _, tokenizer, _, _ = tiny
    assert render_prompt("say a", tokenizer) == "user : say a </s> assistant : "
    # TRL's prompt-only rule: a final assistant turn is continued, not closed
    continued = [{"role": "user", "content": "say"}, {"role": "assistant", "content": "w1"}]
    assert render_prompt(continued, tokenizer).endswith("assistant : w1")
    tokenizer = smoke.build_tokenizer()
    tokenizer.chat_template = None
    assert render_prompt("say a", tokenizer) == "say a"
    assert encode_prompt("say a", tokenizer) == tokenizer("say a", add_special_tokens=True)["input_ids"]
    with pytest.raises(ValueError, match="chat template"):
        render_prompt([{"role": "user", "content": "hi"}], tokenizer)
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=[2, 9])) == [2, 9]
    assert cut_at_stop([4, 5, 9, 6, 2], [2, 9]) == [4, 5] and cut_at_stop([4, 5], [2]) == [4, 5]
    ids, mask = left_pad([[7, 8, 9], [5]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_samples": 0}, "num_samples must be >= 1"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": math.inf}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_settings_check_names_the_setting(change, message):
    with pytest.raises(ValueError, match=message):
        SamplingSettings(**{"num_samples": 2, "max_new_tokens": 4, **change}).check()


BAR = re.compile(
    r"(?P<label>[^\r\n]*?): +(?P<percent>\d+)%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+) "
    r"\[(?P<elapsed>\d\d:\d\d)<(?P<left>\d\d:\d\d|\?), +(?P<rate>[\d.]+|\?)token/s"
    r"(?:, (?P<samples>\d+)/(?P<all_samples>\d+) samples)?\]"
)


def bar_states(stderr: str, label: str) -> list[dict[str, str]]:
    """Every display of the tqdm bar `label` in captured stderr (tqdm redraws with carriage returns), a display drawn
    twice in a row (the final redraw on closing) once."""
    states = [m.groupdict() for m in BAR.finditer(stderr) if m["label"].endswith(label)]
    shown = [(s["done"], s["total"], s["samples"]) for s in states]
    return [s for i, s in enumerate(states) if i == 0 or shown[i] != shown[i - 1]]


def produced(row, stop, pad):
    """Tokens generate() produced for one raw completion, counted by hand: up to and including its first stop or pad
    token, all of them when it ran to max_new_tokens."""
    ends = [position for position, token in enumerate(row) if token in (*stop, pad)]
    return ends[0] + 1 if ends else len(row)


@pytest.fixture
def every_step_drawn(monkeypatch):
    """Draw every update, however fast the tiny model is (tqdm reads its TQDM_* variables once, at import), and
    report the tokens at every decoding step."""
    monkeypatch.setattr(sampling_progress, "tqdm", functools.partial(tqdm, mininterval=0, miniters=1))
    monkeypatch.setattr(generation.TokenCounter, "interval", 0.0)


def test_progress_bar_counts_generated_tokens_and_samples(tiny, capsys, every_step_drawn):
    """Rank 0 of 2, batches of 1 prompt: its share is prompts 0, 2 and 4 (3 × 4 samples, 6 new tokens at most). The
    bar counts the tokens generated (per raw completion, up to and including its first stop or pad token, counted
    here from the raw rows by hand) with their rate and the time left, and the samples done; its total starts at the
    budget, 3 × 4 × 6, and loses what the completions that stopped early left unused."""
    model, tokenizer, stop, pad = tiny
    ids = [encode_prompt(p, tokenizer) for p in PROMPTS]
    settings = SamplingSettings(num_samples=4, max_new_tokens=6, seed=3, batch_size=1)
    raw = sample_completions(model, ids, settings, stop, pad, rank=0, world=2, cut=False)
    capsys.readouterr()
    progressed = sample_completions(
        model, ids, settings, stop, pad, rank=0, world=2, progress=SamplingProgress("probe")
    )
    assert progressed == sample_completions(model, ids, settings, stop, pad, rank=0, world=2)  # same samples
    states = bar_states(capsys.readouterr().err, "probe")
    assert (states[0]["done"], states[0]["total"], states[0]["samples"]) == ("0", "72", "0")
    tokens, expected = [], 0
    for index in (0, 2, 4):
        expected += sum(produced(row, stop, pad) for row in raw[index])
        tokens.append(expected)
    ends_of_batches = [s for i, s in enumerate(states) if i and s["samples"] != states[i - 1]["samples"]]
    assert [(int(s["done"]), int(s["total"]), s["samples"]) for s in ends_of_batches] == [
        (tokens[0], tokens[0] + 2 * 4 * 6, "4"),
        (tokens[1], tokens[1] + 4 * 6, "8"),
        (tokens[2], tokens[2], "12"),
    ]
    assert 0 < tokens[-1] < 3 * 4 * 6  # some completions stopped early: their padding is not counted
    done = [int(s["done"]) for s in states]
    assert done == sorted(done) and len(set(done)) > 4  # it moved between the batches' ends too
    for state in states[1:]:
        assert float(state["rate"]) > 0 and state["left"] != "?" and state["all_samples"] == "12"
    assert states[-1]["left"] == "00:00" and states[-1]["percent"] == "100"
    # no bar unless asked
    sample_completions(model, ids, settings, stop, pad)
    assert capsys.readouterr().err == ""


def test_progress_bar_moves_within_one_generate_batch(tiny, capsys, every_step_drawn):
    """All 5 prompts in one `generate` batch (the eval's default batch of 8): the bar advances at each decoding step,
    while no sample is done yet, not once when the batch returns."""
    model, tokenizer, stop, pad = tiny
    ids = [encode_prompt(p, tokenizer) for p in PROMPTS]
    settings = SamplingSettings(num_samples=4, max_new_tokens=8, seed=2, batch_size=8)
    raw = sample_completions(model, ids, settings, stop, pad, cut=False)
    capsys.readouterr()
    sample_completions(model, ids, settings, stop, pad, progress=SamplingProgress("one batch"))
    states = bar_states(capsys.readouterr().err, "one batch")
    within = [int(s["done"]) for s in states if s["samples"] == "0"]
    assert len(within) >= 4 and within == sorted(within) and within[1] == 20  # 20 rows, one token each at step 1
    total = sum(produced(row, stop, pad) for group in raw.values() for row in group)
    assert (int(states[-1]["done"]), int(states[-1]["total"]), states[-1]["samples"]) == (total, total, "20")


def test_the_token_counter_counts_rows_until_their_stop_token_and_never_stops():
    heard = []
    counter = generation.TokenCounter(heard.append, {0, 9})
    counter.interval = 0.0
    steps = [[5, 0, 6], [9, 0, 6], [9, 0, 7], [9, 0, 0]]  # row 1 stops at once, row 0 at step 2, row 2 at step 4
    for t in range(len(steps)):
        input_ids = torch.tensor([[1, 1] + [steps[s][r] for s in range(t + 1)] for r in range(3)])
        assert not counter(input_ids, torch.zeros(3, 10)).any()
    assert heard == [3, 2, 1, 1]  # each stop token counts, the padding after it does not


def test_each_prompt_is_prefilled_once_and_samples_as_a_row_by_row_prefill(tiny, monkeypatch):
    """The shared prefill (`divalign.prompt_prefill`) is a speed-up only: on this model the samples equal those of
    `generate` prefilling all K rows itself (in general, up to float rounding; left padding of prompts of several lengths, a one-token prompt padded beside longer
    ones, a batch of one one-token prompt with nothing to prefill), and the prompts' tokens go through the model once
    per prompt, not once per sample."""
    model, tokenizer, stop, pad = tiny
    one_token = encode_prompt("say", tokenizer)[-1:]
    ids = [encode_prompt(p, tokenizer) for p in PROMPTS] + [one_token, one_token]
    settings = SamplingSettings(num_samples=6, max_new_tokens=5, temperature=0.8, top_p=0.95, seed=3, batch_size=3)
    shapes: list[tuple[int, int]] = []
    forward = model.forward

    def recording_forward(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recording_forward)
    shared = sample_completions(model, ids, settings, stop, pad, cut=False)
    first, second = (max(len(ids[i]) for i in batch) for batch in prompt_batches(len(ids), 3)[:2])
    # one prefill of each batch's prompts; then one token of every row at a time (each row's last prompt token first)
    assert [shape for shape in shapes if shape[1] > 1] == [(3, first - 1), (3, second - 1)]
    assert {shape for shape in shapes if shape[1] == 1} == {(18, 1), (6, 1)}
    shapes.clear()
    monkeypatch.setattr(generation, "prefilled_prompt_cache", lambda *args: None)  # what prefill_bench.py times
    assert sample_completions(model, ids, settings, stop, pad, cut=False) == shared
    assert [shape for shape in shapes if shape[1] > 1] == [(18, first), (18, second)]  # every row prefilled


def test_the_prefill_benchmark_times_both_ways_and_counts_the_samples_that_differ(tmp_path):
    """benchmarks/prefill_bench.py on a tiny checkpoint: both ways timed, the JSON written, and on this model no
    sample differs (what the test above checks through `sample_completions`)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    model = smoke.save_tiny_model(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:4]))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "prefill_bench.py"
    args = [str(model), str(prompts), "--samples", "3", "--max-new-tokens", "4", "--batch-size", "3", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *args, "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["prompts"], result["samples"], result["samples_differing"]) == (4, 12, 0)
    assert result["seconds_prefilled_once"] > 0 and result["seconds_row_by_row"] > 0
