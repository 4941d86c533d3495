"""Diversity curves while training: a [`~transformers.TrainerCallback`] that samples a fixed probe set and logs
`diversity/*` metrics through `trainer.log`, so W&B (in a `diversity` section: `divalign.dashboards`), TensorBoard,
... and `trainer_state.json` all receive them.

Usage:
```python
>>> config = DiversityConfig(prompts="probe.jsonl", every_steps=100)
>>> trainer = SFTTrainer(model=..., args=..., train_dataset=...)
>>> trainer.add_callback(DiversityCallback(config, trainer=trainer))
>>> trainer.train()  # logs diversity/* at step 0 (the base model), then every 100 steps
```

The callback can also be created before the trainer (`callbacks=[cb]`) and bound afterwards with `cb.bind(trainer)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..compat import trainer_metrics_hidden, zero3_generation_state
from ..dashboards import SamplesLog, install_dashboards, send_alert
from ..diversity import REGISTRY
from ..diversity.embedding import CachedEmbedder
from ..diversity.profile import load_profile_embedder, record_profile
from ..generation import (
    Prompt,
    SamplingProgress,
    decode_group,
    encode_prompt,
    pad_token_id,
    render_prompt,
    sample_completions,
    stop_token_ids,
    uses_chat_template,
)
from ..prompts import PromptRecord
from ..zero3 import whole_model_loading
from .config import DiversityConfig
from .probe_scores import against_reference, score_probe
from .probes import load_probe_records
from .state import Crossing, Reference, TrackingRecord, crossings, inactive_thresholds, read_record, write_record


@contextlib.contextmanager
def preserve_rng_state() -> Iterator[None]:
    """Restore the python, numpy, torch CPU and CUDA RNG states on exit, so an evaluation leaves training unchanged
    (the sampling noise comes from its own seeded generators; this guards anything else that draws)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@contextlib.contextmanager
def _keep_log_request(trainer: Any) -> Iterator[None]:
    """Keep `control.should_log` across our `log` call: the callback handler clears it on every `on_log`, so logging
    from `on_step_end` would otherwise swallow the training-loss entry due at this step."""
    should_log = trainer.control.should_log
    try:
        yield
    finally:
        trainer.control.should_log = should_log


# ---------------------------------------------------------------------------------------------------------------
# The callback


