"""divalign: alignment recipes that keep large language models diverse.

The trainers import TRL, transformers and peft; they load on first use so that `divalign eval`/`plot` and the
metrics start quickly.
"""

from importlib import import_module
from importlib.metadata import version

__version__ = version("divalign")

_LAZY = {
    "GEMConfig": "divalign.gem_config",
    "GEMTrainer": "divalign.gem_trainer",
    "TOFUConfig": "divalign.tofu_config",
    "TOFUTrainer": "divalign.tofu_trainer",
    "LossSpec": "divalign.losses",
    "gem_per_token": "divalign.losses",
    "tofu_per_token": "divalign.losses",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'divalign' has no attribute {name!r}")
