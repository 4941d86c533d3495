"""Quiet runs: bitsandbytes' warning about its CPU 4-bit kernel is shown only to runs that load a model in 4 bits.

peft imports bitsandbytes when it is imported (``peft.helpers``), and transformers imports peft, so every run imports
bitsandbytes. On a CPU with AVX512-BF16, bitsandbytes then looks for its CPU 4-bit matmul in the optional ``kernels``
package and, without it, logs "Failed to load CPU gemm_4bit_forward from kernels-community: No module named
'kernels'" — about 4-bit loading, which most runs never do. ``import divalign`` puts a filter on that one logger that
holds back that one message; a run whose recipe asks for ``load_in_4bit`` shows it (:func:`show_held_4bit_warnings`).
Every other bitsandbytes message, and this one when bitsandbytes was imported before divalign, passes as usual.
"""

from __future__ import annotations

import logging

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
