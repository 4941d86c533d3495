"""Launch one training stage from a recipe.

    divalign train recipes/tofu_sft.yaml [--key value ...]          (the same as python -m divalign.train ...)
    accelerate launch --config_file accelerate_configs/zero3.yaml -m divalign.train recipes/tofu_sft.yaml [--key value]

The recipe's ``trainer:`` picks the stage (:data:`divalign.launch.stages.STAGES`); the other keys are
TRL/transformers keys, overridden by flags (``--max_steps`` or ``--max-steps``). Its launcher keys
(``accelerate_config``, ``num_processes``, the multi-node ones) relaunch it through ``accelerate launch`` first, unless
this process already is a rank of a distributed launch (:mod:`divalign.launch.relaunch`). Before the model loads,
every key and its range, the model path, the output path, the launcher's mixed precision, the tokenizer
(``assistant_only_loss`` against its chat template, ``eos_token``), the dataset (file, rows, splits, columns, the kind
of every text field) and the diversity prompts are checked, then the output directory under its lock (resume, finished
run, changed hyper-parameters: :mod:`divalign.launch.output_dir`); a run that stops before writing anything removes
the folders it created. While training, :class:`~divalign.launch.nonfinite_guard.NonFiniteGuard` stops at the first
NaN/inf step and :class:`~divalign.launch.run_lock.LockGuard` before a save once the lock is no longer the run's.
After the run the model, its tokenizer, ``trainer_state.json``, the resolved recipe (``divalign_recipe.yaml``) and,
last, ``divalign_finished.json`` sit in ``output_dir``.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import PartialState
from trl import ModelConfig, ScriptArguments

from ..dashboards import install_dashboards
from ..quiet import quiet_loading_bars, show_held_4bit_warnings
from . import precision
from .checkpoints import export_model, read_trainer_state
from .datasets_io import check_columns, check_conversational, check_text_fields, eval_split, load_recipe_dataset
from .main_process import decide_on_main
from .model_path import check_model_available
from .nonfinite_guard import NonFiniteError, NonFiniteGuard, check_finite_weights
from .output_dir import (
    OutputPlan,
    RecordRecipeOnSave,
    check_output_path,
    outermost_missing,
    prepare_output_dir,
    remove_if_unused,
    resolve_recipe,
    stopped_start_note,
    write_finished,
    write_resolved_recipe,
)
from .recipe import (
    LaunchSettings,
    RecipeError,
    RunOptions,
    parse_recipe,
    read_run_options,
    split_launch_flags,
    split_recipe,
)
from .relaunch import LaunchRequest, inside_distributed_launch, launch_request, run_command
from .resume_changes import ApplyLearningRate
from .run_lock import LockGuard, RunLock, require_lock
from .stages import STAGES, Stage, StageRun, model_init_kwargs
from .tokenizer_checks import check_tokenizer

DRY_RUN_FLAGS = {"--dry-run", "--dry_run"}


def _diversity_callback(block: dict | None, recipe_path: str) -> Any:
    """The recipe's diversity callback: its settings checked (the quality parsed once for the run) and its probe
    prompts read once, now, so a bad file fails before the model."""
    if block is None:
        return None
    from ..callback import DiversityCallback, DiversityConfig, load_probe_records

    try:
        config = DiversityConfig.from_dict(block)
        probes = load_probe_records(config)
    except (ValueError, FileNotFoundError) as error:
        raise RecipeError(f"{recipe_path}: diversity: {error}") from error
    _check_reward_model(config)
    return DiversityCallback(config, probes=probes)


def _check_reward_model(config: Any) -> None:
    """A reward model named as the quality must be loadable here (a Hub id in the local cache while the Hub is
    offline), as the policy must: checked before the policy loads and samples step 0."""
    from ..rewards.registry import RewardSpec

    spec = None if config.parsed_quality is None else config.parsed_quality.spec
    if isinstance(spec, RewardSpec) and spec.name == "reward_model":
        check_model_available(spec.kwargs["model"], "diversity.quality")


def _callbacks(diversity: Any, options: RunOptions) -> list:
    callbacks = []
    if diversity is not None:
        callbacks.append(diversity)
    if options.stop_on_nonfinite:
        callbacks.append(NonFiniteGuard())
    return callbacks


def _check_trainable(trainer, before: int, stage: Stage, recipe_path: str) -> None:
    if not stage.checks_trainable_tokens or trainer.train_dataset is None:
        return
    if len(trainer.train_dataset) == 0:
        raise RecipeError(
            f"{recipe_path}: no trainable tokens: all {before} training examples are fully masked after tokenization "
            f"(max_length={trainer.args.max_length}, completion_only_loss={trainer.args.completion_only_loss}, "
            f"assistant_only_loss={trainer.args.assistant_only_loss}). Check that completions are non-empty and fit "
            "in max_length, or that the chat template marks assistant turns."
        )


def _finish_from_checkpoint(plan: OutputPlan, output_dir: str, resolved: dict[str, Any]) -> None:
    """The run stopped after saving its last checkpoint but before its final model: that checkpoint is the model."""
    checkpoint = Path(plan.export_from)
    try:
        export_model(checkpoint, Path(output_dir))
    except FileNotFoundError as error:
        raise RecipeError(f"{checkpoint} reached the run's last step, but {error}; nothing left to train") from error
    write_resolved_recipe(output_dir, resolved, plan.resumes)
    write_finished(output_dir, (read_trainer_state(checkpoint) or {}).get("global_step", 0))
    print(f"divalign.train: {checkpoint} already reached the last step; its model is now the output in {output_dir}")


def _save_outputs(trainer: Any, output_dir: str, resolved: dict[str, Any], plan: OutputPlan) -> None:
    """The final model, tokenizer, trainer state and recipe; the finished marker last, so it means all are whole."""
    check_finite_weights(trainer)
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process and trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the curves `divalign plot` draws
    if trainer.accelerator.is_main_process:
        from ..callback.state import stop_reason

        write_resolved_recipe(output_dir, resolved, plan.resumes)
        write_finished(output_dir, trainer.state.global_step, stop_reason(trainer.state))
    trainer.accelerator.wait_for_everyone()


def _train(
    stage: Stage, run: StageRun, plan: OutputPlan, resolved: dict[str, Any], recipe_path: str, lock: RunLock
) -> None:
    """Build the trainer, train (or resume), save; on the main process the recipe is written before the first step
    of a new run, and only with the first checkpoint a resumed run saves (so it never records an attempt that
    trained nothing). A changed learning rate is applied to the restored optimizer; every save first checks that the
    run still holds its lock."""
    output_dir = run.training_args.output_dir
    run.callbacks.append(LockGuard(lock))
    if plan.resume_from is not None:
        run.callbacks.append(RecordRecipeOnSave(output_dir, resolved, plan.resumes))
    if plan.resume_from is not None and "learning_rate" in plan.changes:
        change = plan.changes["learning_rate"]
        run.callbacks.append(ApplyLearningRate(change["before"], change["after"]))
    trainer = stage.build(run)
    install_dashboards(trainer)
    for callback in run.callbacks:
        if hasattr(callback, "bind"):
            callback.bind(trainer)
    _check_trainable(trainer, len(run.train_dataset), stage, recipe_path)
    if plan.resume_from is None and trainer.accelerator.is_main_process:
        write_resolved_recipe(output_dir, resolved)
    trainer.train(resume_from_checkpoint=plan.resume_from)
    require_lock(lock, "before saving the final model")
    _save_outputs(trainer, output_dir, resolved, plan)
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers and the process group
        trainer.end()


def run_stage(recipe_path: str, overrides: Sequence[str] = ()) -> str:
    """Run the recipe at ``recipe_path`` with ``overrides``; returns the output directory."""
    output_dir = _run_recipe(recipe_path, overrides)
    # The trainer's reference cycles (its callbacks hold it) keep its DDP model, and through it the gloo group's
    # threads, alive past `trainer.end()` until the interpreter's exit, where their teardown now and then aborted a
    # finished rank (SIGABRT, "terminate called without an active exception"): freed here, while all is whole.
    gc.collect()
    return output_dir


def _run_recipe(recipe_path: str, overrides: Sequence[str]) -> str:
    trainer_name, diversity_block, env = split_recipe(recipe_path, list(STAGES))
    options = read_run_options(recipe_path, overrides)
    os.environ.update(env)
    stage = STAGES[trainer_name]
    script_args, training_args, model_args = parse_recipe(
        recipe_path, overrides, (ScriptArguments, stage.config_class, ModelConfig), trainer_name
    )
    if model_args.load_in_4bit:
        show_held_4bit_warnings()
    check_model_available(model_args.model_name_or_path)
    check_output_path(training_args.output_dir)
    precision.check_precision(training_args, precision.from_environment())
    check_tokenizer(training_args, model_args, local_only=False)
    train_dataset, eval_dataset = _checked_datasets(stage, script_args, training_args)
    diversity = _diversity_callback(diversity_block, recipe_path)
    note = None if diversity is None else stopped_start_note(model_args.model_name_or_path)
    if note is not None and PartialState().is_main_process:
        print(f"divalign.train: note: {note}", flush=True)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    config = None if diversity is None else diversity.config
    resolved = resolve_recipe(trainer_name, config, env, options, script_args, training_args, model_args)
    output_dir = training_args.output_dir
    created = outermost_missing(output_dir)  # removed again if the run stops before writing anything into it
    lock = RunLock(output_dir)
    decide_on_main(lambda: lock.acquire() is not None)  # the main process holds the lock for every rank
    try:
        plan = decide_on_main(lambda: prepare_output_dir(training_args, resolved, options))
        if plan.export_from is not None:
            decide_on_main(lambda: _finish_from_checkpoint(plan, output_dir, resolved))
            return output_dir
        callbacks = _callbacks(diversity, options)
        run = StageRun(trainer_name, script_args, training_args, model_args, train_dataset, eval_dataset, callbacks)
        _train(stage, run, plan, resolved, recipe_path, lock)
    finally:
        lock.release()
        if PartialState().is_main_process:
            remove_if_unused(created)
    return output_dir


def _checked_datasets(stage: Stage, script_args: Any, training_args: Any) -> tuple[Any, Any]:
    """The train and eval splits, with the columns the stage reads and the kind of every text field checked."""
    dataset = load_recipe_dataset(script_args)
    name = script_args.dataset_name
    train_dataset = dataset[script_args.dataset_train_split]
    columns = check_columns(train_dataset, stage.required_columns(training_args), name)
    text_field = getattr(training_args, "dataset_text_field", None)
    check_text_fields(train_dataset, columns, text_field, name, script_args.dataset_train_split)
    check_conversational(train_dataset, columns, training_args, name)
    eval_dataset = eval_split(dataset, script_args, training_args)
    if eval_dataset is not None:
        present = tuple(column for column in columns if column in eval_dataset.column_names)
        check_text_fields(eval_dataset, present, text_field, name, script_args.dataset_test_split)
    return train_dataset, eval_dataset


def launch_or_run(recipe_path: str, flags: Sequence[str], dry_run: bool = False) -> int:
    """Run the recipe in this process, or relaunch it through ``accelerate launch`` when its launcher keys (or flags)
    ask for one; ``dry_run`` checks the recipe and prints the command instead. Returns the exit status."""
    from .checks import check_launch, has_gpu

    if inside_distributed_launch():
        given = split_launch_flags(flags)[0]
        if given:
            raise RecipeError(
                f"--{next(iter(given))} is a launcher setting, but this process already is a rank of a distributed "
                "launch (accelerate launch, torchrun); give it to that launcher instead"
            )
        request = LaunchRequest(LaunchSettings())  # the recipe's launcher keys were the launcher's business
    else:
        request = launch_request(recipe_path, flags)
    if not request.relaunches and not dry_run:
        run_stage(recipe_path, flags)
        return 0
    plan = check_launch(recipe_path, flags, request, has_gpu())
    print(f"divalign train: {'launch' if plan.relaunches else 'in this process'}: {plan.shell()}", flush=True)
    if dry_run:
        return 0
    _, _, env = split_recipe(recipe_path, list(STAGES))
    return run_command(plan.command, {**os.environ, **env})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_loading_bars()
    if argv[:1] == ["--config"]:
        argv = argv[1:]
    dry_run = bool(DRY_RUN_FLAGS & set(argv))
    argv = [arg for arg in argv if arg not in DRY_RUN_FLAGS]
    if not argv or argv[0].startswith("-"):
        print("usage: divalign train RECIPE.yaml [--dry-run] [--key value ...]", file=sys.stderr)
        return 2
    try:
        return launch_or_run(argv[0], argv[1:], dry_run)
    except (RecipeError, NonFiniteError) as error:
        print(f"divalign.train: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
