"""Quiet runs (divalign.quiet): bitsandbytes' messages about its CPU 4-bit kernel are shown only when a recipe asks
for 4-bit loading, whether the optional `kernels` package is installed or not.

bitsandbytes logs them while being imported (peft imports it, transformers imports peft) on a CPU with AVX512-BF16.
Without `kernels`: "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'". With it
and the Hub offline, `kernels` first logs "Skipping publisher trust check for
'kernels-community/quantization-bitsandbytes' ...", then bitsandbytes the same "Failed to load" line with the reason.
The machine running the tests may lack AVX512-BF16, so each check runs in a fresh interpreter where bitsandbytes'
CPU feature probe answers yes, and, for the case without `kernels`, where Python's path finder does not see that
package (as if it were not installed: `import kernels` fails as Python's own, transformers reads it as absent). The
rest (the imports, the log records) is the libraries' own code.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from divalign.smoke import build_smoke_assets

REPO = Path(__file__).resolve().parents[1]
FAILED = "Failed to load CPU gemm_4bit_forward from kernels-community"
WITHOUT_KERNELS = FAILED + ": No module named 'kernels'"
TRUST_CHECK = (
    "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' because Hugging Face Hub is "
    "in offline mode"
)
# Imported before anything else: bitsandbytes.functional.has_avx512bf16 answers True once the module is loaded,
# before bitsandbytes' CPU backend (which calls it on import) is imported
FORCE_AVX512_BF16 = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, sys

    class ForceAvx512Bf16(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "bitsandbytes.functional":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            load = spec.loader.exec_module
            def exec_module(module):
                load(module)
                module.has_avx512bf16 = lambda: True
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, ForceAvx512Bf16())
    """
)
HIDE_KERNELS = textwrap.dedent(
    """
    class PathFinderWithoutKernels(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] == "kernels":
                return None
            return super().find_spec(name, path, target)

    sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder)] = PathFinderWithoutKernels
    """
)
KERNELS = ["absent", "installed"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


@pytest.fixture(params=KERNELS)
def kernels(request) -> str:
    if request.param == "installed" and importlib.util.find_spec("kernels") is None:
        pytest.skip("the `kernels` package is not installed here (the lock installs it: transformers requires it)")
    return request.param


def python(code: str, kernels: str, check: bool = True) -> subprocess.CompletedProcess:
    script = FORCE_AVX512_BF16 + (HIDE_KERNELS if kernels == "absent" else "") + textwrap.dedent(code)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the trust check is skipped, and says so, only offline
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=REPO, env=env
    )
    assert result.returncode == 0 or not check, result.stderr[-4000:]
    return result


def messages(kernels: str) -> list[str]:
    """What bitsandbytes' import prints about its 4-bit kernel, in order."""
    return [WITHOUT_KERNELS] if kernels == "absent" else [TRUST_CHECK, FAILED]


def test_the_forced_probe_reproduces_the_messages_without_divalign(kernels):
    stderr = python("import peft", kernels).stderr
    positions = [stderr.find(message) for message in messages(kernels)]
    assert -1 not in positions and positions == sorted(positions), stderr[-2000:]
    assert (TRUST_CHECK in stderr) is (kernels == "installed")


def test_a_run_that_loads_nothing_in_4_bits_does_not_show_them(kernels):
    result = python(
        """
        import logging
        import divalign.train  # imports trl, transformers, peft and so bitsandbytes
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("another bitsandbytes message")
        logging.getLogger("kernels._internals.hf_hub").warning(
            "Skipping publisher trust check for 'someone/another-kernel' because Hugging Face Hub is in offline mode."
        )
        """,
        kernels,
    )
    assert FAILED not in result.stderr and "kernels-community/quantization-bitsandbytes" not in result.stderr
    assert "another bitsandbytes message" in result.stderr  # the filters hold those messages only
    assert "'someone/another-kernel'" in result.stderr


@pytest.mark.parametrize("four_bit", [False, True])
def test_a_recipe_asking_for_4_bit_loading_shows_them(assets, kernels, four_bit):
    flags = ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "train.jsonl")]
    flags += ["--load_in_4bit", "true"] if four_bit else []
    argv = ["train", "recipes/smoke/tofu_smoke.yaml", *flags, "--dry-run"]
    result = python(f"import sys; from divalign.cli import main; sys.exit(main({argv!r}))", kernels)
    assert "divalign train: in this process: python -m divalign.train" in result.stdout
    for message in messages(kernels):
        assert (message in result.stderr) is four_bit
    assert ("kernels-community" in result.stderr) is four_bit


@pytest.mark.slow  # trains end to end (and puts this file of fresh interpreters, 100 s in all, among the first)
def test_a_4_bit_run_shows_them_once_in_order(assets, kernels, tmp_path):
    """QLoRA on the tiny model, trained in this process: the held messages are shown when the recipe is read.

    Without `kernels`, transformers 5.25 and newer refuse 4-bit loading on a CPU (their error names the package);
    older ones train. Either way the held message comes first, once."""
    flags = ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "train.jsonl")]
    flags += ["--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--load_in_4bit", "true", "--use_peft", "true"]
    argv = ["train", "recipes/smoke/tofu_smoke.yaml", *flags]
    code = f"import sys; from divalign.cli import main; sys.exit(main({argv!r}))"
    result = python(code, kernels, check=kernels == "installed")
    positions = [result.stderr.find(message) for message in messages(kernels)]
    assert -1 not in positions and positions == sorted(positions), result.stderr[-2000:]
    assert all(result.stderr.count(message) == 1 for message in messages(kernels))
    if result.returncode != 0:
        assert "kernels" in result.stderr.split(messages(kernels)[-1], 1)[1], result.stderr[-2000:]
        return
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert "Loading weights" not in result.stderr  # `divalign train` loads the model without a bar (a quick load)


# ---------------------------------------------------------------------------------------------------------------
# transformers' loading bars

LOAD = """
import sys, time
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging
{setup}
AutoModelForCausalLM.from_pretrained(sys.argv[1])
for _ in hf_logging.tqdm(range(3), desc="a slow load"):  # how transformers draws a long load's bar
    time.sleep(0.3)
"""


def load_stderr(model: Path, setup: str) -> str:
    code = textwrap.dedent(LOAD).format(setup=setup)
    result = subprocess.run(
        [sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


def test_quick_loads_draw_no_bar_and_long_ones_still_do(assets):
    """Without divalign's hook a tiny model's `from_pretrained` draws a "Loading weights" bar; with it
    (`quiet_loading_bars`, here with a 0.5 s delay, set twice) that bar is gone and a load lasting 0.9 s still shows."""
    loud = load_stderr(assets / "model", "")
    assert "Loading weights" in loud and "a slow load" in loud
    quiet = load_stderr(
        assets / "model", "from divalign.quiet import quiet_loading_bars\nquiet_loading_bars(0.5); quiet_loading_bars()"
    )
    assert "Loading weights" not in quiet
    assert "a slow load: 100%" in quiet
