"""The probe prompts of the training-time diversity evaluations: the first `num_prompts` records of the `diversity:`
block's `prompts`, read by the loader `divalign eval` uses (:mod:`divalign.prompts`) and checked against the quality's
columns. Read once per run (`divalign train` reads them before the model loads and hands them to the callback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..prompts import PromptRecord, load_prompts

if TYPE_CHECKING:
    from .config import DiversityConfig


def load_probe_records(config: DiversityConfig) -> list[PromptRecord]:
    """The first `config.num_prompts` probe records (the prompt and the record's other fields); with a `quality`, every
    record must hold the columns its reward reads (a `ValueError` names the file, the record and the column)."""
    records = load_prompts(
        config.prompts, split=config.prompts_split, column=config.prompts_column, limit=config.num_prompts
    )
    if config.parsed_quality is not None:
        config.parsed_quality.check_columns([r.columns for r in records], config.prompts)
    return records
