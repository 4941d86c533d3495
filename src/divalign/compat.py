"""Every private name of TRL and transformers that divalign touches, in one place.

divalign subclasses TRL's trainers; a few things it needs have no public API. Each is reached only through this
module, and ``tests/test_compat.py`` checks each one against the installed versions, so an upgrade that renames or
removes one fails there with the name, instead of somewhere inside a training run. pyproject pins TRL to the minor
version these were checked on.

Touch points:

- ``SFTTrainer._metrics`` / ``GRPOTrainer._metrics``: per-mode lists of values TRL averages into its next log entry;
  the loss-head trainer and GRPO's rollout diversity append to them, the diversity callback hides them around its own
  ``log`` call.
- ``SFTTrainer._total_train_tokens``: TRL's running ``num_tokens`` count, which the loss-head trainer keeps up to date
  as TRL's own ``compute_loss`` does.
- ``GRPOTrainer._calculate_rewards``: the step where a generation batch's completions are scored; divalign's GRPO
  trainer extends it to log rollout diversity (checked by :func:`check_grpo_reward_hook`).
- ``trl.trainer.sft_trainer.BaseTunerLayer``: the class TRL's ``SFTTrainer.__init__`` uses to refuse a PEFT adapter on
  ``lm_head``; the loss-head trainer lifts that refusal while TRL's constructor runs (:func:`trl_lm_head_adapter_check_lifted`).
- ``trl.trainer.utils.maybe_gather_lm_head_ctx`` and ``create_model_from_path``: module-level helpers TRL does not
  export.
- ``transformers.integrations.deepspeed._hf_deepspeed_config_weak_ref``: the running ZeRO-3 config, unset while a
  helper model loads whole (:func:`active_hf_deepspeed_config`).
- ``transformers.integrations.WandbCallback._initialized``: whether the callback has run its lazy ``setup`` (the
  W&B ``init``); divalign's dashboard callback, which logs its own rows, sets it up the same way
  (:func:`wandb_callback_set_up`).
- transformers' name for a key/value cache in model outputs and ``generate`` (``past_key_values``, renamed
  ``cache`` in a 5.x release that deprecates the old name): :func:`model_output_cache` and
  :func:`generate_cache_kwargs` use the installed one.
- DeepSpeed ZeRO-3's parameter-offload internals (the root forward pre-hook, the coordinator's ``_invalidate_trace``):
  lifted and reset around generation with gathered weights (:func:`zero3_generation_state`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch

TESTED_TRL = "1.16"


class CompatError(RuntimeError):
    """An installed TRL/transformers lacks a name divalign relies on."""


def _missing(what: str) -> CompatError:
    import transformers
    import trl

    return CompatError(
        f"{what} is missing in the installed trl {trl.__version__} / transformers {transformers.__version__}; "
        f"divalign was checked against trl {TESTED_TRL}.x (see divalign.compat)"
    )


# --- TRL trainer state --------------------------------------------------------------------------------------------


def trainer_metrics(trainer: Any, mode: str) -> defaultdict[str, list]:
    """TRL's ``trainer._metrics[mode]``: values appended here are averaged into the trainer's next log entry."""
    metrics = getattr(trainer, "_metrics", None)
    if not isinstance(metrics, dict) or mode not in metrics:
        raise _missing(f"{type(trainer).__name__}._metrics[{mode!r}]")
    return metrics[mode]


@contextlib.contextmanager
def trainer_metrics_hidden(trainer: Any) -> Iterator[None]:
    """Hide TRL's accumulated ``_metrics`` during a foreign ``log`` call: TRL's ``log`` merges and clears them, which
    would move the training metrics into that entry and drop them from the next training-loss entry. A trainer
    without them (a plain transformers ``Trainer``) is left alone."""
    saved = getattr(trainer, "_metrics", None)
    if not isinstance(saved, dict):
        yield
        return
    trainer._metrics = {mode: defaultdict(list) for mode in saved}
    try:
        yield
    finally:
        trainer._metrics = saved


def add_train_tokens(trainer: Any, count: int) -> int:
    """Add ``count`` to TRL's running ``num_tokens`` (``trainer._total_train_tokens``); returns the new total."""
    if not isinstance(getattr(trainer, "_total_train_tokens", None), int | float):
        raise _missing(f"{type(trainer).__name__}._total_train_tokens")
    trainer._total_train_tokens += count
    return trainer._total_train_tokens


def total_train_tokens(trainer: Any) -> int:
    """TRL's running ``num_tokens`` count."""
    return add_train_tokens(trainer, 0)


GRPO_REWARD_HOOK = "_calculate_rewards"
GRPO_REWARD_HOOK_PARAMETERS = ("inputs", "prompts", "completions", "completion_ids_list")


def check_grpo_reward_hook(grpo_trainer_class: type) -> None:
    """Raise unless TRL's GRPO trainer scores rewards in ``_calculate_rewards(inputs, prompts, completions,
    completion_ids_list)``, the method divalign's GRPO trainer extends."""
    method = getattr(grpo_trainer_class, GRPO_REWARD_HOOK, None)
    if method is None:
        raise _missing(f"{grpo_trainer_class.__name__}.{GRPO_REWARD_HOOK}")
    parameters = tuple(inspect.signature(method).parameters)[1:]
    if parameters != GRPO_REWARD_HOOK_PARAMETERS:
        raise _missing(f"{grpo_trainer_class.__name__}.{GRPO_REWARD_HOOK}{GRPO_REWARD_HOOK_PARAMETERS}")


# --- TRL module-level helpers -------------------------------------------------------------------------------------


def _trl_utils() -> Any:
    from trl.trainer import utils

    return utils


