"""Run a validated pipeline: one ``accelerate launch -m divalign.train`` per stage, in order, each loading the last.

A stage is skipped when its directory holds a marker with the same inputs hash, resumed from its last checkpoint
when it was interrupted, and refused when its inputs changed and it already has a result (``--force-rerun`` moves
the old directory aside). Between stages the tokenizer's chat template and EOS token are compared, and a LoRA
adapter is merged or handed on as the next stage asks (:mod:`divalign.pipeline.handoff`). A stage a diversity threshold (``stop_below``) stopped is
recorded as finished, with why, and ends the pipeline there, in every rerun, unless ``--accept-stopped`` names it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..dashboards import PIPELINE_OFFSET_ENV
from ..launch.checkpoints import newest_complete
from ..launch.checks import check_launch
from ..launch.output_dir import finished_run
from ..launch.recipe import RecipeError
from ..launch.relaunch import launch_request, run_command
from ..launch.run_lock import LOCK_FILE, RunLock, describe, is_stale
from . import stage_values
from .flags import override_flags
from .handoff import (
    ADAPTER_CONFIG,
    MERGED_DIR,
    TEMPLATE_KEYS,
    StageInput,
    StageResult,
    merge_adapter,
    short_text,
    template_drift,
    tokenizer_signature,
)
from .spec import EVAL_STAGE, PipelineError, PipelineSpec, StageSpec
from .stage_values import validate_stages
from .state import (
    DONE_MARKER,
    STATE_DIR,
    Inspection,
    Status,
    file_text,
    inputs_hash,
    inspect_dir,
    move_aside,
    read_json,
    record_start,
    source_digest,
    started_path,
    write_marker,
)

MANIFEST = "pipeline.json"

Launcher = Callable[[list[str], dict[str, str]], int]


def subprocess_launcher(command: list[str], env: dict[str, str]) -> int:
    """Run one stage's launch command with its output on the terminal; returns its exit status."""
    return run_command(command, env)


def launch_command(stage: StageSpec, model: StageInput, resume: bool, run_name: str | None) -> list[str]:
    """``accelerate launch [--config_file C] [launch_args] -m divalign.train RECIPE --output_dir D ...``, built by
    ``divalign train``'s own launch code (:mod:`divalign.launch.relaunch`): the recipe's launcher keys, then the stage's
    ``accelerate_config``/``launch_args``, then launcher keys in its overrides; checked like the launch itself."""
    flags = ["--output_dir", str(stage.output_dir), "--model_name_or_path", model.model, *model.flags]
    flags += override_flags(stage.overrides, stage.list_flags)
    if run_name is not None:
        flags += ["--run_name", run_name]
    if resume:
        flags += ["--resume_from_checkpoint", "true"]
    request = launch_request(
        stage.recipe, flags, accelerate_config=stage.accelerate_config, launch_args=stage.launch_args, always=True
    )
    try:
        plan = check_launch(stage.recipe, flags, request, stage_values.has_gpu(), entry=model.entry)
    except RecipeError as error:
        raise PipelineError(f"stage {stage.name!r} ({stage.recipe} with its overrides): {error}") from error
    return plan.command


def stage_env(spec: PipelineSpec, stage: StageSpec, step_offset: int = 0) -> dict[str, str]:
    """The launching environment plus W&B grouping (one group per pipeline, one job type per stage) and the steps the
    earlier stages trained, from which the stage logs a cumulative ``pipeline/step`` (:mod:`divalign.dashboards`)."""
    return {
        **os.environ,
        "WANDB_RUN_GROUP": spec.name,
        "WANDB_JOB_TYPE": stage.name,
        "WANDB_NAME": f"{spec.name}-{stage.name}",
        PIPELINE_OFFSET_ENV: str(step_offset),
    }


def trained_steps(output_dir: Path) -> int:
    """The optimizer steps a finished stage trained (its ``divalign_finished.json``), 0 when unknown."""
    record = finished_run(output_dir) if output_dir.is_dir() else None
    return int((record or {}).get("global_step") or 0)


def write_manifest(spec: PipelineSpec) -> Path:
    """``<output_root>/.divalign_state/pipeline.json``: the stages in order and where each writes, which `divalign
    plot` reads to draw a pipeline end to end."""
    path = spec.output_root / STATE_DIR / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    stages = [{"name": stage.name, "output_dir": str(stage.output_dir)} for stage in spec.stages]
    path.write_text(json.dumps({"name": spec.name, "stages": stages}, indent=2))
    return path


def prompts_identity(source: str) -> str:
    """The eval prompts in the eval's hash: a file by its text (as before any other source was accepted, so a
    finished eval stays finished), a folder by its files, a Hub id by its name."""
    if Path(source).is_file():
        return inputs_hash({"text": file_text(Path(source))})
    return source_digest(source)


