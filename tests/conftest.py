"""Test-wide environment: everything offline, W&B offline, quiet tokenizers, DeepSpeed on its CPU accelerator.

Set, not defaulted: a shell that exports `WANDB_MODE=online` or `HF_HUB_OFFLINE=0` must not make the suite reach the
network. Subprocesses the tests start inherit these values.
"""

import os

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
