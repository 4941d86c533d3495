"""Stop a run at the first optimizer step whose loss or gradient norm is NaN/inf, before that step is saved.

transformers keeps training through a non-finite loss: ``logging_nan_inf_filter`` even hides it from the logs, and
clipping an infinite gradient norm zeroes the update. The weights are NaN one step later, every later checkpoint is
worthless, and the final model is saved all the same. :class:`NonFiniteGuard` checks every optimizer step and raises
:class:`NonFiniteError` before ``Trainer`` saves anything of it, so the newest checkpoint is the last good one.

Where the values come from, without forking the training loop: ``Trainer.training_step`` (the documented override
point, wrapped on the instance) returns each micro-batch's loss; on the micro-batch that ends an accumulation
(``accelerator.sync_gradients``) the gradients are whole and not yet clipped — or, under DeepSpeed, the engine has just
stepped and reports their global norm (``get_global_grad_norm``). One all-gather of two numbers per optimizer step
makes every rank stop at the same step (a NaN on one rank alone would otherwise hang the others). With fp16 loss
scaling an overflowing gradient is the scaler's business (it skips the step), so only the loss is checked there.

:func:`check_finite_weights` is the last line: no model with a non-finite weight is saved as a run's output, whether
or not the guard is on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

from .checkpoints import newest_complete


class NonFiniteError(RuntimeError):
    """Training produced a NaN/inf loss, gradient norm or weight; the message says where and what to try."""


ADVICE = (
    "Try a lower learning_rate or a longer warmup, max_grad_norm > 0 (gradient clipping), bf16 instead of fp16, and "
    "look for empty or corrupt rows in the data; for TOFU/GEM check tofu_beta, tofu_gamma, gem_beta"
)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded, DTensor) gradient."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _gradient_norm(trainer: Any) -> torch.Tensor | None:
    """The global gradient norm of the step that is about to be taken (this rank's shard under FSDP)."""
    engine = trainer.model_wrapped
    if trainer.is_deepspeed_enabled:
        if engine.fp16_enabled():
            return None
        norm = engine.get_global_grad_norm()
        return None if norm is None else torch.as_tensor(float(norm))
    if getattr(trainer.accelerator, "scaler", None) is not None:
        return None  # scaled fp16 gradients: an overflow is the scaler's to skip
    grads = [_local(p.grad) for p in trainer.model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else None


class NonFiniteGuard(TrainerCallback):
    """Raise :class:`NonFiniteError` at the first optimizer step with a NaN/inf loss or gradient norm.

    Usage:
        >>> guard = NonFiniteGuard()
        >>> trainer = SFTTrainer(..., callbacks=[guard])
        >>> guard.bind(trainer)
        >>> trainer.train()  # NonFiniteError("optimizer step 7: loss = nan ...") instead of a NaN model
    """

    def __init__(self) -> None:
        self.trainer: Any = None
        self._losses: list[torch.Tensor] = []

    def bind(self, trainer: Any) -> NonFiniteGuard:
        """Watch ``trainer``'s micro-batch losses (its ``training_step``) and gradient norms; returns ``self``."""
        self.trainer = trainer
        training_step = trainer.training_step

        def guarded_training_step(*args: Any, **kwargs: Any) -> torch.Tensor:
            loss = training_step(*args, **kwargs)
            self._losses.append(loss.detach().float().reshape(()))
            if trainer.accelerator.sync_gradients:
                self._check_step()
            return loss

        trainer.training_step = guarded_training_step
        return self

    def _check_step(self) -> None:
        """Called on every rank at the end of an accumulation, before the optimizer step is saved."""
        trainer = self.trainer
        loss = torch.stack(self._losses).sum()
        self._losses = []
        norm = _gradient_norm(trainer)
        device = trainer.accelerator.device
        values = torch.stack([loss.to(device), (torch.zeros(()) if norm is None else norm).float().to(device)])
        gathered = trainer.accelerator.gather(values.reshape(1, 2)).reshape(-1, 2).tolist()
        bad = [(rank, *pair) for rank, pair in enumerate(gathered) if not all(math.isfinite(v) for v in pair)]
        if bad:
            raise NonFiniteError(self._message(bad, norm is not None))

    def _message(self, bad: list[tuple[int, float, float]], norm_checked: bool) -> str:
        trainer = self.trainer
        step = trainer.state.global_step + 1
        where = "; ".join(
            f"process {rank}: loss = {loss}" + (f", gradient norm = {norm}" if norm_checked else "")
            for rank, loss, norm in bad
        )
        newest = newest_complete(_output_dir(trainer))
        kept = f"the newest checkpoint is {newest}" if newest is not None else "no checkpoint was saved before it"
        return (
            f"optimizer step {step} is not finite ({where}). Training stopped before anything of this step was "
            f"saved: {kept}, and no final model was written. {ADVICE}. To train on through non-finite steps, set "
            "`stop_on_nonfinite: false` in the recipe."
        )


def _output_dir(trainer: Any) -> Path:
    return Path(trainer.args.output_dir)


def nonfinite_weights(trainer: Any) -> list[str]:
    """Names of the trainable model's parameters holding a NaN/inf on any rank (ZeRO-3: each rank checks its shard)."""
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    names = [n for n, p in model.named_parameters() if not torch.isfinite(_local(getattr(p, "ds_tensor", p))).all()]
    # gather_object, not gather_for_metrics: the latter cuts lists to the last batch's remainder
    return sorted({name for rank_names in gather_object([names]) for name in rank_names})


def check_finite_weights(trainer: Any) -> None:
    """Raise :class:`NonFiniteError` (on every rank) when the trained model holds a non-finite weight."""
    names = nonfinite_weights(trainer)
    if names:
        newest = newest_complete(_output_dir(trainer))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise NonFiniteError(
            f"the trained model has non-finite weights ({shown}); it was not saved as the run's output. "
            f"Newest checkpoint: {newest if newest is not None else 'none'} (with stop_on_nonfinite: false it may be "
            f"non-finite too). {ADVICE}."
        )
