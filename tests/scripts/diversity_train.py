"""Train the tiny policy with SFTTrainer + DiversityCallback; launched by tests/test_diversity_callback.py, alone or
under `accelerate launch` (DDP or DeepSpeed ZeRO-3 on CPU/gloo). Writes OUTPUT_DIR/diversity_report.json (log_history,
world size, ZeRO stage, the samples of every evaluation) and, per rank, OUTPUT_DIR/generate_calls_rank<R>.json (the
`synced_gpus` flag of each `generate` call that rank made) and OUTPUT_DIR/state_rank<R>.json (that rank's diversity
log entries, its step and the callback's trainer-state record).

The diversity block has a quality (a verifier: a one-check `format` reward, "the sample names one of these words"),
so every evaluation also logs quality, correct-only diversity, retained ratios and the split against step 0.

Usage: python diversity_train.py MODEL_DIR PROBE_FILE OUTPUT_DIR [--max-steps N] [--every-steps N] [--use-cpu]
       [--lockstep] [--batch-size N] [--progress] [--stop-below JSON]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

from datasets import Dataset
from transformers import LlamaForCausalLM, TrainerCallback
from trl import SFTConfig, SFTTrainer

sys.path.insert(0, str(Path(__file__).parent))
from diversity_tiny import train_records

from divalign.callback import DiversityCallback, DiversityConfig

QUALITY_WORDS = r"\b(the|a|cat|dog|sat|ran|on|mat|tree|bird)\b"
GENERATE_CALLS: list[bool] = []
_generate = LlamaForCausalLM.generate


def _recording_generate(self, *args, **kwargs):
    GENERATE_CALLS.append(bool(kwargs.get("synced_gpus", False)))
    return _generate(self, *args, **kwargs)


LlamaForCausalLM.generate = _recording_generate


class RecordEvaluations(TrainerCallback):
    """Keep the samples of every evaluation (the DiversityCallback keeps only the latest); runs after it."""

    def __init__(self, diversity: DiversityCallback) -> None:
        self.diversity = diversity
        self.evaluations: dict[int, dict] = {}

    def _record(self) -> None:
        last = self.diversity.last_samples
        if last is not None:
            self.evaluations[last["step"]] = {"samples": last["samples"], "token_ids": last["token_ids"]}

    def on_train_begin(self, args, state, control, **kwargs):
        self._record()

    def on_step_end(self, args, state, control, **kwargs):
        self._record()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("probe_file")
    parser.add_argument("output_dir")
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--every-steps", type=int, default=2)
    parser.add_argument("--use-cpu", action="store_true", help="DDP on CPU under torchrun (not with DeepSpeed)")
    parser.add_argument("--lockstep", action="store_true", help="ZeRO-3: ds3_gather_for_generation false")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts per generate call")
    parser.add_argument("--progress", action="store_true", help="tqdm bars on (disable_tqdm false)")
    parser.add_argument("--stop-below", type=json.loads, default={}, help="diversity.stop_below, as JSON")
    cli = parser.parse_args()

    # The SFTConfig comes first: under ZeRO-3 it sets up the process group and the DeepSpeed config that
    # `from_pretrained` (called inside SFTTrainer) needs to partition the model at load.
    args = SFTConfig(
        output_dir=cli.output_dir,
        max_steps=cli.max_steps,
        per_device_train_batch_size=2,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,  # CPU
        use_cpu=cli.use_cpu,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,  # CPU processes: NCCL is unavailable
        seed=0,
        disable_tqdm=not cli.progress,
    )
    config = DiversityConfig(
        prompts=cli.probe_file,
        every_steps=cli.every_steps,
        samples_per_prompt=3,
        max_new_tokens=6,
        batch_size=cli.batch_size,  # 1: ranks with 2 and 1 prompts make different numbers of generate calls
        table_every_steps=0,
        metrics=["distinct_1", "distinct_2", "ead", "exact_dup_rate", "sbert"],
        embedding_model="all-MiniLM-L6-v2",
        ds3_gather_for_generation=not cli.lockstep,
        quality={"format": {"boxed": False, "pattern": QUALITY_WORDS}},
        stop_below=cli.stop_below,
    )
    callback = DiversityCallback(config)
    recorder = RecordEvaluations(callback)
    trainer = SFTTrainer(
        model=cli.model_dir,
        args=args,
        train_dataset=Dataset.from_list(train_records(16)),
        callbacks=[callback, recorder],
    )
    callback.bind(trainer)
    trainer.train()
    rank = trainer.accelerator.process_index
    (Path(cli.output_dir) / f"generate_calls_rank{rank}.json").write_text(json.dumps(GENERATE_CALLS))
    own = {
        "global_step": trainer.state.global_step,
        "diversity": [e for e in trainer.state.log_history if any(k.startswith("diversity/") for k in e)],
        "record": trainer.state.stateful_callbacks.get("divalign_diversity"),
    }
    (Path(cli.output_dir) / f"state_rank{rank}.json").write_text(json.dumps(own))
    if trainer.accelerator.is_main_process:
        plugin = trainer.accelerator.state.deepspeed_plugin
        report = {
            "log_history": trainer.state.log_history,
            "num_processes": trainer.accelerator.num_processes,
            "zero_stage": plugin.zero_stage if plugin is not None else None,
            "last_prompts": callback.last_samples["prompts"],
            "last_samples": callback.last_samples["samples"],
            "evaluations": recorder.evaluations,
        }
        (Path(cli.output_dir) / "diversity_report.json").write_text(json.dumps(report))
    # As `divalign train` does: a gloo group left to the interpreter's exit can abort a rank after a finished run
    trainer.end()


if __name__ == "__main__":
    main()
    gc.collect()  # as `divalign train` does: the trainer's cycles would keep the DDP model to the interpreter's exit
