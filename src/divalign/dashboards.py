"""What a run shows in W&B (and, for the samples, on disk): the `diversity` section, the keys runs group by, the
samples.

- ``diversity/*`` keys (the probe-set callback's curves, GRPO's ``diversity/rollout/*``) keep their own name in W&B,
  so they form a `diversity` section of their own instead of landing under ``train/`` with the loss, the learning
  rate and the gradient norm (transformers' W&B callback prefixes every training key with ``train/``); they are
  plotted against ``train/global_step`` (``define_metric``). TensorBoard and ``trainer_state.json`` receive the same
  ``diversity/*`` keys as before: only the W&B callback is replaced (:class:`DiversityWandbCallback`).
- The run config carries ``loss`` (``tofu``, ``gem``, ``ce``, ``dpo``, ``grpo``...), its ``loss_gamma`` /
  ``loss_beta`` / ``loss_h`` and the ``seed`` as top-level keys: group runs by ``loss`` and the seeds make bands.
- In a ``divalign pipeline`` stage every training, diversity and samples row also carries ``pipeline/step``: the
  stage's step plus the steps of the stages before it (the pipeline passes that offset in
  ``DIVALIGN_PIPELINE_STEP_OFFSET``), so SFT → DPO → GRPO curves of one W&B group line up on one axis.
- The sampled completions of the diversity evaluations (:class:`SamplesLog`): one ``wandb.Table`` that grows across
  evaluations (logged incrementally where the installed wandb supports it), and ``diversity_samples.jsonl`` in the
  output directory for runs without W&B.
- The diversity thresholds' alerts (:func:`send_alert`): ``wandb.alert`` on the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers.integrations import WandbCallback
from transformers.integrations.integration_utils import rewrite_logs

from .compat import wandb_callback_set_up
from .set_aside import aside_path

SECTION = "diversity/"
STEP_AXIS = "train/global_step"
PIPELINE_STEP = "pipeline/step"
PIPELINE_OFFSET_ENV = "DIVALIGN_PIPELINE_STEP_OFFSET"
SAMPLES_FILE = "diversity_samples.jsonl"
SAMPLES_REPLACED_PREFIX = "diversity_samples.replaced-"
SAMPLES_KEY = "diversity/samples"
SAMPLE_COLUMNS = ["step", "prompt", "sample_index", "sample"]
# The Trainer's end-of-training entry: transformers' callback files these in the run summary
END_OF_TRAINING_KEY = "train_runtime"


def pipeline_step_offset(env: Mapping[str, str] = os.environ) -> int | None:
    """Steps the earlier stages of a pipeline trained, or ``None`` outside a pipeline."""
    value = env.get(PIPELINE_OFFSET_ENV)
    return None if value is None else int(value)


def loss_config(args: Any) -> dict[str, Any]:
    """The run-config keys runs are grouped by: ``loss``, its ``loss_gamma``/``loss_beta``/``loss_h``, ``seed``. A
    config of divalign's own declares its keys (``loss_keys()``); TRL's are read here."""
    from trl import DPOConfig, GRPOConfig, SFTConfig

    if callable(getattr(args, "loss_keys", None)):
        keys = args.loss_keys()
    elif isinstance(args, SFTConfig):
        keys = {"loss": "ce" if args.loss_type == "nll" else args.loss_type}
    elif isinstance(args, DPOConfig):
        keys = {"loss": "dpo", "loss_beta": args.beta}
    elif isinstance(args, GRPOConfig):
        keys = {"loss": "grpo", "loss_beta": args.beta}
    else:
        keys = {"loss": type(args).__name__}
    return {**keys, "seed": args.seed}


class DiversityWandbCallback(WandbCallback):
    """transformers' [`~transformers.integrations.WandbCallback`], with ``diversity/*`` in a section of its own, the
    loss keys in the run config and, in a pipeline stage, ``pipeline/step`` in its rows."""

    def setup(self, args: Any, state: Any, model: Any, **kwargs: Any) -> None:
        super().setup(args, state, model, **kwargs)
        import wandb

        if not state.is_world_process_zero or wandb.run is None:
            return
        wandb.config.update(loss_config(args), allow_val_change=True)
        wandb.define_metric(STEP_AXIS)
        wandb.define_metric(f"{SECTION}*", step_metric=STEP_AXIS, step_sync=True)
        if pipeline_step_offset() is not None:
            wandb.define_metric(PIPELINE_STEP)

    def on_log(self, args: Any, state: Any, control: Any, model: Any = None, logs: Any = None, **kwargs: Any) -> None:
        logs = logs or {}
        if END_OF_TRAINING_KEY in logs:
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)
            return
        wandb_callback_set_up(self, args, state, model)
        import wandb

        if state.is_world_process_zero and wandb.run is not None:
            wandb.log(wandb_row(logs, state.global_step))


def wandb_row(logs: Mapping[str, Any], step: int) -> dict[str, Any]:
    """One trainer log entry as a W&B row: ``diversity/*`` as logged, the rest under transformers' ``train/``
    (``eval/``...) prefixes, the step axis, and ``pipeline/step`` in a pipeline stage."""
    own = {key: value for key, value in logs.items() if key.startswith(SECTION)}
    rest = rewrite_logs({key: value for key, value in logs.items() if key not in own})
    return {**rest, **own, **step_keys(step)}


def step_keys(step: int) -> dict[str, int]:
    """The axes of a row logged at ``step``: ``train/global_step``, and ``pipeline/step`` in a pipeline stage."""
    offset = pipeline_step_offset()
    return {STEP_AXIS: step, **({} if offset is None else {PIPELINE_STEP: offset + step})}


def install_dashboards(trainer: Any) -> None:
    """Replace the trainer's W&B callback (present when it reports to W&B) by :class:`DiversityWandbCallback`, in its
    place: it sets the W&B run up in ``on_train_begin`` before the diversity callback's step-0 evaluation logs."""
    callbacks = trainer.callback_handler.callbacks
    for index, callback in enumerate(callbacks):
        if type(callback) is WandbCallback:
            callbacks[index] = DiversityWandbCallback()


def reports_to_wandb(args: Any) -> bool:
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    return "wandb" in report_to or "all" in report_to


def send_alert(args: Any, title: str, text: str, error: bool = False) -> bool:
    """A W&B alert on the run (``wandb.alert``: an e-mail or Slack message, as the user's W&B settings say), when the
    run reports to W&B and its run is open; returns whether one was sent. Call on the main process."""
    if not reports_to_wandb(args):
        return False
    import wandb

    if wandb.run is None:
        return False
    wandb.alert(title=title, text=text, level=wandb.AlertLevel.ERROR if error else wandb.AlertLevel.WARN)
    return True


class SamplesLog:
    """The sampled completions of the diversity evaluations: rows ``{step, prompt_index, prompt, sample_index,
    sample}`` of every evaluation appended to ``diversity_samples.jsonl`` in ``output_dir``, and, for the evaluations
    the caller picks (the recipe's ``table_every_steps``), to one W&B table that grows (when the run reports to W&B).

    A run restarted or resumed over an earlier attempt evaluates again from some step on; the first time this log
    writes, rows of that step and later (the earlier attempt's, about to be written again) are moved to
    ``diversity_samples.replaced-<UTC time>.jsonl`` beside it, never deleted.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.path = Path(output_dir) / SAMPLES_FILE
        self._opened = False
        self._table: Any = None
        self._rows: list[list[Any]] = []

    def record(
        self, args: Any, step: int, prompts: Sequence[str], groups: Sequence[Sequence[str]], to_wandb: bool = True
    ) -> None:
        rows = [
            {"step": step, "prompt_index": i, "prompt": prompt, "sample_index": k, "sample": sample}
            for i, (prompt, samples) in enumerate(zip(prompts, groups, strict=True))
            for k, sample in enumerate(samples)
        ]
        self._append(step, rows)
        if to_wandb and reports_to_wandb(args):
            self._log_table(step, [[row[column] for column in SAMPLE_COLUMNS] for row in rows])

    def _append(self, step: int, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._opened:
            self._opened = True
            self._set_aside_from(step)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    def _set_aside_from(self, step: int) -> None:
        if not self.path.is_file():
            return
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
        kept, replaced = [], []  # replaced: rows of later steps, and a row cut short by a kill
        for line in lines:
            row_step = _row_step(line)
            (kept if row_step is not None and row_step < step else replaced).append(line)
        if not replaced:
            return
        aside = aside_path(self.path, SAMPLES_REPLACED_PREFIX + "{stamp}.jsonl")
        aside.write_text("".join(replaced), encoding="utf-8")
        temporary = self.path.with_name(f"{self.path.name}.tmp")
        temporary.write_text("".join(kept), encoding="utf-8")
        temporary.replace(self.path)
        print(
            f"divalign: {len(replaced)} sample rows of step {step} and later, from an earlier attempt of this run, "
            f"moved from {self.path} to {aside}"
        )

    def _log_table(self, step: int, rows: list[list[Any]]) -> None:
        import wandb

        if wandb.run is None:
            return
        self._rows += rows
        if self._table is None:
            self._table = growing_table(wandb)
        if self._table is not None:
            for row in rows:
                self._table.add_data(*row)
            table = self._table
        else:  # a wandb without re-loggable tables: the whole table, anew
            table = wandb.Table(columns=SAMPLE_COLUMNS, data=list(self._rows))
        wandb.log({SAMPLES_KEY: table, **step_keys(step)})


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def growing_table(wandb: Any) -> Any:
    """An empty samples table that can be logged again after rows are added: incremental (each log sends the new
    rows) where the installed wandb has it, else mutable; ``None`` for a wandb with neither."""
    for mode in ("INCREMENTAL", "MUTABLE"):
        try:
            return wandb.Table(columns=SAMPLE_COLUMNS, log_mode=mode)
        except (TypeError, AssertionError, ValueError):
            continue
    return None
