"""Diversity curves while training: a [`~transformers.TrainerCallback`] that samples a fixed probe set and logs
`diversity/*` metrics through `trainer.log`, so W&B, TensorBoard, ... and `trainer_state.json` all receive them.

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
import json
import math
import os
import random
import types
import typing
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from transformers import GenerationConfig, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from divalign.diversity import DEFAULT_TRAINING_METRICS, METRIC_NAMES, REGISTRY, compute_diversity, load_embedder
from divalign.zero3 import whole_model_loading

Prompt = str | list[dict[str, Any]]
_PROMPT_COLUMNS = ("prompt", "messages")
_FILE_SUFFIXES = (".jsonl", ".json", ".txt")


@dataclass
class DiversityConfig:
    """Settings of the in-training diversity evaluation (the recipe's `diversity:` block)."""

    prompts: str = field(
        metadata={
            "help": "Probe prompts: a .jsonl/.json file (records with a `prompt` field, plain text or chat messages, "
            "or a `messages` field whose trailing assistant turns are dropped), a .txt file (one prompt per line), "
            "or a dataset (local `save_to_disk` folder, data folder, or Hub name) read with `prompts_split` and "
            "`prompts_column`."
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
        metadata={"help": "Log a W&B table of the samples every `table_every_steps` steps (and at step 0); 0 = off."},
    )
    evaluate_last_step: bool = field(
        default=True, metadata={"help": "Also evaluate at the last training step when it is off the cadence."}
    )
    embedding_model: str | None = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Sentence-embedding model for the semantic metrics; null to load none."},
    )
    metrics: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRAINING_METRICS), metadata={"help": "Metrics to compute and log."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling seed; the same noise is reused at every evaluation."})
    batch_size: int = field(
        default=8, metadata={"help": "Prompts per `generate` call (each expanded to `samples_per_prompt` rows)."}
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
        self._check_metrics()

    def _check_ranges(self) -> None:
        """Value checks that a type check cannot express."""
        if not self.prompts.strip():
            raise ValueError("diversity.prompts must name a prompts file or dataset, got an empty string")
        positive = ("num_prompts", "max_new_tokens", "every_steps", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"diversity.{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise ValueError(
                f"diversity.samples_per_prompt must be >= 2 (diversity needs several samples per prompt), "
                f"got {self.samples_per_prompt}"
            )
        if self.table_every_steps < 0:
            raise ValueError(f"diversity.table_every_steps must be >= 0 (0 = off), got {self.table_every_steps}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"diversity.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"diversity.top_p must be in (0, 1], got {self.top_p}")

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


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raise a `ValueError` naming the field when `value` does not match the annotation `hint`."""
    if not _matches(value, hint):
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
# Probe prompts


def load_probe_prompts(config: DiversityConfig) -> list[Prompt]:
    """Read the first `config.num_prompts` probe prompts (strings or chat-message lists)."""
    source = config.prompts
    path = Path(source).expanduser()
    if path.suffix in _FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"Diversity probe prompts file not found: {source}")
        records: list[Any] = _read_prompt_file(path)
    else:
        records = _read_prompt_dataset(source, config.prompts_split)
    prompts = [_to_prompt(record, config.prompts_column, source, i) for i, record in enumerate(records)]
    prompts = prompts[: config.num_prompts]
    if not prompts:
        raise ValueError(f"No diversity probe prompts found in {source}")
    return prompts


def _read_prompt_file(path: Path) -> list[Any]:
    """Records of a .txt (one prompt per line), .jsonl (one JSON object per line) or .json (a list) file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON list of records")
        return data
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} is not valid JSON: {err}") from err
    return records


def _read_prompt_dataset(source: str, split: str) -> list[dict[str, Any]]:
    """Rows of a dataset split: a `save_to_disk` folder, else anything `datasets.load_dataset` reads."""
    import datasets

    try:
        path = Path(source).expanduser()
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(source, split=split)
    except Exception as err:
        raise ValueError(f"Could not load diversity probe prompts from {source!r} (split {split!r}): {err}") from err
    return list(dataset)


def _to_prompt(record: Any, column: str | None, source: str, index: int) -> Prompt:
    """One probe prompt from a record; a `messages` conversation loses its trailing non-user turns."""
    if isinstance(record, str):
        return record
    if not isinstance(record, Mapping):
        raise ValueError(f"{source} record {index} must be an object or a string, got {type(record).__name__}")
    name = column or next((c for c in _PROMPT_COLUMNS if c in record), None)
    if name is None or name not in record:
        wanted = repr(column) if column else " or ".join(repr(c) for c in _PROMPT_COLUMNS)
        raise ValueError(f"{source} record {index} has no {wanted} field (fields: {sorted(record)})")
    value = record[name]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, Mapping) and "role" in m for m in value):
        messages = [dict(m) for m in value]
        while messages and messages[-1]["role"] != "user":
            messages.pop()  # a training conversation: probe with the prompt, not with the reference answer
        if messages:
            return messages
    raise ValueError(f"{source} record {index}: {name!r} must be a string or a list of chat messages")


