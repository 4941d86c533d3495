"""Full trainer step: TRL ``SFTTrainer(loss_type="nll")`` against divalign's TOFU and GEM trainers.

Qwen2.5-0.5B-shaped model with random weights (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab
151,936, tied embeddings), bf16, batch 8 × 2048 tokens of which the last 1536 of each row are trained on, gradient
checkpointing. Each variant trains in a fresh subprocess; the step time is the median over the steps after the
warm-up (CUDA-synchronised at both ends of every step), the peak memory is ``torch.cuda.max_memory_allocated`` on
CUDA and the peak RSS on CPU.

    python benchmarks/step_bench.py                               # GPU, default variants
    python benchmarks/step_bench.py --variants nll tofu:fused gem:fused gem-logsigmoid:fused
    python benchmarks/step_bench.py --device cpu --small          # CPU smoke run on a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

DEFAULT_VARIANTS = ["nll", "tofu:auto", "gem:auto", "tofu:reference", "gem:reference"]
FULL_MODEL = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151_936,
    tie_word_embeddings=True,
)
SMALL_MODEL = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=2000,
    tie_word_embeddings=True,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny model and batch, for a CPU smoke run")
    parser.add_argument("--batch", type=int, help="rows per step (default 8; 2 with --small)")
    parser.add_argument("--seq", type=int, help="tokens per row (default 2048; 128 with --small)")
    parser.add_argument("--completion", type=int, help="trained tokens per row (default 1536; 96 with --small)")
    parser.add_argument("--vocab", type=int, help="vocabulary size of the --small model (default 2000)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        help="'nll' or LOSS:HEAD with LOSS in tofu, gem, gem-logsigmoid and HEAD in auto, reference, fused",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.small else 8)
    args.seq = args.seq or (128 if args.small else 2048)
    args.completion = args.completion or (96 if args.small else 1536)
    if args.small:
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    return args


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(["<pad>", "<s>", "</s>", "<unk>"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def build_model(args: argparse.Namespace, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = {**SMALL_MODEL, "vocab_size": args.vocab or SMALL_MODEL["vocab_size"]} if args.small else FULL_MODEL
    config = Qwen2Config(**shape, max_position_embeddings=max(args.seq, 2048))
    return Qwen2ForCausalLM(config).to(dtype)


def build_dataset(args: argparse.Namespace, vocab_size: int):
    from datasets import Dataset

    gen = torch.Generator().manual_seed(0)
    rows = args.batch * (args.steps + args.warmup)
    ids = torch.randint(4, vocab_size, (rows, args.seq), generator=gen)
    labels = ids.clone()
    labels[:, : args.seq - args.completion] = -100  # the prompt part is not trained on
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def build_trainer(args: argparse.Namespace, output_dir: str):
    """The trainer of ``args.worker`` ('nll' or LOSS:HEAD) on the benchmark model and data."""
    from trl import SFTConfig, SFTTrainer

    from divalign import GEMConfig, GEMTrainer, TOFUConfig, TOFUTrainer

    on_cuda = args.device.startswith("cuda")
    common = dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch,
        max_steps=args.steps + args.warmup,
        max_length=args.seq,
        gradient_checkpointing=True,
        bf16=on_cuda,
        use_cpu=not on_cuda,
        learning_rate=1e-5,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
    )
    model = build_model(args, torch.bfloat16 if on_cuda else torch.float32)
    data = build_dataset(args, model.config.vocab_size)
    loss, _, head = args.worker.partition(":")
    if loss == "nll":
        config_cls, trainer_cls, extra = SFTConfig, SFTTrainer, dict(loss_type="nll")
    elif loss == "tofu":
        config_cls, trainer_cls, extra = TOFUConfig, TOFUTrainer, dict(tofu_gamma=3.0, tofu_beta=0.8)
    elif loss in ("gem", "gem-logsigmoid"):
        h = "logsigmoid" if loss == "gem-logsigmoid" else "linear"
        config_cls, trainer_cls, extra = GEMConfig, GEMTrainer, dict(gem_beta=0.7, gem_h=h)
    else:
        raise ValueError(f"unknown variant {args.worker!r}")
    if loss != "nll":
        extra["loss_head"] = head or "auto"
    config = config_cls(**common, **extra)
    return trainer_cls(model=model, args=config, train_dataset=data, processing_class=build_tokenizer())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_variant(args: argparse.Namespace) -> dict:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step; resets the CUDA peak once the warm-up is over."""

        def __init__(self):
            self.times: list[float] = []
            self.start = 0.0

        def on_step_begin(self, _args, state, control, **kwargs):
            if state.global_step == args.warmup and args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            _sync(args.device)
            self.start = time.perf_counter()

        def on_step_end(self, _args, state, control, **kwargs):
            _sync(args.device)
            if state.global_step > args.warmup:
                self.times.append((time.perf_counter() - self.start) * 1e3)

    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(args, output_dir)
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = sorted(timer.times)
    return {"variant": args.worker, "step_ms": times[len(times) // 2], "peak_mib": peak, "steps": len(times)}


def _spawn(worker: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", worker]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{worker} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: list[dict]) -> None:
    base = next((r for r in results if r["variant"] == "nll"), None)
    print(f"\n{'variant':<28}{'step ms':>10}{'peak MiB':>12}{'time/nll':>10}{'mem/nll':>10}")
    for r in results:
        t = r["step_ms"] / base["step_ms"] if base else float("nan")
        m = r["peak_mib"] / base["peak_mib"] if base else float("nan")
        print(f"{r['variant']:<28}{r['step_ms']:>10.1f}{r['peak_mib']:>12.0f}{t:>10.2f}{m:>10.2f}")
    print("targets: time/nll <= 1.10, mem/nll <= 1.15")


def _describe_device(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.worker:
        print(json.dumps(run_variant(args)))
        return
    print(f"device: {_describe_device(args.device)}; torch {torch.__version__}")
    print(f"batch {args.batch} x {args.seq} tokens, {args.completion} trained per row; {args.steps} timed steps")
    results = []
    for variant in args.variants:
        results.append(_spawn(variant, argv))
        print(json.dumps(results[-1]), flush=True)
    print_table(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": _describe_device(args.device), "args": vars(args), "results": results}, out, indent=1)


if __name__ == "__main__":
    main()
