"""A real pretrained model, offline (`make demo-real`): open-ended prompts with known finite sets of valid answers.

Modules: :mod:`~divalign.realworld.catalog` (the valid sets), :mod:`~divalign.realworld.verifier`,
:mod:`~divalign.realworld.world` (SFT data, prompts), :mod:`~divalign.realworld.convert` (the GGUF checkpoint),
:mod:`~divalign.realworld.answer_metrics`, :mod:`~divalign.realworld.evaluate` (`divalign eval` runs),
:mod:`~divalign.realworld.frontier`, :mod:`~divalign.realworld.seed_differences`, :mod:`~divalign.realworld.plots`,
:mod:`~divalign.realworld.report`, :mod:`~divalign.realworld.demo` (``make demo-real``).
"""
