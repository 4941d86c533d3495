"""The per-token losses at the path the README documents (``divalign.losses.tofu_per_token``); they live in
:mod:`divalign.heads.losses`."""

from .heads.losses import (
    GEM_WEIGHTINGS,
    IGNORE_INDEX,
    LossSpec,
    cross_entropy_per_token,
    gem_per_token,
    tofu_focal_weight,
    tofu_per_token,
)

__all__ = [
    "GEM_WEIGHTINGS",
    "IGNORE_INDEX",
    "LossSpec",
    "cross_entropy_per_token",
    "gem_per_token",
    "tofu_focal_weight",
    "tofu_per_token",
]
