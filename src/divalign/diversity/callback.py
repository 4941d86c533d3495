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
import math
import os
import random
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from divalign.compat import trainer_metrics_hidden, zero3_generation_state
from divalign.dashboards import SamplesLog, install_dashboards, send_alert
from divalign.diversity import DEFAULT_TRAINING_METRICS, METRIC_NAMES, REGISTRY
from divalign.diversity.embedding import CachedEmbedder
from divalign.diversity.probe_scores import against_reference, score_probe
from divalign.diversity.profile import DEFAULT_PROFILE, get_profile, load_profile_embedder, record_profile
from divalign.diversity.reference import (
    Crossing,
    Reference,
    TrackingRecord,
    crossings,
    inactive_thresholds,
    read_record,
    retained_metrics,
    write_record,
)
from divalign.generation import (
    Prompt,
    SamplingProgress,
    SamplingSettings,
    decode_group,
    encode_prompt,
    pad_token_id,
    render_prompt,
    sample_completions,
    stop_token_ids,
    uses_chat_template,
)
from divalign.zero3 import whole_model_loading


@dataclass
class DiversityConfig:
    """Settings of the in-training diversity evaluation (the recipe's `diversity:` block)."""

    prompts: str = field(
        metadata={
            "help": "Probe prompts: a .jsonl/.json/.txt/.csv/.parquet file, a dataset saved with `save_to_disk`, a "
            "data folder or a Hub dataset id (read with `prompts_split` and `prompts_column`); records hold a "
            "`prompt` (text or chat messages) or a `messages` conversation, whose trailing non-user turns are dropped. "
            "The same loader as `divalign eval --prompts`."
        }
    )
    prompts_split: str = field(default="test", metadata={"help": "Split to read when `prompts` is a dataset."})
    prompts_column: str | None = field(
        default=None, metadata={"help": "Column holding the prompts; default: `prompt`, else `messages`."}
    )
    num_prompts: int = field(default=32, metadata={"help": "Use the first `num_prompts` probe prompts."})
    samples_per_prompt: int = field(default=8, metadata={"help": "Completions sampled per prompt (K >= 2)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Maximum new tokens per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass in (0, 1]; 1 disables it."})
    every_steps: int = field(default=100, metadata={"help": "Evaluate every `every_steps` optimizer steps."})
    table_every_steps: int = field(
        default=500,
        metadata={
            "help": "Add the samples to the run's W&B table (one table that grows) every `table_every_steps` steps "
            "and at step 0; 0 = never. Every evaluation's samples also go to `diversity_samples.jsonl` in output_dir."
        },
    )
    evaluate_last_step: bool = field(
        default=True, metadata={"help": "Also evaluate at the last training step when it is off the cadence."}
    )
    embedding_model: str | None = field(
        default="auto",
        metadata={
            "help": "Sentence-embedding model for the semantic metrics: `auto` = the metric profile's "
            "(divalign: all-MiniLM-L6-v2, karouzos2026: all-mpnet-base-v2); null to load none."
        },
    )
    profile: str = field(
        default=DEFAULT_PROFILE,
        metadata={
            "help": "Metric conventions: `divalign` (the default), `karouzos2026` (Karouzos et al., arXiv 2604.16027: "
            "EAD over words, think-stripped texts, all-mpnet-base-v2) or `tofu2026` (the TOFU paper's lowercased "
            "self-BLEU on 0-100); recorded in the W&B run config as `diversity_profile`."
        },
    )
    metrics: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRAINING_METRICS), metadata={"help": "Metrics to compute and log."}
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "Sampling seed (>= 0). A sample's noise depends only on the seed, the prompt's index, the "
            "sample's index and max_new_tokens: the same at every evaluation and on any number of processes."
        },
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "Prompts per `generate` call (each expanded to `samples_per_prompt` rows); changes speed and "
            "memory, not the samples."
        },
    )
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={
            "help": "Under DeepSpeed ZeRO-3: gather the policy's weights once per evaluation and generate on each "
            "rank locally (TRL's `unwrap_model_for_generation` semantics; needs the whole model in one device's "
            "memory). false keeps the slow lock-step generation over sharded weights (`synced_gpus`, every layer "
            "gathered at every decoded token), for models too big to gather. Same samples either way."
        },
    )
    quality: str | dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "The samples' quality, logged next to their diversity: a reward of the rewards registry by name "
            "(what GRPO recipes' `rewards:` name, e.g. `math_answer` with the probe prompts' `answer` column, "
            "`toy_validity` with their `valid_answers`), a one-key mapping `{name: settings}`, `reward_model:PATH` or a "
            "local reward-model directory (a sequence-classification checkpoint with its head), or `MODULE:FUNCTION`, "
            "`fn(completion, answer) -> float` of your own (MODULE installed or a .py file in the current directory): "
            "the grammar of `divalign eval --quality`. Logs `diversity/quality/mean`; with a verifier (0/1 scores, or a `correct_threshold`) also "
            "`diversity/quality/pass_at_1`, `pass_at_k`, `diversity/correct_only/<metric>` (prompts with at least two "
            "correct samples) and, against step 0, `diversity/quality_control/<metric>` and "
            "`diversity/narrowing/<metric>` (Karouzos et al., arXiv 2604.16027; the code of `divalign eval`)."
        },
    )
    correct_threshold: float | None = field(
        default=None,
        metadata={
            "help": "A sample whose quality is at least this counts as correct (for a reward model's scores); "
            "default: a verifier's verdict (score 1), and no correctness for other rewards."
        },
    )
    alert_below: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Per metric, a retained ratio (`diversity/retained/<metric>`, the value over its step-0 value) "
            "in (0, 1]: the first evaluation below it sends a W&B alert (`wandb.alert`, when the run reports to W&B) "
            "and prints a line, e.g. `{ead: 0.7}`. Metrics where higher means more diverse only."
        },
    )
    stop_below: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Per metric, a retained ratio in (0, 1]: at the first evaluation below it training stops, every "
            "process at the same step, with a checkpoint of that step, and says why (printed, in trainer_state.json, "
            "as a W&B alert and, under `divalign train`, which then saves the final model, in "
            "divalign_finished.json)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            raise ValueError(f"diversity.metrics must be a list of metric names, got the string {self.metrics!r}")
        self.metrics = list(self.metrics)
        if isinstance(self.prompts, os.PathLike):
            self.prompts = os.fspath(self.prompts)
        for name, hint in typing.get_type_hints(type(self)).items():
            _check_type(name, getattr(self, name), hint)
        self._check_ranges()
        get_profile(self.profile)  # an unknown name raises, listing the valid ones
        self._check_metrics()
        self._check_quality()
        for name in ("alert_below", "stop_below"):
            self._check_thresholds(name)

    def _check_ranges(self) -> None:
        """Value checks that a type check cannot express."""
        if not self.prompts.strip():
            raise ValueError("diversity.prompts must name a prompts file or dataset, got an empty string")
        for name in ("num_prompts", "every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"diversity.{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise ValueError(
                f"diversity.samples_per_prompt must be >= 2 (diversity needs several samples per prompt), "
                f"got {self.samples_per_prompt}"
            )
        if self.table_every_steps < 0:
            raise ValueError(f"diversity.table_every_steps must be >= 0 (0 = off), got {self.table_every_steps}")
        self.sampling.check(prefix="diversity.")

    @property
    def sampling(self) -> SamplingSettings:
        """The sampling settings of every evaluation (neutral: temperature and top-p only)."""
        return SamplingSettings(
            num_samples=self.samples_per_prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def _check_metrics(self) -> None:
        """Known metric names, computable from what the callback has (token ids, vocabulary size, embedder)."""
        if not self.metrics:
            raise ValueError("diversity.metrics must name at least one metric")
        unknown = [name for name in self.metrics if name not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"Unknown diversity metric(s) {unknown}; valid metrics: {list(METRIC_NAMES)}")
        offline = [name for name in self.metrics if REGISTRY[name].needs & {"verifier", "nli_scorer"}]
        if offline:
            raise ValueError(f"Diversity metric(s) {offline} need a verifier or an NLI model: use `divalign eval`")
        semantic = [name for name in self.metrics if "embedder" in REGISTRY[name].needs]
        if semantic and not self.embedding_model:
            raise ValueError(f"Diversity metric(s) {semantic} need diversity.embedding_model, which is not set")

    def _check_quality(self) -> None:
        """A quality of `divalign.rewards.quality`'s grammar, built as `divalign eval --quality` builds it (a reward's
        settings and a reward model's local path checked, a function of your own imported, no model loaded); a
        threshold needs one."""
        if self.quality is not None:
            from divalign.rewards.quality import Quality

            Quality(self.quality)
        if self.correct_threshold is not None:
            if self.quality is None:
                raise ValueError("diversity.correct_threshold needs diversity.quality (whose scores it thresholds)")
            if not math.isfinite(self.correct_threshold):
                raise ValueError(f"diversity.correct_threshold must be a finite number, got {self.correct_threshold}")

    def _check_thresholds(self, name: str) -> None:
        """Retained-ratio thresholds: metrics computed here where higher means more diverse, ratios in (0, 1]."""
        thresholds = getattr(self, name)
        eligible = retained_metrics(self.metrics)
        for metric, value in thresholds.items():
            if metric not in eligible:
                raise ValueError(
                    f"diversity.{name}: {metric!r} has no retained ratio; name one of the metrics computed here where "
                    f"higher means more diverse: {eligible}"
                )
            if not 0 < value <= 1:
                raise ValueError(
                    f"diversity.{name}.{metric} must be a retained ratio in (0, 1] (the share of the step-0 value), "
                    f"got {value}"
                )

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> DiversityConfig:
        """Build from a recipe's `diversity:` mapping; unknown keys and bad values raise `ValueError`."""
        if not isinstance(config, Mapping):
            raise ValueError(f"The diversity block must be a mapping, got {type(config).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in config if key not in valid]
        if unknown:
            raise ValueError(f"Unknown key(s) in the diversity block: {unknown}; valid keys: {valid}")
        if "prompts" not in config:
            raise ValueError("The diversity block needs `prompts` (a prompts file or dataset)")
        return cls(**config)


_PLAIN_TYPES = {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raise a `ValueError` naming the field (and, in a mapping such as `stop_below`, its key) when `value` does not
    match the annotation `hint`."""
    if _matches(value, hint):
        return
    if typing.get_origin(hint) is dict and isinstance(value, dict):
        key_hint, item_hint = typing.get_args(hint)
        for key, item in value.items():
            if not _matches(key, key_hint):
                raise ValueError(f"diversity.{name}: key {key!r} must be {_PLAIN_TYPES.get(key_hint, key_hint)}")
            if not _matches(item, item_hint):
                expected = _PLAIN_TYPES.get(item_hint) or f"of type {item_hint}"
                raise ValueError(f"diversity.{name}.{key} must be {expected}, got {item!r} ({type(item).__name__})")
    shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    raise ValueError(f"diversity.{name} must be of type {shown}, got {value!r} ({type(value).__name__})")


def _matches(value: Any, hint: Any) -> bool:
    """Minimal runtime check for the annotations used by `DiversityConfig`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # YAML booleans are ints in Python; refuse them for counts
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


# ---------------------------------------------------------------------------------------------------------------
# Probe prompts and RNG


def load_probe_records(config: DiversityConfig) -> list[Any]:
    """The first `config.num_prompts` probe records (`divalign.evaluation.prompts.PromptRecord`: the prompt and the
    record's other fields), read by the loader `divalign eval` uses; with a `quality`, every record must hold the
    columns its reward reads (a `ValueError` names the file, the record and the column)."""
    from divalign.evaluation.prompts import load_prompts

    records = load_prompts(
        config.prompts, split=config.prompts_split, column=config.prompts_column, limit=config.num_prompts
    )
    if config.quality is not None:
        from divalign.rewards.quality import Quality

        Quality(config.quality).check_columns([r.columns for r in records], config.prompts)
    return records


def load_probe_prompts(config: DiversityConfig) -> list[Prompt]:
    """The first `config.num_prompts` probe prompts (strings or chat-message lists), see :func:`load_probe_records`."""
    return [record.prompt for record in load_probe_records(config)]


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
    `quality` with its correct-only diversity: `divalign.diversity.probe_scores`) and decides on the alert and stop
    thresholds; every rank then logs the same keys and takes the same decision, so their `log_history` agree and they
    stop at the same step. The evaluation runs inside a saved/restored RNG state, so the training trajectory is the
    same with or without the callback. On resume, the checkpoint's step is not evaluated again, and the step-0
    reference (`divalign.diversity.reference`, kept in the trainer state) comes back from the checkpoint.
    While it samples, the main process shows one tqdm bar (its share's tokens at every decoding step, tokens/s, time
    left, samples done), unless the run sets `disable_tqdm`.

    Args:
        config: evaluation settings.
        trainer: the trainer to log through; or call `bind(trainer)` before training.
    """

    def __init__(self, config: DiversityConfig, trainer: Any | None = None) -> None:
        self.config = config
        self.trainer = trainer
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
        records = load_probe_records(self.config)
        self._prompts, self._columns = [r.prompt for r in records], [r.columns for r in records]
        self._prompt_texts = [render_prompt(p, tokenizer) for p in self._prompts]
        self._prompt_ids = [encode_prompt(p, tokenizer) for p in self._prompts]
        needs_embedder = any("embedder" in REGISTRY[name].needs for name in self.config.metrics)
        if needs_embedder and _topology(self.trainer.accelerator)[2]:
            with whole_model_loading():
                self._embedder = load_profile_embedder(self.config.profile, self.config.embedding_model, "diversity.")
        if self.config.quality is not None:
            from divalign.rewards.quality import Quality

            self._quality = Quality(self.config.quality, self.config.correct_threshold)
            if _topology(self.trainer.accelerator)[2]:  # the main process scores: a bad checkpoint fails before step 0
                self._quality.load()
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
