"""Sampling time with each prompt prefilled once for its K samples (`divalign.prompt_prefill`, the default) against
`generate` prefilling every one of the K rows itself, through `divalign.generation.sample_completions` on a local
checkpoint and a prompt file.

    python benchmarks/prefill_bench.py MODEL PROMPTS [--samples 12] [--max-new-tokens 8] [--batch-size 10]
    python benchmarks/prefill_bench.py runs/demo-real/base_model runs/demo-real/world/prompts_calibration.jsonl

Reports the median time of each way over `--repeats` runs after one warm-up each, and how many samples differ between
the two ways (the same seeded draws; float rounding of the other matrix shapes can flip a draw that falls at a
token's boundary).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from typing import Any
from unittest import mock

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from divalign import generation
from divalign.generation import SamplingSettings, encode_prompt, pad_token_id, sample_completions, stop_token_ids
from divalign.prompts import load_prompts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a local checkpoint directory")
    parser.add_argument("prompts", help="a prompt file (.jsonl with `prompt`, ...: what `divalign eval` reads)")
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=10, help="prompts per generate call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the result here")
    return parser.parse_args(argv)


def timed(run: Any, repeats: int) -> tuple[float, Any]:
    """The median seconds of `repeats` calls after one warm-up, and the warm-up's result."""
    result = run()
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    ids = [encode_prompt(record.prompt, tokenizer) for record in load_prompts(args.prompts)]
    stops = stop_token_ids(tokenizer, model.generation_config)
    settings = SamplingSettings(args.samples, args.max_new_tokens, args.temperature, batch_size=args.batch_size)

    def sample() -> dict[int, list[list[int]]]:
        return sample_completions(model, ids, settings, stops, pad_token_id(tokenizer, stops), cut=False)

    shared_s, shared = timed(sample, args.repeats)
    with mock.patch.object(generation, "prefilled_prompt_cache", lambda *_: None):
        rows_s, rows = timed(sample, args.repeats)
    differing = sum(a != b for i in shared for a, b in zip(shared[i], rows[i], strict=True))
    result = {
        "date": date.today().isoformat(),
        "device": f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "model": args.model,
        "prompts": len(ids),
        "prompt_tokens_mean": sum(map(len, ids)) / len(ids),
        "settings": vars(args),
        "seconds_prefilled_once": shared_s,
        "seconds_row_by_row": rows_s,
        "speedup": rows_s / shared_s,
        "samples": len(ids) * args.samples,
        "samples_differing": differing,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    main()
