"""divalign: alignment recipes that keep large language models diverse."""

from importlib.metadata import version

from .gem_config import GEMConfig
from .gem_trainer import GEMTrainer
from .losses import LossSpec, gem_per_token, tofu_per_token
from .tofu_config import TOFUConfig
from .tofu_trainer import TOFUTrainer

__version__ = version("divalign")

__all__ = ["GEMConfig", "GEMTrainer", "LossSpec", "TOFUConfig", "TOFUTrainer", "gem_per_token", "tofu_per_token"]