def render_prompt(prompt: Prompt, tokenizer: Any) -> str:
    """Prompt text as the policy sees it: its chat template with a generation prompt when it has one."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(prompt, str):
        raise ValueError("Chat-message probe prompts need a tokenizer with a chat template; this one has none")
    return prompt


# ---------------------------------------------------------------------------------------------------------------
# Sampling helpers


@contextlib.contextmanager
def preserve_rng_state() -> Iterator[None]:
    """Restore the python, numpy, torch CPU and CUDA RNG states on exit, so sampling leaves training unchanged."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded `input_ids` and `attention_mask` for decoder-only generation."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _cut_at_stop(ids: Sequence[int], stop_ids: set[int]) -> list[int]:
    """Completion tokens before the first EOS/pad."""
    out = []
    for token in ids:
        if token in stop_ids:
            break
        out.append(token)
    return out


def _shard(n_items: int, rank: int, world: int) -> tuple[list[int], int]:
    """This rank's item indices and the common shard length every rank must process (for lock-step generation)."""
    per_rank = math.ceil(n_items / world)
    start = min(rank * per_rank, n_items)
    return list(range(start, min(start + per_rank, n_items))), per_rank


def _eos_ids(tokenizer: Any, model: Any) -> list[int]:
    """EOS ids of the tokenizer and of the model's generation config (chat models often add end-of-turn ids)."""
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and token not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError("Diversity sampling needs an EOS token: the tokenizer and the model define none")
    return ids


