"""The loss heads: the per-token TOFU/GEM/CE formulas and the LM heads that evaluate them (docs/losses.md).

- :mod:`~divalign.heads.losses`: the per-token formulas, plain PyTorch (the references);
  :mod:`~divalign.heads.hyperparameters`: the checks of their β and γ.

Nothing is imported here, so importing one module of the package loads only what that module needs.
"""
