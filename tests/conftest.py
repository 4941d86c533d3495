"""Test-wide environment: everything offline, W&B offline, quiet tokenizers, DeepSpeed on its CPU accelerator.

Set, not defaulted: a shell that exports `WANDB_MODE=online` or `HF_HUB_OFFLINE=0` must not make the suite reach the
network. Subprocesses the tests start inherit these values.

Every subprocess also sees the same PATH, the test interpreter's bin first (its console scripts, its `ninja`), and
one DeepSpeed op cache per virtualenv: the JIT-built CPU communication op is rebuilt (half a minute on 2 cores)
whenever the `ninja` or the include paths differ from the last build, so runs alternating between two PATHs, or two
virtualenvs sharing `~/.cache/torch_extensions`, rebuilt it again and again.

`accelerate launch` without a port takes 29500, or, when that port is busy, lets torchrun pick a free one. `make test`
runs two pytest workers, so two launches could both find 29500 free and collide: the session keeps 29500 busy, and
every launch without a port of its own gets a free one from the OS.

Before any test runs, a run that reaches the real-model tests checks that the disk under pytest's temporary folders
has room for their checkpoints (tests/disk_space.py); otherwise it stops at once with a usage error naming the folder.
"""

import os
import socket
import sys
from pathlib import Path

import pytest

from disk_space import require_free_disk, selects_real_model_tests, temporary_root

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


ACCELERATE_DEFAULT_PORT = 29500


def pytest_configure(config):
    """Each pytest worker gets its share of the cores, for its own torch and the processes it starts: at two threads
    per process, two workers on two cores spin against each other (OpenMP busy-waits), and a test alongside a
    multi-process one ran four times slower than alone."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_sessionstart(session):
    """The controller checks the disk once (xdist's workers share its temporary root), for runs that reach the
    real-model tests."""
    config = session.config
    from_testpaths = config.args_source == pytest.Config.ArgsSource.TESTPATHS
    base = config.rootpath if from_testpaths else config.invocation_params.dir
    if not hasattr(config, "workerinput") and selects_real_model_tests(config.args, base):
        require_free_disk(temporary_root(config.option.basetemp))


@pytest.fixture(scope="session", autouse=True)
def default_launch_port_busy():
    """Hold accelerate's default port for the session (another worker may already hold it: busy either way)."""
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", ACCELERATE_DEFAULT_PORT))
        held.listen()
    except OSError:
        held.close()
    yield
    held.close()


def pytest_collection_modifyitems(config, items):
    """Files with a slow test first (each keeps its own order): with several workers the long files start early and
    the short ones fill in at the end, instead of one worker finishing a long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
