"""Hyper-parameters changed on resume (``resume_with_changes: true``): applied to the restored training state, or
refused when they cannot take effect.

transformers rebuilds the optimizer and the scheduler from the new values, then loads their state from the checkpoint
over them: the optimizer's parameter groups get back the learning rate, betas, epsilon and weight decay the run was
saved with, and a ``LambdaLR`` schedule its base learning rates. A new ``learning_rate`` would be recorded and never
used. So:

- ``learning_rate`` is applied (:class:`ApplyLearningRate`): every restored base learning rate is scaled by new/old
  (per-group ratios such as LoRA+'s are kept) and the current rate recomputed from the schedule at the restored step.
  The schedule's shape (``lr_scheduler_type`` among the ``LambdaLR`` schedules, warm-up, ``max_steps``, its kwargs) is
  already the new one: transformers builds its function from the new values and the checkpoint stores only the step.
- the keys of :data:`FIXED_BY_CHECKPOINT` are refused, naming them: the checkpoint's optimizer state (its kind and
  the values stored in its parameter groups) or its adapter weights' shapes would override them; so is a change of
  ``lr_scheduler_type`` to or from one whose scheduler is not a ``LambdaLR`` (:data:`STATEFUL_SCHEDULERS`), whose
  saved state another scheduler cannot take.
- every other key (data, lengths, seeds, epochs, the loss) takes effect as the resumed run reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from .recipe import RecipeError

_OPTIMIZER_STATE = "stored in the checkpoint's optimizer state, which the resume restores over it"
FIXED_BY_CHECKPOINT = {
    "optim": "the checkpoint's optimizer state belongs to the optimizer the run started with",
    "optim_args": "the checkpoint's optimizer state belongs to the optimizer the run started with",
    "optim_target_modules": "the checkpoint's optimizer state covers the parameters the run started with",
    "weight_decay": _OPTIMIZER_STATE,
    "adam_beta1": _OPTIMIZER_STATE,
    "adam_beta2": _OPTIMIZER_STATE,
    "adam_epsilon": _OPTIMIZER_STATE,
    "use_peft": "the checkpoint holds the weights (full model or adapter) the run started with",
    "lora_r": "the checkpoint's adapter weights have the run's rank",
    "lora_target_modules": "the checkpoint's adapter weights sit on the modules the run started with",
    "lora_modules_to_save": "the checkpoint's adapter weights cover the modules the run started with",
}
STATEFUL_SCHEDULERS = ("reduce_lr_on_plateau", "greedy")  # not LambdaLR: their saved state fits only themselves


def _scheduler_change_refused(change: Mapping[str, Any]) -> bool:
    before, after = change["before"], change["after"]
    return before != after and (before in STATEFUL_SCHEDULERS or after in STATEFUL_SCHEDULERS)


def refuse_ineffective(changes: Mapping[str, Mapping[str, Any]], checkpoint: str) -> None:
    """Raise a :class:`~divalign.launch.recipe.RecipeError` naming every change in ``changes`` (``{key: {"before",
    "after"}}``) that cannot take effect on a resume from ``checkpoint``."""
    refused = {key: FIXED_BY_CHECKPOINT[key] for key in changes if key in FIXED_BY_CHECKPOINT}
    if "lr_scheduler_type" in changes and _scheduler_change_refused(changes["lr_scheduler_type"]):
        refused["lr_scheduler_type"] = "the checkpoint's scheduler state fits only the scheduler the run started with"
    if refused:
        listed = "; ".join(
            f"{key}: {changes[key]['before']!r} -> {changes[key]['after']!r} ({why})" for key, why in refused.items()
        )
        raise RecipeError(
            f"resuming {checkpoint}: these changes cannot take effect on a resume ({listed}). Resume with the values "
            f"the run started with, or start a new run from the checkpoint (--model_name_or_path {checkpoint})"
        )


def _unwrapped(scheduler: Any) -> Any:
    """The torch scheduler inside accelerate's or DeepSpeed's wrapper."""
    while hasattr(scheduler, "scheduler") and not hasattr(scheduler, "base_lrs"):
        scheduler = scheduler.scheduler
    return scheduler


class ApplyLearningRate(TrainerCallback):
    """Apply a learning rate changed on resume to the optimizer and scheduler the checkpoint restored (at train begin,
    after transformers has loaded their state)."""

    def __init__(self, before: float, after: float):
        self.before, self.after = float(before), float(after)

    def _rescaled(self, rate: float) -> float:
        return rate * self.after / self.before if self.before else self.after

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer, scheduler = kwargs.get("optimizer"), _unwrapped(kwargs.get("lr_scheduler"))
        base_lrs = getattr(scheduler, "base_lrs", None)
        lambdas = getattr(scheduler, "lr_lambdas", None)
        for index, group in enumerate(optimizer.param_groups):
            if base_lrs is None:  # a scheduler without base rates (reduce_lr_on_plateau): rescale the current rate
                group["lr"] = self._rescaled(group["lr"])
                continue
            base_lrs[index] = self._rescaled(base_lrs[index])
            group["initial_lr"] = base_lrs[index]
            # LambdaLR: the rate is base × the schedule at the restored step; any other: rescale the current rate
            scheduled = lambdas is not None
            group["lr"] = (
                base_lrs[index] * lambdas[index](scheduler.last_epoch) if scheduled else self._rescaled(group["lr"])
            )
        if base_lrs is not None:
            # The rate transformers logs for the next step is the scheduler's last one, restored from the checkpoint
            # with the rest of its state: set it through the same state-dict interface
            scheduler.load_state_dict({**scheduler.state_dict(), "_last_lr": [g["lr"] for g in optimizer.param_groups]})
