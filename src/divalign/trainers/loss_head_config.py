"""Settings shared by the SFT trainers whose loss runs in divalign's chunked LM head."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from ..heads.hyperparameters import require_number
from ..heads.registry import HEAD_MODES as LOSS_HEADS


@dataclass
class LossHeadSFTConfig(SFTConfig):
    r"""
    Configuration class for [`~divalign.trainers.loss_head_trainer.LossHeadSFTTrainer`]: [`~trl.SFTConfig`] plus the
    knobs of divalign's loss head (:mod:`divalign.heads`).

    The SFT loss itself is replaced, so `loss_type` must stay `"nll"` (its default) and label smoothing is refused.

    Parameters:
        > Parameters that control the loss head

        loss_head (`str`, *optional*, defaults to `"auto"`):
            Loss head implementation (:func:`divalign.heads.registry.select_head`): `"auto"` (the fused
            vocabulary-tiled head on CUDA, the reference elsewhere), `"reference"` (row chunks, autograd backward),
            `"fused"` (vocabulary tiles, plain PyTorch) or `"fused-triton"` (Triton tile kernels; opt-in, not yet run
            on a GPU).
        loss_chunk_rows (`int` or `None`, *optional*, defaults to `None`):
            Token rows projected through the LM head at once. `None`: as many as keep one fp32 `(rows, vocab)` block
            near 128 MiB.
    """

    loss_head: str = field(
        default="auto",
        metadata={
            "help": "Loss head implementation: 'auto' (the fused vocabulary-tiled head on CUDA, the reference "
            "elsewhere), 'reference' (row chunks, autograd backward), 'fused' (vocabulary tiles, plain PyTorch) or "
            "'fused-triton' (Triton tile kernels; opt-in, not yet run on a GPU).",
            "choices": list(LOSS_HEADS),
        },
    )
    loss_chunk_rows: int | None = field(
        default=None,
        metadata={
            "help": "Token rows projected through the LM head at once. Default: as many as keep one fp32 "
            "(rows, vocab) block near 128 MiB."
        },
    )

    def __post_init__(self):
        if self.loss_head not in LOSS_HEADS:
            raise ValueError(f"`loss_head` must be one of {LOSS_HEADS}, got {self.loss_head!r}")
        if self.loss_chunk_rows is not None:
            require_number("loss_chunk_rows", self.loss_chunk_rows, minimum=1, inclusive=True)
        if self.loss_type != "nll":
            raise ValueError(
                f"`loss_type={self.loss_type!r}` cannot be combined with {type(self).__name__}: the trainer's own loss "
                "replaces TRL's. Leave `loss_type` at 'nll' or use `trainer: sft`."
            )
        if self.label_smoothing_factor:
            raise ValueError(f"`label_smoothing_factor` is not supported by {type(self).__name__}; set it to 0.")
        super().__post_init__()