def gather_zero3_params(*params: torch.Tensor) -> AbstractContextManager:
    """TRL's ``maybe_gather_lm_head_ctx``: all-gather ZeRO-3 shards of tensors read directly (not through their
    module's forward) for the duration of the context."""
    gather = getattr(_trl_utils(), "maybe_gather_lm_head_ctx", None)
    if gather is None:
        raise _missing("trl.trainer.utils.maybe_gather_lm_head_ctx")
    return gather(*params)


def create_model_from_path(model_id: str, **init_kwargs: Any) -> Any:
    """TRL's ``create_model_from_path``: the model as TRL's trainers load a path (dtype strings, device map)."""
    create = getattr(_trl_utils(), "create_model_from_path", None)
    if create is None:
        raise _missing("trl.trainer.utils.create_model_from_path")
    return create(model_id, **init_kwargs)


class _NotATunerLayer:
    """Stands in for PEFT's ``BaseTunerLayer`` in TRL's head check: nothing is an instance of it."""


@contextlib.contextmanager
def trl_lm_head_adapter_check_lifted() -> Iterator[None]:
    """Lift TRL's refusal of a PEFT adapter on ``lm_head`` while ``SFTTrainer.__init__`` runs.

    TRL refuses it because *its* fused head reads ``lm_head.weight`` and would skip the adapter. divalign's loss head
    never uses TRL's head: it resolves the adapter itself (:mod:`divalign.heads.operands`) and refuses, right after,
    what it cannot reproduce exactly. If TRL's check moves, it stays in force and LoRA on the head is refused by TRL
    (``tests/test_compat.py`` then fails, naming this touch point).
    """
    from unittest import mock

    from trl.trainer import sft_trainer

    if not hasattr(sft_trainer, "BaseTunerLayer"):
        yield
        return
    with mock.patch.object(sft_trainer, "BaseTunerLayer", _NotATunerLayer):
        yield


# --- transformers' DeepSpeed integration --------------------------------------------------------------------------


def active_hf_deepspeed_config() -> Any | None:
    """The ``HfDeepSpeedConfig`` transformers consults in ``from_pretrained`` (ZeRO-3 partitioning at load), or None.

    transformers exposes ``set_hf_deepspeed_config`` / ``unset_hf_deepspeed_config`` but no getter; the object lives
    in a module-level weak reference.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    if not hasattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref"):
        raise _missing("transformers.integrations.deepspeed._hf_deepspeed_config_weak_ref")
    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    return ref() if ref is not None else None


# --- transformers' W&B integration -------------------------------------------------------------------------------


def wandb_callback_set_up(callback: Any, args: Any, state: Any, model: Any) -> None:
    """Run a ``WandbCallback``'s ``setup`` (W&B ``init``, run config, default axis) unless it already ran: what its own
    ``on_log`` does first, kept in its private ``_initialized`` flag."""
    if not hasattr(callback, "_initialized"):
        raise _missing(f"{type(callback).__name__}._initialized")
    if not callback._initialized:
        callback.setup(args, state, model)


# --- TRL's argument parser ----------------------------------------------------------------------------------------


def multi_value_flags(parser: Any) -> frozenset[str]:
    """Flags a ``TrlParser`` reads as several values (``--lora_target_modules q_proj v_proj``, the list-typed fields),
    from the argparse actions it registered (argparse keeps them in its private ``_actions``)."""
    actions = getattr(parser, "_actions", None)
    if actions is None:
        raise _missing(f"{type(parser).__name__}._actions")
    return frozenset(action.dest for action in actions if action.nargs in ("+", "*"))


# --- transformers' cache keyword ------------------------------------------------------------------------------------


def _cache_keyword() -> str:
    from transformers import GenerationMixin

    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def model_output_cache(outputs: Any) -> Any:
    """The key/value cache a forward with ``use_cache=True`` returned (None if it returned none)."""
    return outputs.get(_cache_keyword())


def generate_cache_kwargs(cache: Any) -> dict[str, Any]:
    """The ``generate`` keyword that hands it a cache to continue from; nothing for no cache."""
    return {} if cache is None else {_cache_keyword(): cache}


# --- DeepSpeed ZeRO-3 internals -------------------------------------------------------------------------------


@contextlib.contextmanager
def zero3_generation_state(engine: Any, gathered: bool) -> Iterator[None]:
    """Keep ZeRO-3's parameter bookkeeping out of a generation's way (a no-op without ZeRO-3); reaches DeepSpeed's
    private parameter-offload state (its root forward pre-hook and its coordinator's trace; docs/distributed.md,
    "Generation under ZeRO-3").

    - With gathered weights, also lift the root pre-forward hook (TRL's `remove_hooks` leaves it): it resets the
      parameter coordinator at every forward and, while that has no complete trace, broadcasts to check the ranks
      agree — a collective in every forward, which hangs the ranks as soon as one generates more often than another
      (a rank with fewer prompt batches, or none). It is put back first in line, where DeepSpeed put it.
    - Afterwards, invalidate the coordinator's recorded module trace (as TRL's `add_hooks` does): the generation's
      forwards would otherwise stand as the trace of a training step, and before the first step that releases
      parameters the backward still needs (DeepSpeed 0.19: "size of tensor a (0) must match ...").
    """
    offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
    coordinator = getattr(offload, "param_coordinator", None)
    if coordinator is None:
        yield
        return
    handle = getattr(offload, "fwd_pre_hook", None) if gathered else None
    hook = offload.module._forward_pre_hooks.get(handle.id) if handle is not None else None
    if hook is not None:
        handle.remove()
    try:
        yield
    finally:
        if hook is not None:
            offload.fwd_pre_hook = offload.module.register_forward_pre_hook(hook, prepend=True)
        if not coordinator.is_invalid_trace():
            coordinator._invalidate_trace()
