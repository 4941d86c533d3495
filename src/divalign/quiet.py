"""Quiet runs: bitsandbytes' warning about its CPU 4-bit kernel is shown only to runs that load a model in 4 bits, and
transformers' loading bars only when loading takes a while.

peft imports bitsandbytes when it is imported (``peft.helpers``), and transformers imports peft, so every run imports
bitsandbytes. On a CPU with AVX512-BF16, bitsandbytes then looks for its CPU 4-bit matmul in the optional ``kernels``
package and, without it, logs "Failed to load CPU gemm_4bit_forward from kernels-community: No module named
'kernels'" — about 4-bit loading, which most runs never do. ``import divalign`` puts a filter on that one logger that
holds back that one message; a run whose recipe asks for ``load_in_4bit`` shows it (:func:`show_held_4bit_warnings`).
Every other bitsandbytes message, and this one when bitsandbytes was imported before divalign, passes as usual.
"""

from __future__ import annotations

import logging
from typing import Any

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
GEMM_4BIT_MESSAGE = "Failed to load CPU gemm_4bit_forward"


class HoldGemm4bitWarning(logging.Filter):
    """Holds the records of bitsandbytes' missing CPU 4-bit kernel instead of letting them through."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(GEMM_4BIT_MESSAGE):
            self.held.append(record)
            return False
        return True


_HOLD = HoldGemm4bitWarning()


def hold_4bit_warnings() -> None:
    """Hold back the 4-bit kernel warning from now on (before bitsandbytes is imported)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if _HOLD not in logger.filters:
        logger.addFilter(_HOLD)


def show_held_4bit_warnings() -> None:
    """4-bit loading is asked for: show the held warnings, and let later ones through."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    logger.removeFilter(_HOLD)
    held, _HOLD.held = _HOLD.held, []
    for record in held:
        logger.handle(record)


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
