"""Which sampler `divalign eval --backend` means: "hf" (transformers' `generate`, the path every number so far came
from), "vllm", or "auto", which is "hf". vLLM is opt-in, as the loss head's "fused-triton" is, until it has been
measured on a GPU. No heavy import here: `divalign --help` reads these names."""

from __future__ import annotations

import importlib.util

BACKENDS = ("auto", "hf", "vllm")
VLLM_OPT_IN = (
    "vLLM is opt-in (--backend vllm) until it has been measured on a GPU; its noise differs from the HF backend's, "
    "so its samples differ too"
)


def use_vllm(backend: str) -> bool:
    """Whether `backend` resolves to vLLM: only when asked for by name ("auto" is the HF backend)."""
    if backend != "vllm":
        return False
    if importlib.util.find_spec("vllm") is None:
        raise ValueError("backend 'vllm' requested but vllm is not installed (pip install divalign[vllm])")
    return True
