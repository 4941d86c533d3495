"""The loss heads: the per-token TOFU/GEM/CE formulas and the LM heads that evaluate them (docs/losses.md).

- :mod:`~divalign.heads.losses`: the per-token formulas, plain PyTorch (the references);
  :mod:`~divalign.heads.hyperparameters`: the checks of their β and γ;
- :mod:`~divalign.heads.projection`: what every head shares (the projection, the model's logit transform, the
  per-token results, ZeRO-3 gathering of the head);
- :mod:`~divalign.heads.chunked`: the reference head, row chunks over the full vocabulary, autograd backward;
- :mod:`~divalign.heads.tiled`: the vocabulary-tiled autograd Function and its :class:`~divalign.heads.tiled.
  TileBackend` interface, implemented in PyTorch by :mod:`~divalign.heads.torch_tiles` and with Triton kernels by
  :mod:`~divalign.heads.triton_tiles`;
- :mod:`~divalign.heads.registry`: the mode names and :func:`~divalign.heads.registry.select_head`;
- :mod:`~divalign.heads.operands`: the LM head's weight and bias with PEFT's wrappers resolved;
- :mod:`~divalign.heads.forward_patch`: the head inside the model's forward (``model(..., loss_head=True)``).

Nothing is imported here, so a config can read the mode names without loading a kernel.
"""
