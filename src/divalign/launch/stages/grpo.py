"""The `grpo` stage: GRPO with rewards named in the recipe and `diversity/rollout/*` metrics.

With TRL's default ``beta: 0.0`` the objective has no KL term and no reference model is loaded (the KL-free setting
of DAPO, Yu et al., arXiv 2503.14476, and Dr. GRPO, Liu et al., arXiv 2503.20783); the stage checks that the built
trainer holds none, since a reference copy of a 7B policy is a silent doubling of memory.
"""

from __future__ import annotations

from typing import Any

from ...rewards import build_all, required_columns
from ...trainers.grpo_trainer import DivGRPOTrainer
from .common import build_trainer


def columns(training_args: Any) -> list[tuple[str, ...]]:
    """`prompt`, plus the columns the rewards read (e.g. `answer` or `solution` for math_answer)."""
    rewards = build_all(training_args.reward_specs, training_args.num_generations)
    return [tuple(dict.fromkeys(("prompt", *option))) for option in required_columns(rewards)]


def check_reference_model(trainer: DivGRPOTrainer) -> None:
    """A KL-free run (``beta == 0``) must not hold a reference model."""
    if trainer.beta == 0.0 and trainer.ref_model is not None:
        raise RuntimeError("beta is 0.0 (KL-free GRPO) but the trainer loaded a reference model")


def build(run: Any) -> DivGRPOTrainer:
    args = run.training_args
    trainer = build_trainer(DivGRPOTrainer, run, reward_funcs=build_all(args.reward_specs, args.num_generations))
    check_reference_model(trainer)
    return trainer
