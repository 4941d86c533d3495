"""Quiet runs: bitsandbytes' messages about its CPU 4-bit kernel are shown only to runs that load a model in 4 bits,
and transformers' loading bars only when loading takes a while.

peft imports bitsandbytes when it is imported (``peft.helpers``), and transformers imports peft, so every run imports
bitsandbytes. On a CPU with AVX512-BF16, bitsandbytes then fetches its CPU 4-bit matmul through the optional
``kernels`` package, which logs its own line on the way. Without ``kernels``: "Failed to load CPU gemm_4bit_forward
from kernels-community: No module named 'kernels'". With it (transformers 5.25 requires it) and the Hub offline:
"Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' because Hugging Face Hub is in
offline mode", then the same "Failed to load" line with another reason. All are about 4-bit loading, which most runs
never do. ``import divalign`` puts a filter on those two loggers that holds back those messages; a run whose recipe
asks for ``load_in_4bit`` shows them (:func:`show_held_4bit_warnings`). Every other message of these loggers, and
these ones when bitsandbytes was imported before divalign, passes as usual.
"""

from __future__ import annotations

import logging
from typing import Any

# The loggers (their modules' ``__name__``) and the opening of each message held: ``kernels._internals.hf_hub`` is
# private to ``kernels``; tests/test_quiet.py shows each message without divalign and its absence with it.
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
GEMM_4BIT_MESSAGE = "Failed to load CPU gemm_4bit_forward"
KERNELS_HUB_LOGGER = "kernels._internals.hf_hub"
BNB_KERNEL_TRUST_MESSAGE = "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"
HELD_MESSAGES = {BNB_CPU_LOGGER: GEMM_4BIT_MESSAGE, KERNELS_HUB_LOGGER: BNB_KERNEL_TRUST_MESSAGE}


class HoldMessage(logging.Filter):
    """Holds the records of one logger that start with ``opening`` in ``held`` (shared by all the holds, so the
    records keep the order they were logged in) instead of letting them through."""

    def __init__(self, opening: str, held: list[logging.LogRecord]) -> None:
        super().__init__()
        self.opening = opening
        self.held = held

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.opening):
            self.held.append(record)
            return False
        return True


_HELD: list[logging.LogRecord] = []
_HOLDS = {name: HoldMessage(opening, _HELD) for name, opening in HELD_MESSAGES.items()}


def hold_4bit_warnings() -> None:
    """Hold back the 4-bit kernel messages from now on (before bitsandbytes is imported)."""
    for name, hold in _HOLDS.items():
        logger = logging.getLogger(name)
        if hold not in logger.filters:
            logger.addFilter(hold)


def show_held_4bit_warnings() -> None:
    """4-bit loading is asked for: show the held messages, in the order they were logged, and let later ones
    through."""
    for name, hold in _HOLDS.items():
        logging.getLogger(name).removeFilter(hold)
    held = list(_HELD)
    _HELD.clear()
    for record in held:
        logging.getLogger(record.name).handle(record)


# ---------------------------------------------------------------------------------------------------------------
# transformers' loading bars

LOADING_BAR_DELAY_S = 2.0


def quiet_loading_bars(delay: float = LOADING_BAR_DELAY_S) -> None:
    """transformers' own progress bars ("Loading weights" at every `from_pretrained`, "Writing model shards" at
    every save) appear only once that work has lasted `delay` seconds.

    A small model loads in a fraction of a second, so a run that loads dozens (the toy demo, an evaluation with an
    embedder) would print a bar for each; a 7B checkpoint that takes a minute still shows its bar. It goes through
    transformers' public `set_tqdm_hook` (tqdm's `delay`), on top of any hook already set; calling it again changes
    nothing. Downloads (huggingface_hub's bars) are untouched.
    """
    from transformers.utils import logging as hf_logging

    previous = hf_logging.set_tqdm_hook(None)
    if getattr(previous, "divalign_quiet", False):
        hf_logging.set_tqdm_hook(previous)
        return

    def delayed(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs = {"delay": delay, **kwargs}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    delayed.divalign_quiet = True  # type: ignore[attr-defined]
    hf_logging.set_tqdm_hook(delayed)
