"""Loss head alone: forward+backward time and peak memory of the LM head under each loss implementation.

Variants: the bare projection (``h @ W.T`` forward and its two backward matmuls: the floor any head pays),
full-logit CE, the reference chunked head (:func:`divalign.heads.chunked.chunked_head_loss`) for CE/TOFU/GEM and the
fused tiled head (:func:`divalign.heads.torch_tiles.fused_head_loss`). Each variant runs in a fresh subprocess so its peak
memory is its own: ``torch.cuda.max_memory_allocated`` on CUDA, the peak RSS (``getrusage``) on CPU, both also given
above the memory held right after the inputs were built. Before timing, a check subprocess compares every fused
variant with the reference on a slice of the rows and aborts on a mismatch.

    python benchmarks/loss_head_bench.py                      # 16,384 tokens × 896 × 151,936 (Qwen2.5-0.5B head)
    python benchmarks/loss_head_bench.py --shape llama8b      # hidden 4096 × vocab 128,256
    python benchmarks/loss_head_bench.py --device cpu --small # 4096 tokens × 256 × 32,000 on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from divalign.heads.chunked import chunked_head_loss
from divalign.heads.losses import IGNORE_INDEX, LossSpec
from divalign.heads.torch_tiles import fused_head_loss

SHAPES = {"qwen0.5b": (16_384, 896, 151_936), "llama8b": (16_384, 4096, 128_256), "small": (4096, 256, 32_000)}
LOSSES = {
    "ce": LossSpec("ce"),
    "tofu": LossSpec("tofu", beta=0.8, gamma=3.0),
    "gem-linear": LossSpec("gem", beta=0.7, h="linear"),
    "gem-logsigmoid": LossSpec("gem", beta=0.7, h="logsigmoid"),
}
VARIANTS = ["matmuls", "full-ce", *(f"reference-{k}" for k in LOSSES), *(f"fused-{k}" for k in LOSSES)]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen0.5b")
    parser.add_argument("--small", action="store_true", help="the CPU smoke shape (4096 × 256 × 32,000)")
    parser.add_argument("--tokens", type=int, help="override the shape's token count")
    parser.add_argument("--hidden", type=int, help="override the shape's hidden size")
    parser.add_argument("--vocab", type=int, help="override the shape's vocabulary size")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--repeats", type=int, help="timed repetitions (default 10 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--triton", action="store_true", help="also time the opt-in Triton fused head (CUDA)")
    parser.add_argument("--check-rows", type=int, default=1024, help="rows compared fused vs reference")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tokens, hidden, vocab = SHAPES["small" if args.small else args.shape]
    args.tokens, args.hidden, args.vocab = args.tokens or tokens, args.hidden or hidden, args.vocab or vocab
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.repeats = args.repeats or (10 if args.device.startswith("cuda") else 3)
    if args.triton:
        args.variants = [*args.variants, *(f"triton-{k}" for k in LOSSES)]
    return args


def make_inputs(args: argparse.Namespace, rows: int | None = None):
    gen = torch.Generator().manual_seed(0)
    n = rows or args.tokens
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    hidden = torch.randn(n, args.hidden, generator=gen).to(device, dtype).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=gen) / args.hidden**0.5).to(device, dtype)
    labels = torch.randint(0, args.vocab, (n,), generator=gen).to(device)
    labels[::16] = IGNORE_INDEX  # a few prompt/padding rows, as in SFT batches
    return hidden, weight.requires_grad_(), labels


def head_fn(variant: str) -> Callable:
    """``fn(hidden, weight, labels) -> scalar loss`` for one variant."""
    if variant == "full-ce":
        return lambda h, w, y: F.cross_entropy(F.linear(h, w).float(), y, ignore_index=IGNORE_INDEX)
    kind, _, loss = variant.partition("-")
    spec = LOSSES[loss]
    if kind == "reference":
        return lambda h, w, y: chunked_head_loss(h, w, None, y, spec).loss.sum() / (y != IGNORE_INDEX).sum()
    if kind == "triton":
        from divalign.heads.triton_tiles import triton_head_loss

        return lambda h, w, y: triton_head_loss(h, w, None, y, spec).loss.sum() / (y != IGNORE_INDEX).sum()
    return lambda h, w, y: fused_head_loss(h, w, None, y, spec).loss.sum() / (y != IGNORE_INDEX).sum()


def step_fn(variant: str, hidden: torch.Tensor, weight: torch.Tensor) -> Callable:
    """``step(hidden, weight, labels)``: one forward+backward of the variant."""
    if variant == "matmuls":
        # The bare head: h @ W.T, then its two backward matmuls against a gradient built once outside the timing
        upstream = torch.randn(hidden.shape[0], weight.shape[0], device=hidden.device, dtype=hidden.dtype)
        return lambda h, w, y: torch.autograd.backward(F.linear(h, w), upstream)
    fn = head_fn(variant)
    return lambda h, w, y: fn(h, w, y).backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_variant(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    hidden, weight, labels = make_inputs(args)
    step_once = step_fn(args.worker, hidden, weight)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = _rss_mib()
    times = []
    for step in range(args.warmup + args.repeats):
        hidden.grad = weight.grad = None
        _sync(device)
        start = time.perf_counter()
        step_once(hidden, weight, labels)
        _sync(device)
        if step >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": args.worker, "ms": sorted(times)[len(times) // 2], "peak_mib": peak, "extra_mib": peak - base}


def run_check(args: argparse.Namespace) -> dict:
    """Fused vs reference loss and gradients on ``--check-rows`` rows of the benchmark's inputs."""
    report = {}
    hidden, weight, labels = make_inputs(args, rows=min(args.check_rows, args.tokens))
    kinds = sorted({v.partition("-")[0] for v in args.variants} & {"fused", "triton"})
    for loss in LOSSES:
        results = {}
        for kind in ["reference", *kinds]:
            out = head_fn(f"{kind}-{loss}")(hidden, weight, labels)
            results[kind] = (out.detach(), *torch.autograd.grad(out, (hidden, weight)))
        for kind in kinds:
            pairs = zip(results[kind], results["reference"], strict=True)
            diffs = [(a.float() - b.float()).abs().max().item() for a, b in pairs]
            scale = [b.float().abs().max().item() for b in results["reference"]]
            tol = 2e-2 if args.dtype == "bf16" else 1e-3
            ok = all(d <= tol * max(s, 1e-3) + 1e-6 for d, s in zip(diffs, scale, strict=True))
            report[f"{kind}-{loss}"] = {"max_abs_diff[loss,grad_h,grad_w]": diffs, "ok": ok}
    return report