class DiversityCallback(TrainerCallback):
    """Sample a fixed probe set and log `diversity/*` metrics at step 0 and every `config.every_steps` steps.

    Works with any `Trainer` (TRL's SFT/DPO/GRPO trainers and divalign's subclasses), single process, DDP and DeepSpeed
    ZeRO-3 (FSDP is treated like lock-step ZeRO-3 but untested). Sampling goes through `divalign.generation`: neutral
    settings, and noise keyed by (seed, prompt index, sample index, max_new_tokens), so the samples are the same on 1
    or N processes.
    The prompts' `generate` batches are fixed by `batch_size` and dealt round-robin over the ranks. Under ZeRO-3 the
    weights are gathered once per evaluation (`ds3_gather_for_generation`, TRL's `unwrap_model_for_generation`);
    without gathering, ranks generate in lock-step (`synced_gpus`) and a rank short of batches runs dummy ones, since
    an uneven number of `generate` calls would hang. Texts and token ids are gathered to the main process
    (`gather_object`: variable-length shares, nothing dropped), which alone scores them (the metrics, and the
    `quality` with its correct-only diversity: `divalign.callback.probe_scores`) and decides on the alert and stop
    thresholds; every rank then logs the same keys and takes the same decision, so their `log_history` agree and they
    stop at the same step. The evaluation runs inside a saved/restored RNG state, so the training trajectory is the
    same with or without the callback. On resume, the checkpoint's step is not evaluated again, and the step-0
    reference (`divalign.callback.state`, kept in the trainer state) comes back from the checkpoint.
    While it samples, the main process shows one tqdm bar (its share's tokens at every decoding step, tokens/s, time
    left, samples done), unless the run sets `disable_tqdm`.

    Args:
        config: evaluation settings.
        trainer: the trainer to log through; or call `bind(trainer)` before training.
        probes: the probe records, when already read (`divalign.callback.probes.load_probe_records`, as `divalign
            train` reads them before the model loads); by default read when training begins.
    """

    def __init__(
        self, config: DiversityConfig, trainer: Any | None = None, probes: list[PromptRecord] | None = None
    ) -> None:
        self.config = config
        self.trainer = trainer
        self._probes = probes
        self._prompts: list[Prompt] = []
        self._columns: list[dict[str, Any]] = []
        self._prompt_ids: list[list[int]] = []
        self._prompt_texts: list[str] = []
        self._embedder: Any = None
        self._quality: Any = None
        self._last_step = -1
        self._samples_log: SamplesLog | None = None
        # The step-0 reference, the alerts sent and the stop; kept in the trainer state (checkpoints, resume).
        self.record = TrackingRecord()
        # The latest evaluation's rendered prompts, samples and token ids, on the main process (inspection, tests).
        self.last_samples: dict[str, Any] | None = None
        if trainer is not None:
            self.bind(trainer)

    def bind(self, trainer: Any) -> DiversityCallback:
        """Attach the trainer whose `log`, accelerator and model the callback uses; returns `self`. A W&B run gets the
        `diversity` section, its loss keys and the samples table (`divalign.dashboards`)."""
        self.trainer = trainer
        install_dashboards(trainer)
        return self

    # -- events ---------------------------------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Load the probe prompts, the quality and the embedder (failing before step 1), then evaluate the starting
        model; a resumed run takes its step-0 reference back from the checkpoint's trainer state."""
        if self.trainer is None:
            raise RuntimeError("DiversityCallback is not bound to a trainer: pass trainer=... or call bind(trainer)")
        tokenizer = self._tokenizer()
        if self._probes is None:
            self._probes = load_probe_records(self.config)
        records = self._probes
        self._prompts, self._columns = [r.prompt for r in records], [r.columns for r in records]
        self._prompt_texts = [render_prompt(p, tokenizer) for p in self._prompts]
        self._prompt_ids = [encode_prompt(p, tokenizer) for p in self._prompts]
        needs_embedder = any("embedder" in REGISTRY[name].needs for name in self.config.metrics)
        if needs_embedder and _topology(self.trainer.accelerator)[2]:
            with whole_model_loading():
                self._embedder = load_profile_embedder(self.config.profile, self.config.embedding_model, "diversity.")
        self._quality = self.config.parsed_quality
        if self._quality is not None and _topology(self.trainer.accelerator)[2]:
            self._quality.load()  # the main process scores: a bad checkpoint fails before step 0
        record_profile(args, self.config.profile)
        self._last_step = state.global_step  # on resume, the checkpoint's step was evaluated by the first run
        self.record = read_record(state) if state.global_step > 0 else TrackingRecord()
        if state.global_step == 0:
            self._evaluate(args, state, control)
        elif self.record.reference is None and _topology(self.trainer.accelerator)[2]:
            print(
                f"divalign: the checkpoint of step {state.global_step} holds no step-0 diversity reference (a run of an "
                "older divalign): diversity/retained/*, the quality split and the alert/stop thresholds are off"
            )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Evaluate on the cadence (and at the last step when `evaluate_last_step`)."""
        step = state.global_step
        last = self.config.evaluate_last_step and state.max_steps > 0 and step == state.max_steps
        if step != self._last_step and (step % self.config.every_steps == 0 or last):
            self._evaluate(args, state, control)

    # -- evaluation -----------------------------------------------------------------------------------------------

    def _tokenizer(self) -> Any:
        """The policy tokenizer (a processor's inner tokenizer for multimodal policies)."""
        processing_class = getattr(self.trainer, "processing_class", None)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is None:
            raise ValueError("DiversityCallback needs the trainer's processing_class (the policy tokenizer)")
        return tokenizer

    def _evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> None:
        """Sample, gather, score and decide on the main process, then log and act on every rank."""
        self._last_step = state.global_step
        # one bar, on the main process, unless the run turned tqdm off (`disable_tqdm`)
        show = _topology(self.trainer.accelerator)[2] and not args.disable_tqdm
        groups, token_ids = self._sample(
            SamplingProgress(f"diversity eval, step {state.global_step}", leave=False) if show else None
        )
        outcome: dict[str, Any] | None = None
        if _topology(self.trainer.accelerator)[2]:
            self.last_samples = {
                "step": state.global_step,
                "prompts": self._prompt_texts,
                "samples": groups,
                "token_ids": token_ids,
            }
            outcome = self._score(state.global_step, groups, token_ids)
            self._log_samples(args, state.global_step, self._prompt_texts, groups)
        (outcome,) = broadcast_object_list([outcome])
        if _topology(self.trainer.accelerator)[2]:
            for note in outcome["notes"]:
                print(f"divalign: {note}", flush=True)
        self.record = TrackingRecord.from_json(outcome["record"])
        write_record(state, self.record)
        with trainer_metrics_hidden(self.trainer), _keep_log_request(self.trainer):
            self.trainer.log({f"diversity/{key}": float(value) for key, value in outcome["logs"].items()})
        self._act(args, [Crossing(**c) for c in outcome["crossings"]], control)

    def _score(self, step: int, groups: list[list[str]], token_ids: list[list[list[int]]]) -> dict[str, Any]:
        """On the main process: the keys to log, the updated record and the thresholds crossed for the first time."""
        quality = correct = None
        if self._quality is not None:
            chat = uses_chat_template(self._tokenizer())
            quality = self._quality.score(self._prompts, groups, token_ids, self._columns, chat=chat)
            correct = self._quality.verdicts(quality)
        embedder = None if self._embedder is None else CachedEmbedder(self._embedder)  # correct-only: no re-encoding
        probe = score_probe(
            groups, token_ids, self.config.metrics, quality, correct,
            vocab_size=len(self._tokenizer()), embedder=embedder, profile=self.config.profile,
        )  # fmt: skip
        record = TrackingRecord.from_json(self.record.to_json())
        notes: list[str] = []
        if record.reference is None and step == 0:
            record.reference = Reference(step, probe.means, probe.per_prompt)
            thresholds = {"alert": self.config.alert_below, "stop": self.config.stop_below}
            notes = inactive_thresholds(record.reference, thresholds)
        logs = dict(probe.logs)
        crossed: list[Crossing] = []
        if record.reference is not None:
            logs.update(against_reference(probe, record.reference))
            crossed = self._crossings(record, logs, step)
        crossed_json = [dataclasses.asdict(c) for c in crossed]
        return {"logs": logs, "record": record.to_json(), "crossings": crossed_json, "notes": notes}

    def _crossings(self, record: TrackingRecord, logs: dict[str, float], step: int) -> list[Crossing]:
        """Alerts not sent before and the first stop threshold crossed, recorded in ``record``."""
        if step == record.reference.step:
            return []
        retained = {key.split("/", 1)[1]: value for key, value in logs.items() if key.startswith("retained/")}
        alerts = [
            c for c in crossings("alert", self.config.alert_below, retained, step) if c.metric not in record.alerted
        ]
        record.alerted += [c.metric for c in alerts]
        stops = crossings("stop", self.config.stop_below, retained, step)[:1]
        for crossing in stops:
            record.stop_with(crossing)
        return alerts + stops

    def _act(self, args: TrainingArguments, crossed: list[Crossing], control: TrainerControl) -> None:
        """Say what was crossed (a printed line, a W&B alert) and, for a stop, end training at this step with a
        checkpoint: every rank sets the same flags, from the same broadcast decision."""
        main = _topology(self.trainer.accelerator)[2]
        for crossing in crossed:
            if crossing.kind == "stop":
                control.should_training_stop = True
                control.should_save = True
            if main:
                saved = " A checkpoint of this step is saved." if crossing.kind == "stop" else ""
                print(f"divalign: diversity {crossing.kind}: {crossing.message()}.{saved}", flush=True)
                title = "divalign: training stopped" if crossing.kind == "stop" else "divalign: diversity alert"
                send_alert(args, title, crossing.message(), error=crossing.kind == "stop")

    def _sample(self, progress: SamplingProgress | None) -> tuple[list[list[str]], list[list[list[int]]]]:
        """K completions of every probe prompt, gathered to all ranks in prompt order: texts and token ids; with
        `progress`, a bar over this rank's share."""
        trainer = self.trainer
        accelerator = trainer.accelerator
        rank, world, _ = _topology(accelerator)
        lockstep = world > 1 and _needs_lockstep(trainer, self.config.ds3_gather_for_generation)
        tokenizer = self._tokenizer()
        with (
            _generation_model(trainer, gather=self.config.ds3_gather_for_generation) as model,
            preserve_rng_state(),
            torch.no_grad(),
            accelerator.autocast(),
        ):
            stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
            pad_id = pad_token_id(tokenizer, stop_ids)
            settings = self.config.sampling
            local = sample_completions(
                model,
                self._prompt_ids,
                settings,
                stop_ids,
                pad_id,
                rank=rank,
                world=world,
                lockstep=lockstep,
                progress=progress,
            )
        rows = [(i, decode_group(tokenizer, group), group) for i, group in local.items()]
        # gather_object concatenates each rank's list whatever its length (no short-last-batch truncation)
        gathered = sorted(gather_object(rows) if world > 1 else rows, key=lambda row: row[0])
        if [row[0] for row in gathered] != list(range(len(self._prompt_ids))):
            raise RuntimeError(f"diversity sampling gathered prompts {[r[0] for r in gathered]}, expected each once")
        return [row[1] for row in gathered], [row[2] for row in gathered]

    # -- sample table ---------------------------------------------------------------------------------------------

    def _table_due(self, step: int) -> bool:
        """Whether this step is on the (lower) cadence of the W&B sample table."""
        every = self.config.table_every_steps
        return every > 0 and step % every == 0

    def _log_samples(self, args: TrainingArguments, step: int, prompts: list[str], groups: list[list[str]]) -> None:
        """Add the samples to the run's samples log: `diversity_samples.jsonl` in the output dir, and one W&B table
        that grows across evaluations when the run reports to W&B (`divalign.dashboards.SamplesLog`)."""
        if self._samples_log is None:
            self._samples_log = SamplesLog(args.output_dir)
        self._samples_log.record(args, step, prompts, groups, to_wandb=self._table_due(step))


@contextlib.contextmanager
def _generation_model(trainer: Any, gather: bool) -> Iterator[Any]:
    """The policy ready to generate, in eval mode: TRL's `unwrap_model_for_generation` (under ZeRO-3 with `gather`,
    the weights gathered once for the whole evaluation and DeepSpeed's module hooks removed; gradient checkpointing
    off meanwhile), back in its training mode afterwards (docs/distributed.md, "Generation under ZeRO-3")."""
    from trl.models import unwrap_model_for_generation

    args = trainer.args
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=gather,
            gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None),
        ) as model,
        zero3_generation_state(trainer.model_wrapped, gathered=gather),
    ):
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)


def _topology(accelerator: Any) -> tuple[int, int, bool]:
    """(rank, world size, is main) as accelerate's collectives see them. A run that accelerate does not treat as
    distributed (e.g. torchrun on CPU without `use_cpu`: every rank trains alone) is evaluated by each rank alone;
    trusting `num_processes` there would make `gather_object` a no-op on sharded samples."""
    if accelerator.distributed_type == DistributedType.NO:
        return 0, 1, True
    return accelerator.process_index, accelerator.num_processes, accelerator.is_main_process


def _needs_lockstep(trainer: Any, ds3_gather: bool) -> bool:
    """Whether ranks must generate in lock-step: parameters sharded across ranks at generation time (FSDP, or ZeRO-3
    without gathering; ZeRO-3 as transformers sees it, the config the Trainer set up from accelerate's plugin)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    return is_deepspeed_zero3_enabled() and not ds3_gather
