"""Test-wide environment: everything offline, W&B offline, quiet tokenizers, DeepSpeed on its CPU accelerator.

Set, not defaulted: a shell that exports `WANDB_MODE=online` or `HF_HUB_OFFLINE=0` must not make the suite reach the
network. Subprocesses the tests start inherit these values.

Every subprocess also sees the same PATH, the test interpreter's bin first (its console scripts, its `ninja`), and
one DeepSpeed op cache per virtualenv: the JIT-built CPU communication op is rebuilt (half a minute on 2 cores)
whenever the `ninja` or the include paths differ from the last build, so runs alternating between two PATHs, or two
virtualenvs sharing `~/.cache/torch_extensions`, rebuilt it again and again.
"""

import os
import sys
from pathlib import Path

TEST_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",
}
os.environ.update(TEST_ENVIRONMENT)
_interpreter_bin = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _interpreter_bin:
    os.environ["PATH"] = os.pathsep.join(filter(None, [_interpreter_bin, os.environ.get("PATH")]))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
