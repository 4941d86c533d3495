"""What the stage builders share: model-loading keys from the recipe and callbacks bound to their trainer."""

from __future__ import annotations

from typing import Any


def model_init_kwargs(run: Any) -> dict:
    """The recipe's model-loading keys (revision, dtype, attention), as `divalign.train` passes them to SFT."""
    from divalign.train import _model_init_kwargs  # here: divalign.train imports this package

    return _model_init_kwargs(run.training_args, run.model_args)


def bind_callbacks(trainer: Any, callbacks: list) -> Any:
    """Bind the callbacks that log through their trainer (the `DiversityCallback`) to ``trainer``; returns it."""
    for callback in callbacks:
        if hasattr(callback, "bind") and getattr(callback, "trainer", None) is None:
            callback.bind(trainer)
    return trainer
