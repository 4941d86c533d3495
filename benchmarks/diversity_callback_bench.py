"""Overhead of the training-time diversity callback at its default cadence.

On the step benchmark's model (Qwen2.5-0.5B shape, random weights; ``--small`` for a tiny CPU model) it measures the
median TOFU training step and the wall time of one callback evaluation with the default settings (32 prompts × 8
samples × 128 new tokens, the default training metrics including SBERT/Vendi with all-MiniLM-L6-v2), then reports

    overhead = evaluation time / (every_steps × step time)

the fraction of training wall time the callback adds at ``every_steps`` (default 100). Target: ≤ 5 %.

    python benchmarks/diversity_callback_bench.py                 # GPU
    python benchmarks/diversity_callback_bench.py --device cpu --small
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_bench import build_dataset, build_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny model and batch, for a CPU run")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--every-steps", type=int, help="callback cadence (default: the DiversityConfig default)")
    parser.add_argument("--num-prompts", type=int, help="probe prompts (default: the DiversityConfig default)")
    parser.add_argument("--max-new-tokens", type=int, help="new tokens per sample (default: the config default)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    args.batch = 2 if args.small else 8
    args.vocab = None  # the step benchmark's model shapes as they are
    args.seq = 128 if args.small else 2048
    args.completion = 96 if args.small else 1536
    return args


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer covering every id of the random model, with a chat template for the probes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials + [f"t{i}" for i in range(len(specials), vocab_size)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} </s> {% endfor %}"
    return tokenizer


def step_timer(device: str):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    return StepTimer()


def diversity_config(args: argparse.Namespace, prompts: Path):
    from divalign.diversity.callback import DiversityConfig

    overrides = {"prompts": str(prompts)}
    if args.every_steps:
        overrides["every_steps"] = args.every_steps
    if args.num_prompts:
        overrides["num_prompts"] = args.num_prompts
    if args.max_new_tokens:
        overrides["max_new_tokens"] = args.max_new_tokens
    return DiversityConfig.from_dict(overrides)


def main(argv: list[str] | None = None) -> dict:
    from divalign import TOFUConfig, TOFUTrainer
    from divalign.diversity.callback import DiversityCallback

    args = parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    model = build_model(args, torch.bfloat16 if on_cuda else torch.float32)
    tokenizer = build_tokenizer(model.config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "probe.txt"
        prompts.write_text("".join(f"t{10 + i} t{20 + i} t{30 + i}\n" for i in range(64)))
        config = diversity_config(args, prompts)
        trainer = TOFUTrainer(
            model=model,
            args=TOFUConfig(
                output_dir=tmp, per_device_train_batch_size=args.batch, max_steps=args.steps + args.warmup,
                max_length=args.seq, gradient_checkpointing=True, bf16=on_cuda, use_cpu=not on_cuda,
                logging_steps=10**6, save_strategy="no", report_to="none", seed=0,
            ),
            train_dataset=build_dataset(args, model.config.vocab_size),
            processing_class=tokenizer,
        )  # fmt: skip
        timer = step_timer(args.device)
        trainer.add_callback(timer)
        trainer.train()
        step_s = sorted(timer.times[args.warmup :])[len(timer.times[args.warmup :]) // 2]
        callback = DiversityCallback(config, trainer=trainer)
        callback.on_train_begin(trainer.args, trainer.state, trainer.control)  # loads probes + embedder, evaluates once
        start = time.perf_counter()
        callback._evaluate(trainer.args, trainer.state)
        eval_s = time.perf_counter() - start
    result = {
        "device": torch.cuda.get_device_name() if on_cuda else "cpu",
        "model": "small" if args.small else "qwen2.5-0.5b-shape",
        "step_s": step_s,
        "eval_s": eval_s,
        "every_steps": config.every_steps,
        "prompts_x_samples_x_tokens": [config.num_prompts, config.samples_per_prompt, config.max_new_tokens],
        "overhead": eval_s / (config.every_steps * step_s),
    }
    print(json.dumps(result))
    print(f"overhead at every_steps={config.every_steps}: {100 * result['overhead']:.2f} % (target <= 5 %)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
