"""divalign: alignment recipes that keep large language models diverse.

The trainers, configs and the diversity callback import TRL, transformers and peft; they load on first use so that
`divalign eval`/`plot` and the metrics start quickly. What a training script of your own needs:

    from divalign import DiversityCallback, DiversityConfig, TOFUConfig, TOFUTrainer, compute_diversity
"""

from importlib.metadata import version

from .lazy_exports import lazy_getattr
from .quiet import hold_4bit_warnings

__version__ = version("divalign")

hold_4bit_warnings()  # before anything imports bitsandbytes (divalign.quiet)

_LAZY = {
    "GEMConfig": "divalign.trainers.gem_config",
    "GEMTrainer": "divalign.trainers.gem_trainer",
    "TOFUConfig": "divalign.trainers.tofu_config",
    "TOFUTrainer": "divalign.trainers.tofu_trainer",
    "DivGRPOConfig": "divalign.trainers.grpo_config",
    "DivGRPOTrainer": "divalign.trainers.grpo_trainer",
    "DiversityCallback": "divalign.callback",
    "DiversityConfig": "divalign.callback",
    "compute_diversity": "divalign.diversity",
    "LossSpec": "divalign.heads.losses",
    "gem_per_token": "divalign.heads.losses",
    "tofu_per_token": "divalign.heads.losses",
}
__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
