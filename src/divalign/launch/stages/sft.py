"""SFT stages (`sft`, `tofu`, `gem`): TRL's SFTTrainer or a divalign subclass, from a model id or a previous stage."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .common import build_trainer


def columns(training_args: Any) -> list[tuple[str, ...]]:
    """Conversations, prompt/completion pairs, or plain text in ``dataset_text_field``."""
    return [("messages",), ("prompt", "completion"), (training_args.dataset_text_field,)]


def builder(trainer_class: type) -> Callable[[Any], Any]:
    """A stage builder that constructs ``trainer_class`` (an ``SFTTrainer``) from a stage run."""
    return functools.partial(build_trainer, trainer_class)
