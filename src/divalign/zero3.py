"""DeepSpeed ZeRO-3 helpers for models that live outside the trained engine (embedders, reward models); why they
load whole: docs/distributed.md, "ZeRO-3 partitions at load"."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def whole_model_loading() -> Iterator[None]:
    """Load a model whole while the policy trains under ZeRO-3.

    Inside a ZeRO-3 run, transformers' ``from_pretrained`` partitions a new model with ``zero.Init``: a collective
    every rank must enter, leaving empty parameters only a DeepSpeed engine can use. A helper model used outside the
    engine (by one rank, or by each rank on its own) must load unpartitioned, so the run's DeepSpeed config is
    unset for the duration (:func:`divalign.compat.active_hf_deepspeed_config` finds it).

    transformers' public ``is_deepspeed_zero3_enabled`` / ``deepspeed_config`` give the flag and the config dict, not
    the ``HfDeepSpeedConfig`` object to set back: transformers holds it by a weak reference, so one rebuilt from the
    dict would be collected at once and ZeRO-3 partitioning silently off for every later ``from_pretrained``
    (``tests/test_compat.py::test_a_rebuilt_deepspeed_config_does_not_stay_active``).
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    from .compat import active_hf_deepspeed_config

    active = active_hf_deepspeed_config()
    if active is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(active)