class PipelineRunner:
    """Runs (or, with ``dry_run``, plans) the stages of ``spec`` and the lineage eval."""

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        force_rerun: Sequence[str] = (),
        only: str | None = None,
        dry_run: bool = False,
        accept_stopped: Sequence[str] = (),
        launcher: Launcher = subprocess_launcher,
        log: Callable[[str], None] = print,
        replace_stale: bool = False,
    ):
        known = [*spec.names, *([EVAL_STAGE] if spec.eval is not None else [])]
        for name in [*force_rerun, *accept_stopped, *([only] if only else [])]:
            if name not in known:
                raise PipelineError(f"{spec.path}: no stage named {name!r}; stages are {', '.join(known)}")
        self.spec = spec
        self.accept_stopped = set(accept_stopped)
        self.dry_run = dry_run
        self.only = only
        self.launcher = launcher
        self.log = log
        self.forced = self._cascade(force_rerun)
        # `divalign compare --force`: a result whose inputs changed is moved aside and rerun, a finished one is kept
        self.replace_stale = replace_stale

    def _cascade(self, force_rerun: Sequence[str]) -> set[str]:
        """A forced stage forces every later stage (and the eval): they were built on the result being replaced."""
        order = [*self.spec.names, EVAL_STAGE]
        if not force_rerun:
            return set()
        first = min(order.index(name) for name in force_rerun)
        return set(order[first:])

    def _say(self, message: str) -> None:
        self.log(f"[divalign pipeline {self.spec.name}] {message}")

    # Inputs

    def _input(self, stage: StageSpec, previous: StageResult | None) -> StageInput:
        if previous is None:
            model = self.spec.base_model
            identity: dict[str, Any] = {"model": model}
            if not (Path(model) / ADAPTER_CONFIG).is_file():
                return StageInput(model, [], identity)
            return self._adapter_input(stage, Path(model), identity, "base_model")
        identity = {"stage": previous.name, "hash": previous.digest, "run_id": previous.run_id}
        if not (previous.is_adapter or (self.dry_run and self.spec.stage(previous.name).uses_peft)):
            return StageInput(str(previous.output_dir), [], identity)
        return self._adapter_input(stage, previous.output_dir, identity, f"stage {previous.name!r}")

    def _adapter_input(self, stage: StageSpec, adapter_dir: Path, identity: dict, source: str) -> StageInput:
        identity = {**identity, "adapters": stage.adapters}
        if stage.adapters is None:
            raise PipelineError(
                f"{self.spec.path}: stage {stage.name!r} loads {source}, a LoRA adapter "
                f"({adapter_dir / ADAPTER_CONFIG}); set `adapters: merge` or `adapters: continue`"
            )
        if stage.adapters == "merge":
            merged = adapter_dir / MERGED_DIR
            if not self.dry_run:
                self._say(f"merging the adapter in {adapter_dir} into its base model → {merged}")
                merged = merge_adapter(adapter_dir)
            return StageInput(str(merged), [], identity)
        # TRL takes no adapter path: the adapter_stage entry point loads base + adapter as a trainable PeftModel
        config = adapter_dir / ADAPTER_CONFIG
        base = json.loads(config.read_text())["base_model_name_or_path"] if config.is_file() else f"<base of {config}>"
        entry = ["-m", "divalign.pipeline.adapter_stage", str(adapter_dir)]
        return StageInput(base, [], identity, str(adapter_dir), entry)

    def _digest(self, stage: StageSpec, model: StageInput) -> tuple[str, dict[str, Any]]:
        inputs = {
            "trainer": stage.trainer,
            "recipe": file_text(stage.recipe),
            "overrides": stage.overrides,
            "input": model.identity,
            "accelerate_config": file_text(stage.accelerate_config_file),
            "launch_args": list(stage.launch_args),
        }
        return inputs_hash(inputs), inputs

    # Stages

    def _refuse_stale(self, stage_name: str, directory: Path, inspection: Inspection) -> None:
        raise PipelineError(
            f"{self.spec.path}: stage {stage_name!r}: {directory} already holds a result, but {inspection.detail} "
            f"(recipe, overrides, accelerate config, launch args or an upstream stage changed). It is never "
            f"overwritten: remove {directory}, or pass --force-rerun {stage_name} to move it aside to "
            f"{directory}.old-<timestamp> and run it again"
        )

    def _prepare_dir(self, name: str, directory: Path, inspection: Inspection) -> bool:
        """Resolve a stage directory's state before running; returns whether to resume."""
        status = inspection.status
        replaced = name in self.forced or (self.replace_stale and status is Status.STALE)
        if replaced and status is not Status.FRESH:
            why = "--force-rerun" if name in self.forced else f"{inspection.detail}, --force"
            if self.dry_run:
                self._say(f"stage {name!r}: would move {directory} aside ({why})")
                return False
            self._say(f"stage {name!r}: {why}: moved {directory} aside to {move_aside(directory)}")
            return False
        if status is Status.RESTART:  # only the files written before training (the resolved recipe): kept aside
            if not self.dry_run:
                aside = move_aside(directory)
                self._say(f"stage {name!r}: killed before its first checkpoint; moved {directory} aside to {aside}")
            return False
        if status is Status.STALE:
            self._refuse_stale(name, directory, inspection)
        if status is Status.FOREIGN:
            raise PipelineError(
                f"{self.spec.path}: stage {name!r}: {directory} is not empty but holds neither a finished stage "
                f"(no {DONE_MARKER}) nor a checkpoint-* to resume from; remove it, or point the "
                "stage's `output_dir` elsewhere"
            )
        return status is Status.RESUME

    def _run_stage(self, stage: StageSpec, previous: StageResult | None, step_offset: int = 0) -> StageResult:
        model = self._input(stage, previous)
        digest, inputs = self._digest(stage, model)
        started = read_json(started_path(self.spec.output_root, stage.name))
        inspection = inspect_dir(stage.output_dir, digest, started)
        if inspection.status is Status.DONE and stage.name not in self.forced:
            self._say(f"stage {stage.name!r}: skipped, finished with the same inputs ({stage.output_dir})")
            self._check_template(stage, model.tokenizer)
            self._stop_if_stopped(stage, inspection.marker.get("stopped_early"))
            return StageResult(stage.name, stage.output_dir, digest, inspection.marker["run_id"])
        if inspection.status is Status.TRAINED and stage.name not in self.forced and not self.dry_run:
            self._say(f"stage {stage.name!r}: trained with the same inputs before the pipeline stopped; recording it")
            return self._record_finished(stage, model, digest, inputs)
        if self.only is not None and stage.name != self.only:
            raise PipelineError(
                f"{self.spec.path}: --only {self.only} needs stage {stage.name!r} finished with its "
                f"current inputs first (its directory {stage.output_dir} is {inspection.status.value})"
            )
        resume = self._prepare_dir(stage.name, stage.output_dir, inspection)
        run_name = None if "run_name" in stage.overrides else f"{self.spec.name}-{stage.name}"
        command = launch_command(stage, model, resume, run_name)
        self._say(f"stage {stage.name!r}: {'resuming' if resume else 'running'}: {' '.join(command)}")
        if self.dry_run:
            return StageResult(stage.name, stage.output_dir, digest, "planned")
        self._refuse_locked(stage)
        if not resume:
            record_start(self.spec.output_root, stage.name, digest, stage.output_dir)
        code = self.launcher(command, stage_env(self.spec, stage, step_offset))
        if code != 0:
            raise PipelineError(self._failure(stage, code))
        return self._record_finished(stage, model, digest, inputs)

    def _record_finished(self, stage: StageSpec, model: StageInput, digest: str, inputs: dict) -> StageResult:
        self._check_template(stage, model.tokenizer)
        stopped = (finished_run(stage.output_dir) or {}).get("stopped_early")
        marker = write_marker(stage.output_dir, digest, inputs, str(stage.output_dir), stopped)
        self._stop_if_stopped(stage, stopped)
        return StageResult(stage.name, stage.output_dir, digest, marker["run_id"])

    def _stop_if_stopped(self, stage: StageSpec, stopped: str | None) -> None:
        """A stage a diversity threshold (``stop_below``) stopped ends the pipeline, in its run and in every rerun,
        until ``--accept-stopped STAGE`` says to go on from its model (or the stage is trained again)."""
        if not stopped:
            return
        if stage.name in self.accept_stopped:
            self._say(
                f"stage {stage.name!r}: stopped early by a diversity threshold ({stopped}); going on from its model "
                f"(--accept-stopped {stage.name})"
            )
            return
        later = self.spec.names[self.spec.names.index(stage.name) + 1 :] + ([EVAL_STAGE] if self.spec.eval else [])
        not_run = f"{', '.join(later)} did not run" if later else "it was the last stage"
        raise PipelineError(
            f"stage {stage.name!r} was stopped by a diversity threshold: {stopped}. The pipeline stops here ({not_run}); "
            f"the stage's model is in {stage.output_dir}. To go on from that model, rerun with --accept-stopped "
            f"{stage.name}; to train the stage again, change its recipe (e.g. its `diversity:` stop_below) and rerun "
            f"with --force-rerun {stage.name}"
        )

    def _refuse_locked(self, stage: StageSpec) -> None:
        """A stage directory some other live run holds (e.g. a `divalign.train` started by hand) is not launched."""
        lock = stage.output_dir / LOCK_FILE
        owner = read_json(lock)
        if owner is not None and is_stale(owner) is not True:
            raise PipelineError(
                f"stage {stage.name!r}: {stage.output_dir} is in use by another run: {describe(owner)}; wait for it "
                f"to finish (if that run is gone, remove {lock})"
            )

    def _failure(self, stage: StageSpec, code: int) -> str:
        """What failed and what rerunning the same command will do: resume, or start the stage over."""
        checkpoint = newest_complete(stage.output_dir)
        if checkpoint is not None:
            rerun = f"rerun the same command to resume it from {checkpoint}"
        else:
            rerun = "rerun the same command to start it over (it saved no checkpoint)"
        return f"stage {stage.name!r} failed (exit status {code}; its error is above); once that is fixed, {rerun}"

    def _check_template(self, stage: StageSpec, input_model: str) -> None:
        """Fail when the stage changed the chat template or EOS token, unless its recipe asked for that change."""
        if self.dry_run:
            return
        before, after = tokenizer_signature(input_model), tokenizer_signature(str(stage.output_dir))
        drift = template_drift(before, after)
        for name in drift:
            index = list(TEMPLATE_KEYS).index(name)
            message = (
                f"stage {stage.name!r} changed the tokenizer's {name}: {input_model} has "
                f"{short_text(before[index])}, {stage.output_dir} has {short_text(after[index])}"
            )
            if stage.sets(TEMPLATE_KEYS[name]):
                self._say(f"warning: {message} (set on purpose by `{TEMPLATE_KEYS[name]}` in its recipe)")
                continue
            raise PipelineError(
                f"{self.spec.path}: {message}. Later stages would train and sample with another turn "
                f"format or stop token than this one; if the change is meant, set "
                f"`{TEMPLATE_KEYS[name]}` in the stage's recipe (SFT-type trainers)"
            )

    # Eval

    def _lineage_models(self, results: list[StageResult]) -> list[tuple[str, str]]:
        models = [("base", self.spec.base_model)]
        for result in results:
            path = result.output_dir
            if result.is_adapter and not self.dry_run:
                path = merge_adapter(result.output_dir)  # the sampler loads full checkpoints
            models.append((result.name, str(path)))
        return models

    def _run_eval(self, results: list[StageResult]) -> dict[str, Any] | None:
        from ..evaluation import evaluate_lineage
        from ..evaluation.options import EvalOptions

        eval_kwargs = self.spec.eval
        directory = self.spec.lineage_dir
        stages = [{"stage": r.name, "hash": r.digest, "run_id": r.run_id} for r in results]
        inputs = {
            "eval": eval_kwargs,
            "prompts": prompts_identity(str(eval_kwargs["prompts_path"])),
            "stages": stages,
        }
        digest = inputs_hash(inputs)
        inspection = inspect_dir(directory, digest, None)
        if inspection.status is Status.DONE and EVAL_STAGE not in self.forced:
            self._say(f"eval: skipped, {directory} already holds it for these models")
            return None
        self._prepare_dir(EVAL_STAGE, directory, inspection)
        models = self._lineage_models(results)
        self._say(f"eval: lineage {', '.join(name for name, _ in models)} → {directory}")
        if self.dry_run:
            return None
        options = EvalOptions(**{k: v for k, v in eval_kwargs.items() if k != "prompts_path"}, out_dir=directory)
        outcome = evaluate_lineage(models, eval_kwargs["prompts_path"], options)
        write_marker(directory, digest, inputs, str(directory))
        return outcome

    def run(self) -> list[StageResult]:
        """Validate every stage's values, then run every stage (or only ``--only``'s) and the lineage eval; returns
        the stages' results. A real run holds the lock of ``output_root`` throughout."""
        for note in validate_stages(self.spec):
            self._say(note)
        if self.dry_run:
            return self._run_all()
        with RunLock(self.spec.output_root / STATE_DIR, what="pipeline state directory"):
            return self._run_all()

    def _run_all(self) -> list[StageResult]:
        results: list[StageResult] = []
        if not self.dry_run:
            write_manifest(self.spec)
        for stage in self.spec.stages:
            step_offset = sum(trained_steps(result.output_dir) for result in results)
            results.append(self._run_stage(stage, results[-1] if results else None, step_offset))
            if stage.name == self.only:
                break
        else:
            if self.spec.eval is not None and self.only in (None, EVAL_STAGE):
                self._run_eval(results)
        self._say("dry run: nothing was launched" if self.dry_run else "done")
        return results