@contextlib.contextmanager
def _isolated_trainer_metrics(trainer: Any) -> Iterator[None]:
    """Hide TRL's accumulated `_metrics` during our `log` call: TRL's `log` merges and clears them, which would move
    the training entropy/accuracy into the diversity entry and drop them from the next training-loss entry."""
    saved = getattr(trainer, "_metrics", None)
    if not isinstance(saved, dict):
        yield
        return
    trainer._metrics = {mode: defaultdict(list) for mode in saved}
    try:
        yield
    finally:
        trainer._metrics = saved


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

    Works with any `Trainer` (TRL's SFT/DPO trainers and divalign's subclasses), single process, DDP and DeepSpeed
    ZeRO-3 (FSDP is treated like ZeRO-3 but untested). Each rank samples its share of the prompts; with sharded
    parameters the shards are padded with a dummy prompt so every rank calls `generate` equally often with
    `synced_gpus=True` (an uneven split would otherwise hang). Texts and token ids are gathered to the main
    process, which alone computes the metrics, then every rank logs them so their `log_history` agree. Sampling uses a
    fixed seed inside a saved/restored RNG state, so the training trajectory is the same with or without the callback.

    Args:
        config: evaluation settings.
        trainer: the trainer to log through; or call `bind(trainer)` before training.
    """

    def __init__(self, config: DiversityConfig, trainer: Any | None = None) -> None:
        self.config = config
        self.trainer = trainer
        self._prompts: list[Prompt] = []
        self._prompt_ids: list[list[int]] = []
        self._prompt_texts: list[str] = []
        self._embedder: Any = None
        self._last_step = -1
        # The latest evaluation's rendered prompts and samples, on the main process (for inspection and tests).
        self.last_samples: dict[str, Any] | None = None

    def bind(self, trainer: Any) -> DiversityCallback:
        """Attach the trainer whose `log`, accelerator and model the callback uses; returns `self`."""
        self.trainer = trainer
        return self

    # -- events ---------------------------------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Load the probe prompts and the embedder (failing before step 1), then evaluate the starting model."""
        if self.trainer is None:
            raise RuntimeError("DiversityCallback is not bound to a trainer: pass trainer=... or call bind(trainer)")
        tokenizer = self._tokenizer()
        self._prompts = load_probe_prompts(self.config)
        self._prompt_texts = [render_prompt(p, tokenizer) for p in self._prompts]
        # The template already holds BOS/special tokens; plain prompts get them the way SFT tokenization adds them.
        add_special = not getattr(tokenizer, "chat_template", None)
        self._prompt_ids = [tokenizer(t, add_special_tokens=add_special)["input_ids"] for t in self._prompt_texts]
        needs_embedder = any("embedder" in REGISTRY[name].needs for name in self.config.metrics)
        if needs_embedder and _topology(self.trainer.accelerator)[2]:
            with whole_model_loading():
                self._embedder = load_embedder(self.config.embedding_model)
        if state.global_step == 0:  # on resume the checkpoint's step was evaluated before
            self._evaluate(args, state)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Evaluate on the cadence (and at the last step when `evaluate_last_step`)."""
        step = state.global_step
        last = self.config.evaluate_last_step and state.max_steps > 0 and step == state.max_steps
        if step != self._last_step and (step % self.config.every_steps == 0 or last):
            self._evaluate(args, state)

    # -- evaluation -----------------------------------------------------------------------------------------------

    def _tokenizer(self) -> Any:
        """The policy tokenizer (a processor's inner tokenizer for multimodal policies)."""
        processing_class = getattr(self.trainer, "processing_class", None)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is None:
            raise ValueError("DiversityCallback needs the trainer's processing_class (the policy tokenizer)")
        return tokenizer

    def _evaluate(self, args: TrainingArguments, state: TrainerState) -> None:
        """Sample, gather, score on the main process, and log through the trainer."""
        self._last_step = state.global_step
        groups, token_ids, prompt_idx = self._sample()
        metrics: dict[str, float] | None = None
        if _topology(self.trainer.accelerator)[2]:
            prompts = [self._prompt_texts[i] for i in prompt_idx]
            self.last_samples = {"step": state.global_step, "prompts": prompts, "samples": groups}
            metrics = compute_diversity(
                groups,
                token_ids,
                metrics=self.config.metrics,
                vocab_size=len(self._tokenizer()),
                embedder=self._embedder,
            )
            if self._table_due(state.global_step):
                self._log_table(args, state.global_step, prompts, groups)
        (metrics,) = broadcast_object_list([metrics])
        with _isolated_trainer_metrics(self.trainer), _keep_log_request(self.trainer):
            self.trainer.log({f"diversity/{key}": float(value) for key, value in metrics.items()})

    def _sample(self) -> tuple[list[list[str]], list[list[list[int]]], list[int]]:
        """Completions of every probe prompt, gathered to all ranks in prompt order: texts, token ids, prompt index."""
        trainer = self.trainer
        accelerator = trainer.accelerator
        model = accelerator.unwrap_model(trainer.model_wrapped)
        was_training = model.training
        local: list[tuple[int, list[str], list[list[int]]]] = []
        rank, world, _ = _topology(accelerator)
        model.eval()
        try:
            with preserve_rng_state(), torch.no_grad(), accelerator.autocast():
                local = self._sample_shard(model, rank, world)
        finally:
            model.train(was_training)
        rows = sorted(gather_object(local), key=lambda row: row[0])
        return [r[1] for r in rows], [r[2] for r in rows], [r[0] for r in rows]

    def _sample_shard(self, model: Any, rank: int, world: int) -> list[tuple[int, list[str], list[list[int]]]]:
        """Sample this rank's prompts; every rank runs the same number of `generate` calls."""
        cfg = self.config
        tokenizer = self._tokenizer()
        eos_ids = _eos_ids(tokenizer, model)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        stop_ids = {*eos_ids, pad_id}
        generation_config = self._generation_config(eos_ids, pad_id)
        synced = world > 1 and _needs_lockstep(self.trainer)
        indices, per_rank = _shard(len(self._prompt_ids), rank, world)
        # Pad the shard with dummy prompts (dropped below) so that no rank leaves the lock-step early.
        padded = indices + [0] * (per_rank - len(indices))
        out = []
        for start in range(0, per_rank, cfg.batch_size):
            batch = padded[start : start + cfg.batch_size]
            input_ids, attention_mask = _left_pad([self._prompt_ids[i] for i in batch], pad_id, model.device)
            # A seed per prompt position: every evaluation reuses the same noise, and no rank shares a stream.
            torch.manual_seed(cfg.seed + rank * per_rank + start)
            sequences = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=generation_config,
                synced_gpus=synced,
            )
            completions = sequences[:, input_ids.shape[1] :].tolist()
            for j, prompt_index in enumerate(batch):
                if start + j >= len(indices):
                    continue  # dummy padding prompt
                rows = completions[j * cfg.samples_per_prompt : (j + 1) * cfg.samples_per_prompt]
                ids = [_cut_at_stop(row, stop_ids) for row in rows]
                texts = [tokenizer.decode(row, skip_special_tokens=True) for row in ids]
                out.append((prompt_index, texts, ids))
        return out

    def _generation_config(self, eos_ids: list[int], pad_id: int) -> GenerationConfig:
        """Plain temperature/top-p sampling: the neutral values override a checkpoint's own top-k, min-p, repetition
        penalty, ... which would otherwise be merged in by `generate` and change the measured distribution."""
        cfg = self.config
        return GenerationConfig(
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=0,
            min_p=0.0,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=cfg.samples_per_prompt,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            use_cache=True,
        )

    # -- sample table ---------------------------------------------------------------------------------------------

    def _table_due(self, step: int) -> bool:
        """Whether this step is on the (lower) cadence of the W&B sample table."""
        every = self.config.table_every_steps
        return every > 0 and step % every == 0

    def _log_table(self, args: TrainingArguments, step: int, prompts: list[str], groups: list[list[str]]) -> None:
        """Log (step, prompt, sample) rows as a `wandb.Table` when this run reports to an active W&B run."""
        report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
        if "wandb" not in report_to and "all" not in report_to:
            return
        import wandb

        if wandb.run is None:
            return
        table = wandb.Table(columns=["step", "prompt", "sample_index", "sample"])
        for prompt, samples in zip(prompts, groups, strict=True):
            for k, sample in enumerate(samples):
                table.add_data(step, prompt, k, sample)
        wandb.log({"diversity/samples": table, "train/global_step": step})


def _topology(accelerator: Any) -> tuple[int, int, bool]:
    """(rank, world size, is main) as accelerate's collectives see them. A run that accelerate does not treat as
    distributed (e.g. torchrun on CPU without `use_cpu`: every rank trains alone) is evaluated by each rank alone;
    trusting `num_processes` there would make `gather_object` a no-op on sharded samples."""
    if accelerator.distributed_type == DistributedType.NO:
        return 0, 1, True
    return accelerator.process_index, accelerator.num_processes, accelerator.is_main_process


def _needs_lockstep(trainer: Any) -> bool:
    """Whether parameters are sharded across ranks (ZeRO-3 or FSDP), so ranks must generate in lock-step."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and getattr(plugin, "zero_stage", 0) == 3
