"""An offline toy world with a known answer distribution, where SFT diversity collapse can be seen and measured.

Modules: :mod:`~divalign.toyworld.world` (prompts, truth, corpora), :mod:`~divalign.toyworld.tokenizer`,
:mod:`~divalign.toyworld.pretrain` (tiny base model), :mod:`~divalign.toyworld.truth_metrics`,
:mod:`~divalign.toyworld.evaluate` (scoring a model), :mod:`~divalign.toyworld.truth_table` (a compare run against
the truth), :mod:`~divalign.toyworld.demo` (``make demo``).
"""
