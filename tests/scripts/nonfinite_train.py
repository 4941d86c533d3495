"""`python -m divalign.train` with a NaN/inf forced into one optimizer step: the test-only hook of the non-finite tests.

    [accelerate launch ...] nonfinite_train.py STEP KIND RANK RECIPE.yaml [--key value ...]

KIND `loss`: the loss of every micro-batch of optimizer step STEP is multiplied by NaN; KIND `grad`: the loss stays
finite and the LM head's gradient becomes inf in that step. RANK: the process it happens on (`all` for every one).
Imported by tests/test_nonfinite_guard.py for the in-process runs (`poisoned`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from divalign.launch import train


def _in_step(trainer: Any, step: int, rank: str) -> bool:
    on_rank = rank == "all" or trainer.accelerator.process_index == int(rank)
    return on_rank and trainer.state.global_step + 1 == step


def poisoned(build: Callable[[Any], Any], step: int, kind: str, rank: str = "all") -> Callable[[Any], Any]:
    """Wrap a stage builder so that optimizer step ``step`` of its trainer goes non-finite as ``kind`` says."""

    def build_poisoned(run: Any) -> Any:
        trainer = build(run)
        if kind == "grad":  # finite loss, infinite gradient: the head's gradient is scaled by inf on its way back
            head = trainer.accelerator.unwrap_model(trainer.model).get_output_embeddings().weight
            head.register_hook(lambda grad: grad * float("inf") if _in_step(trainer, step, rank) else grad)
            return trainer
        compute_loss = trainer.compute_loss

        def compute_poisoned_loss(*args: Any, **kwargs: Any) -> Any:
            output = compute_loss(*args, **kwargs)
            if not (trainer.model.training and _in_step(trainer, step, rank)):
                return output
            if isinstance(output, tuple):
                return (output[0] * float("nan"), *output[1:])
            return output * float("nan")

        trainer.compute_loss = compute_poisoned_loss
        return trainer

    return build_poisoned


def main(argv: list[str]) -> int:
    step, kind, rank, *rest = argv
    for name, stage in list(train.STAGES.items()):
        train.STAGES[name] = dataclasses.replace(stage, build=poisoned(stage.build, int(step), kind, rank))
    return train.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
