"""Offline diversity evaluation of a model lineage (e.g. base → SFT → DPO): `divalign eval` and `evaluate_lineage`.

Each model samples K completions per prompt through `divalign.generation` (the sampling path of the training
callback: neutral settings, noise keyed by seed and prompt); `divalign.diversity` scores them; results are written as
JSON, a markdown table with bootstrap CIs over prompts, and a PNG grid across the lineage. With a verifier it also
reports quality, diversity over correct samples only, and the quality-control vs narrowing split of Karouzos et al.
("Where does output diversity collapse in post-training?", arXiv 2604.16027). With several `--temperatures` it
draws each model's quality–diversity frontier and compares the models at matched diversity (`frontier`). With an
embedder it also reports genuine vs surface diversity: semantic clusters per prompt (a metric), the lineage's
cross-model similarity matrix and each model's within-prompt share of spread (`semantic_views`). `--profile` picks
the metric conventions (`divalign.diversity.profile`); every table says which.
"""

from ..lazy_exports import lazy_getattr
from .command import add_parser, parse_model_spec, run
from .options import EvalOptions

# torch and transformers load with these, on first use: `divalign --help` registers the subcommand without them
_LAZY = {"evaluate_lineage": ".lineage", "load_prompts": "..prompts"}

__all__ = ["EvalOptions", "add_parser", "evaluate_lineage", "load_prompts", "parse_model_spec", "run"]


__getattr__ = lazy_getattr(__name__, _LAZY)
