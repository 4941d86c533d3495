"""The training callback: diversity (and quality) curves of a fixed probe set while a trainer trains.

`DiversityCallback` (callback.py) samples the probe prompts (probes.py) through `divalign.generation`, scores them with
the metrics library (`divalign.diversity`) and the quality (`divalign.rewards.quality`) in probe_scores.py, and keeps
its step-0 reference, alerts and stop in the trainer state (state.py); `DiversityConfig` (config.py) is a recipe's
`diversity:` block.
"""

from .callback import DiversityCallback
from .config import DiversityConfig
from .probes import load_probe_records

__all__ = ["DiversityCallback", "DiversityConfig", "load_probe_records"]
