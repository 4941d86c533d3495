"""Quiet runs (divalign.quiet): bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" warning
is shown only when a recipe asks for 4-bit loading.

bitsandbytes logs it while being imported (peft imports it, transformers imports peft) on a CPU with AVX512-BF16
when the optional `kernels` package is missing. The machine running the tests may lack AVX512-BF16, so each check runs
in a fresh interpreter where bitsandbytes' CPU feature probe answers yes: the rest (the import of `kernels` that
fails, the log record) is bitsandbytes' own code.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from divalign.smoke import build_smoke_assets

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'"
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


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def python(code: str) -> subprocess.CompletedProcess:
    script = FORCE_AVX512_BF16 + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_the_forced_probe_reproduces_the_warning_without_divalign():
    assert MESSAGE in python("import peft").stderr


def test_a_run_that_loads_nothing_in_4_bits_does_not_show_it():
    result = python(
        """
        import logging
        import divalign.train  # imports trl, transformers, peft and so bitsandbytes
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("another bitsandbytes message")
        """
    )
    assert MESSAGE not in result.stderr
    assert "another bitsandbytes message" in result.stderr  # the filter holds that one message only


@pytest.mark.parametrize("four_bit", [False, True])
def test_a_recipe_asking_for_4_bit_loading_shows_it(assets, four_bit):
    flags = ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "train.jsonl")]
    flags += ["--load_in_4bit", "true"] if four_bit else []
    argv = ["train", "recipes/smoke/tofu_smoke.yaml", *flags, "--dry-run"]
    result = python(f"import sys; from divalign.cli import main; sys.exit(main({argv!r}))")
    assert "divalign train: in this process: python -m divalign.train" in result.stdout
    assert (MESSAGE in result.stderr) is four_bit


def test_a_4_bit_run_shows_it_once(assets, tmp_path):
    """QLoRA on the tiny model, trained in this process: the held warning is shown when the recipe is read."""
    flags = ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "train.jsonl")]
    flags += ["--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--load_in_4bit", "true", "--use_peft", "true"]
    argv = ["train", "recipes/smoke/tofu_smoke.yaml", *flags]
    result = python(f"import sys; from divalign.cli import main; sys.exit(main({argv!r}))")
    assert result.stderr.count(MESSAGE) == 1
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
