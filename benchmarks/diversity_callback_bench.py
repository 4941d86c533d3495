"""Overhead of the training-time diversity callback at its default cadence.

On the step benchmark's model (Qwen2.5-0.5B shape, random weights; ``--small`` for a tiny CPU model) it measures the
median TOFU training step and the wall time of one callback evaluation with the default settings (32 prompts × 8
samples × 128 new tokens, the default training metrics including SBERT/Vendi with all-MiniLM-L6-v2), then reports

    overhead = evaluation time / (every_steps × step time)

the fraction of training wall time the callback adds at ``every_steps`` (default 100). Target: ≤ 5 %.

``--toy`` measures the cost of the diversity block's ``quality`` instead, on a toy recipe (``recipes/toy/tofu_sft.yaml``:
its diversity block as shipped, 20 probe prompts × 16 samples × 6 new tokens, ``quality: toy_validity``) with a
briefly pretrained toy base model: on the same samples, the median time of their scoring without the quality (the
metrics) and with it (validity, pass@k, correct-only diversity, the split against step 0), next to the median time
of the sampling, of a whole evaluation and of a TOFU training step.

    python benchmarks/diversity_callback_bench.py                 # GPU
    python benchmarks/diversity_callback_bench.py --device cpu --small
    python benchmarks/diversity_callback_bench.py --toy            # CPU: the quality's cost on the toy recipe
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
    parser.add_argument("--toy", action="store_true", help="the quality's cost on the toy recipe (CPU)")
    parser.add_argument("--recipe", default="recipes/toy/tofu_sft.yaml", help="--toy: the toy recipe")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="--toy: base-model pretraining steps")
    parser.add_argument("--repeats", type=int, default=5, help="--toy: timed evaluations per variant")
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


def start_callback(callback, trainer) -> None:
    """The callback's start as at step 0 (probes, embedder, quality loaded; the step-0 evaluation, the reference of
    the later ones), on a trainer that has already trained: later evaluations are then timed at the trained step."""
    step, trainer.state.global_step = trainer.state.global_step, 0
    try:
        callback.on_train_begin(trainer.args, trainer.state, trainer.control)
    finally:
        trainer.state.global_step = step


def diversity_config(args: argparse.Namespace, prompts: Path):
    from divalign.callback import DiversityConfig

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
    from divalign.callback import DiversityCallback

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
        start_callback(callback, trainer)
        start = time.perf_counter()
        callback._evaluate(trainer.args, trainer.state, trainer.control)
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


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _toy_trainer(args: argparse.Namespace, root: Path, recipe: dict):
    """A TOFU trainer with the toy recipe's settings on a freshly built toy world and base model."""
    import datasets
    from transformers import AutoTokenizer, PrinterCallback

    from divalign import TOFUConfig, TOFUTrainer
    from divalign.toyworld.pretrain import PretrainConfig, pretrain
    from divalign.toyworld.world import ToyWorld, WorldConfig

    world = ToyWorld(WorldConfig())
    world.write(root / "world")
    pretrain(world, root / "base_model", PretrainConfig(steps=args.pretrain_steps))
    keys = (
        "tofu_gamma",
        "tofu_beta",
        "max_length",
        "completion_only_loss",
        "learning_rate",
        "per_device_train_batch_size",
    )
    config = TOFUConfig(
        output_dir=str(root / "out"), max_steps=args.steps + args.warmup, use_cpu=True, bf16=False, seed=0,
        logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=True,
        **{key: recipe[key] for key in keys},
    )  # fmt: skip
    trainer = TOFUTrainer(
        model=str(root / "base_model"),
        args=config,
        train_dataset=datasets.load_dataset("json", data_files=str(root / "world" / "sft.jsonl"), split="train"),
        processing_class=AutoTokenizer.from_pretrained(root / "base_model"),
    )
    trainer.remove_callback(PrinterCallback)  # every evaluation's keys would be printed
    return trainer


def _time_toy(trainer, config, repeats: int) -> dict[str, float]:
    """Median seconds, over ``repeats`` rounds after the step-0 evaluation, of: the sampling; the scoring of those
    samples without the quality (the metrics) and with it (the reward's call, verdicts, pass@k, correct-only metrics,
    the split against step 0), interleaved on the same samples so that the load of a shared CPU hits both alike; and
    the whole evaluation as the callback runs it (sampling, scoring, logging)."""
    from divalign.callback import DiversityCallback
    from divalign.callback.probe_scores import against_reference, score_probe

    callback = DiversityCallback(config, trainer=trainer)
    start_callback(callback, trainer)
    scoring = {"vocab_size": len(trainer.processing_class), "profile": config.profile}
    times: dict[str, list[float]] = {"sample_s": [], "score_s": [], "score_quality_s": [], "eval_quality_s": []}
    for _ in range(repeats):
        tick = time.perf_counter()
        groups, token_ids = callback._sample()
        times["sample_s"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        score_probe(groups, token_ids, config.metrics, **scoring)
        times["score_s"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        quality = callback._quality.score(callback._prompts, groups, token_ids, callback._columns)
        probe = score_probe(groups, token_ids, config.metrics, quality, callback._quality.verdicts(quality), **scoring)
        against_reference(probe, callback.record.reference)
        times["score_quality_s"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        callback._evaluate(trainer.args, trainer.state, trainer.control)
        times["eval_quality_s"].append(time.perf_counter() - tick)
    return {name: _median(values) for name, values in times.items()}


def toy_main(args: argparse.Namespace) -> dict:
    """The quality's cost on the toy recipe: scoring with and without `quality` next to the sampling."""
    import platform

    import yaml

    from divalign.callback import DiversityConfig

    torch.set_num_threads(1)  # the demo's setting: tiny matrices, a shared CPU
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trainer = _toy_trainer(args, root, recipe)
        timer = step_timer("cpu")
        trainer.add_callback(timer)
        trainer.train()
        step_s = _median(timer.times[args.warmup :])
        config = DiversityConfig.from_dict(
            {**recipe["diversity"], "prompts": str(root / "world" / "prompts_probe.jsonl")}
        )
        times = _time_toy(trainer, config, args.repeats)
    result = {
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread)",
        "recipe": args.recipe,
        "quality": config.quality,
        "prompts_x_samples_x_tokens": [config.num_prompts, config.samples_per_prompt, config.max_new_tokens],
        "metrics": config.metrics,
        "repeats": args.repeats,
        "step_s": step_s,
        **times,
        "quality_s": times["score_quality_s"] - times["score_s"],
        "quality_over_sampling": (times["score_quality_s"] - times["score_s"]) / times["sample_s"],
    }
    print(json.dumps(result))
    print(
        f"sampling {times['sample_s'] * 1e3:.1f} ms; scoring without quality {times['score_s'] * 1e3:.1f} ms, with "
        f"{times['score_quality_s'] * 1e3:.1f} ms: the quality adds {result['quality_s'] * 1e3:.1f} ms = "
        f"{100 * result['quality_over_sampling']:.1f} % of the sampling time; whole evaluation with quality "
        f"{times['eval_quality_s'] * 1e3:.1f} ms; a training step {step_s * 1e3:.1f} ms"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if parse_args().toy:
        toy_main(parse_args())
    else:
        main()
