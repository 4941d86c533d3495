"""A real pretrained model, offline (`make demo-real`): open-ended prompts with known finite sets of valid answers.

Modules: :mod:`~divalign.realworld.catalog` (the valid sets), :mod:`~divalign.realworld.verifier`,
:mod:`~divalign.realworld.world` (SFT data, prompts), :mod:`~divalign.realworld.convert` (the GGUF checkpoint),
:mod:`~divalign.realworld.answer_metrics`, :mod:`~divalign.realworld.report` (what the verifier adds to
`divalign compare`'s report), :mod:`~divalign.realworld.demo` (``make demo-real``: ``recipes/compare/real.yaml``).
"""
