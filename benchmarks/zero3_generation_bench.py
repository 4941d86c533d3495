"""Time of one diversity-callback evaluation under DeepSpeed ZeRO-3: weights gathered once per evaluation (the
default, `ds3_gather_for_generation: true`) vs lock-step generation over sharded weights (`false`, `synced_gpus`:
every layer all-gathered at every decoded token).

Each mode is a real training run (`SFTTrainer` + `DiversityCallback`, `accelerate launch` with ZeRO-3 over
`--processes` processes) evaluating at every step; the time of each evaluation's sampling (`DiversityCallback._sample`:
gather or not, generate, gather the texts) is recorded on every rank, and the report gives the median over the
evaluations after the first (warm-up), slowest rank. Both modes must sample the same completions (checked).

    python benchmarks/zero3_generation_bench.py                     # CPU: 2 gloo processes
    python benchmarks/zero3_generation_bench.py --device cuda       # GPUs: NCCL, one process per GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--evaluations", type=int, default=4, help="timed evaluations per mode (plus one warm-up)")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--worker", choices=("gathered", "lockstep"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----- launcher -----
def write_assets(args: argparse.Namespace, workdir: Path) -> None:
    """A random Llama of the requested shape with a word-level tokenizer, probe prompts and SFT rows."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [f"t{i}" for i in range(len(specials), args.vocab)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} </s> {% endfor %}"
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")

    def words(i: int, n: int) -> str:
        return " ".join(f"t{4 + (i * 7 + j) % (args.vocab - 4)}" for j in range(n))

    probes = [{"prompt": words(i, 12)} for i in range(args.prompts)]
    rows = [
        {
            "prompt": [{"role": "user", "content": words(i, 12)}],
            "completion": [{"role": "assistant", "content": words(i + 1, 8)}],
        }
        for i in range(64)
    ]
    (workdir / "probe.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
    (workdir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def accelerate_config(args: argparse.Namespace, workdir: Path) -> Path:
    ds = workdir / "ds_zero3.json"
    auto = {
        key: "auto" for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")
    }
    config = {
        # every parameter partitioned, as in a large model (DeepSpeed keeps small ones whole by default)
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
        **auto,
        "bf16": {"enabled": "auto"},
        "zero_force_ds_cpu_optimizer": False,
    }
    ds.write_text(json.dumps(config))
    path = workdir / "accelerate_zero3.yaml"
    path.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
        f"  deepspeed_config_file: {ds}\n  zero3_init_flag: true\nnum_machines: 1\nmachine_rank: 0\n"
        f"num_processes: {args.processes}\n"
    )
    return path


def run_mode(args: argparse.Namespace, workdir: Path, mode: str) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    if args.device == "cpu":
        env.update(DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config(args, workdir)),
    ]
    command = [*launch, str(BENCH), "--worker", mode, "--workdir", str(workdir), *_forwarded(args)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads((workdir / f"{mode}.json").read_text())


def _forwarded(args: argparse.Namespace) -> list[str]:
    keys = ("device", "processes", "prompts", "samples", "new_tokens", "evaluations")
    return [item for key in keys for item in (f"--{key.replace('_', '-')}", str(getattr(args, key)))]


def launcher(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="zero3_generation_bench_") as tmp:
        workdir = Path(tmp)
        write_assets(args, workdir)
        results = {mode: run_mode(args, workdir, mode) for mode in ("gathered", "lockstep")}
    same = results["gathered"]["samples"] == results["lockstep"]["samples"]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "device": args.device,
        "processes": args.processes,
        "shape": {"layers": args.layers, "hidden": args.hidden, "vocab": args.vocab},
        "evaluation": {"prompts": args.prompts, "samples": args.samples, "new_tokens": args.new_tokens},
        "seconds_per_evaluation": {mode: r["median_s"] for mode, r in results.items()},
        "all_seconds": {mode: r["seconds"] for mode, r in results.items()},
        "lockstep_over_gathered": results["lockstep"]["median_s"] / results["gathered"]["median_s"],
        "same_samples": same,
    }
    print(json.dumps(summary, indent=1))
    print("\n| mode | s / evaluation (median, slowest rank) |\n|---|---|")
    for mode, seconds in summary["seconds_per_evaluation"].items():
        print(f"| {mode} | {seconds:.2f} |")
    print(f"\nlock-step / gathered: {summary['lockstep_over_gathered']:.1f}x; same samples: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if not same:
        raise SystemExit("the two modes sampled different completions")


# ----- worker (one process of the accelerate launch) -----
def worker(args: argparse.Namespace) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from divalign.callback import DiversityCallback, DiversityConfig

    workdir = Path(args.workdir)
    # the config first: under ZeRO-3 it sets up the process group that partitioning the model at load needs
    training = SFTConfig(
        output_dir=str(workdir / f"out_{args.worker}"),
        max_steps=args.evaluations,
        per_device_train_batch_size=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=args.device == "cuda",
        ddp_backend="gloo" if args.device == "cpu" else None,
        seed=0,
        disable_tqdm=True,
    )
    config = DiversityConfig(
        prompts=str(workdir / "probe.jsonl"),
        num_prompts=args.prompts,
        samples_per_prompt=args.samples,
        max_new_tokens=args.new_tokens,
        every_steps=1,
        batch_size=-(-args.prompts // args.processes),  # one generate batch per rank
        table_every_steps=0,
        metrics=["distinct_1", "distinct_2"],
        embedding_model=None,
        ds3_gather_for_generation=args.worker == "gathered",
    )
    callback = DiversityCallback(config)
    rows = [json.loads(line) for line in (workdir / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list(rows)
    trainer = SFTTrainer(model=str(workdir / "model"), args=training, train_dataset=dataset, callbacks=[callback])
    callback.bind(trainer)
    seconds: list[float] = []
    sample = callback._sample

    def timed():
        trainer.accelerator.wait_for_everyone()
        start = time.perf_counter()
        out = sample()
        trainer.accelerator.wait_for_everyone()
        seconds.append(time.perf_counter() - start)
        return out

    callback._sample = timed
    trainer.train()
    if trainer.accelerator.is_main_process:  # the barriers around each timing make it the slowest rank's
        report = {
            "seconds": seconds,
            "median_s": statistics.median(seconds[1:]),
            "samples": callback.last_samples["token_ids"],
        }
        (workdir / f"{args.worker}.json").write_text(json.dumps(report))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
    else:
        launcher(args)


if __name__ == "__main__":
    main()