def _spawn(args: argparse.Namespace, worker: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", worker]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{worker} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _describe_device(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def print_table(args: argparse.Namespace, results: list[dict]) -> None:
    by_name = {r["variant"]: r for r in results}
    base = by_name.get("matmuls")
    print(f"\n{'variant':<24}{'ms':>10}{'peak MiB':>12}{'extra MiB':>12}{'/matmuls':>10}")
    for r in results:
        ratio = r["ms"] / base["ms"] if base else float("nan")
        print(f"{r['variant']:<24}{r['ms']:>10.1f}{r['peak_mib']:>12.0f}{r['extra_mib']:>12.0f}{ratio:>10.2f}")
    print()
    for loss in LOSSES:
        for kind in ("fused", "triton"):
            fused, ref = by_name.get(f"{kind}-{loss}"), by_name.get(f"reference-{loss}")
            if fused and base:
                line = f"{kind}/matmuls {loss}: {fused['ms'] / base['ms']:.2f}x time (target <= 2x)"
                if ref:
                    line += f"; {kind}/reference: {fused['ms'] / ref['ms']:.2f}x time"
                    line += f", {fused['extra_mib'] / max(ref['extra_mib'], 1e-9):.2f}x extra memory"
                print(line)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.worker == "check":
        print(json.dumps(run_check(args)))
        return
    if args.worker:
        print(json.dumps(run_variant(args)))
        return
    print(f"device: {_describe_device(args.device)}; torch {torch.__version__}; {args.dtype}")
    print(f"shape: {args.tokens} tokens x hidden {args.hidden} x vocab {args.vocab}; median of {args.repeats}")
    check = _spawn(args, "check", argv)
    for name, entry in check.items():
        print(f"check {name}: {'ok' if entry['ok'] else 'MISMATCH'} {entry['max_abs_diff[loss,grad_h,grad_w]']}")
    if not all(entry["ok"] for entry in check.values()):
        sys.exit("fused head disagrees with the reference: not timing it")
    results = []
    for variant in args.variants:
        results.append(_spawn(args, variant, argv))
        print(json.dumps(results[-1]), flush=True)
    print_table(args, results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": _describe_device(args.device), "args": vars(args), "results": results}, out, indent=1)


if __name__ == "__main__":
    main()
