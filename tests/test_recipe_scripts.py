"""A recipe as Python's script: `python RECIPE.yaml`, `accelerate launch RECIPE.yaml`, `torchrun RECIPE.yaml`.

The start-up hook (`divalign_recipe_hook.pth` + the module `_divalign_recipe_hook`, installed with divalign) answers
for a YAML script whose top-level `trainer:` names a divalign stage, and for nothing else: other starts import none of
it, other YAML files fail as they did without it. A recipe runs as `python -m divalign.train RECIPE` does: with the
same losses in one process, on 2 CPU ranks under `accelerate launch` and `torchrun` without relaunching, through the
recipe's launcher keys outside a launch. A wheel and an editable install both put the hook in site-packages, and `pip
uninstall` removes it. Slow: the trainings, the 2-process launches and the installs.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import _divalign_recipe_hook as hook
from divalign.launch.relaunch import LAUNCHED_RANK_ENV, preset_directory
from divalign.launch.stages import STAGES
from divalign.smoke import build_smoke_assets
from launching import REPO, accelerate_launch, cpu_accelerate_config, cpu_environment, smoke_recipe_with

HOOK_FILES = ("divalign_recipe_hook.pth", "_divalign_recipe_hook.py")
BIN = Path(sys.executable).parent
TIMEOUT_S = 1800  # 2 processes on 2 shared cores, cold caches
CHECK_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def not_a_rank() -> dict[str, str]:
    """The test environment with none of the variables that make a process a rank of a launch."""
    return {name: value for name, value in cpu_environment().items() if name not in LAUNCHED_RANK_ENV}


def run(command: list, timeout: float = CHECK_TIMEOUT_S, **options) -> subprocess.CompletedProcess:
    options.setdefault("env", not_a_rank())
    return subprocess.run([str(word) for word in command], capture_output=True, text=True, timeout=timeout, **options)


def losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def last_epoch(output_dir: Path) -> float:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"][-1]["epoch"]


# What the hook answers for


def test_the_hook_knows_the_stages_divalign_runs():
    assert tuple(STAGES) == hook.STAGE_NAMES


@pytest.mark.parametrize(
    ("content", "stage"),
    [
        ("trainer: tofu\nmax_steps: 2\n", "tofu"),
        ("# a comment\ntrainer: 'gem'  # quoted\n", "gem"),
        ("{trainer: dpo, max_steps: 1}\n", "dpo"),  # a flow mapping
        ("trainer: sft\ndataset_name: [a, b\n", "sft"),  # not YAML, but plainly a recipe: divalign names the error
        ("trainer: other\n", None),
        ("trainer: tofu_sft\n", "tofu_sft"),  # a near miss: a recipe with an unknown trainer, named by divalign
        ("trainer: ppo\nmodel_name_or_path: m\n", "ppo"),  # a recipe's own key
        ("name: x\ntrainer: lightning\n", None),  # another tool's file: Python runs it
        ("trainer:\n  name: tofu\n", None),
        ("model:\n  trainer: tofu\n", None),  # not top level
        ("- trainer: tofu\n", None),  # a list
        ("model: [a,\n  trainer: tofu\n", None),  # not YAML, no top-level trainer line
        ("stages:\n  - recipe: recipes/tofu_sft.yaml\n", None),
        ("print('trainer')\n", None),  # mentions it, but is a string
    ],
)
def test_a_recipe_is_a_yaml_mapping_whose_trainer_names_a_stage(tmp_path, content, stage):
    path = tmp_path / "file.yaml"
    path.write_text(content)
    assert hook.recipe_stage(str(path)) == stage


def test_an_unreadable_file_is_no_recipe(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("trainer: tofu # \xe9\n".encode("latin-1"))
    assert hook.recipe_stage(str(tmp_path / "latin1.yaml")) is None
    assert hook.recipe_stage(str(tmp_path / "missing.yaml")) is None
    assert hook.recipe_stage(str(tmp_path)) is None  # a directory


@pytest.mark.parametrize(
    ("argv", "hooked"),
    [
        (["-c"], False),
        (["-m"], False),
        (["train.py"], False),
        ([""], False),
        ([], False),
        (["r.yml", "-x"], True),
        (["r.YAML"], False),
    ],
)
def test_the_hook_is_installed_for_a_yaml_script_only(monkeypatch, argv, hooked):
    monkeypatch.setattr(sys, "path_hooks", list(sys.path_hooks))
    monkeypatch.setattr(sys, "argv", argv)
    before = list(sys.path_hooks)
    hook.install()
    hook.install()  # a .pth can be read twice (a site dir reached by two paths): one hook
    added = [entry for entry in sys.path_hooks if entry not in before]
    assert len(added) == int(hooked)
    if hooked:
        assert sys.path_hooks[0] is added[0] and isinstance(added[0], hook.RecipeScriptHook)


def test_the_path_hook_answers_for_the_recipe_alone(tmp_path, monkeypatch, assets):
    recipe = smoke_recipe_with(tmp_path, assets)
    monkeypatch.chdir(tmp_path)
    path_hook = hook.RecipeScriptHook("recipe.yaml")  # as Python was asked: relative; Python asks with an absolute path
    finder = path_hook(str(recipe))
    spec = finder.find_spec("__main__")
    assert spec.name == "__main__" and spec.origin == str(recipe)
    assert finder.find_spec("os") is None and finder.find_spec("divalign") is None
    code = spec.loader.get_code("__main__")
    assert "main" in code.co_names and code.co_filename == f"<divalign recipe {recipe}>"
    for entry in (str(tmp_path), str(tmp_path / "other.yaml"), ""):
        with pytest.raises(ImportError):
            path_hook(entry)
    (tmp_path / "notes.yaml").write_text("trainer: other\n")
    with pytest.raises(ImportError):
        hook.RecipeScriptHook("notes.yaml")(str(tmp_path / "notes.yaml"))


# The start-up check: every other start is left alone


def test_other_starts_import_nothing_of_the_hook(tmp_path):
    """`-X importtime` lists every module a start imports: nothing of divalign (the hook's module included), yaml or
    torch for `-c`, a `.py` script or `-m`; for a YAML script that does not mention `trainer`, the hook's module only."""
    (tmp_path / "script.py").write_text("pass\n")
    (tmp_path / "notes.yaml").write_text("pass\n")  # valid Python and valid YAML
    starts = {"-c": ["-c", "pass"], ".py": [tmp_path / "script.py"], "-m": ["-m", "json.tool", "--help"]}
    for label, args in {**starts, ".yaml": [tmp_path / "notes.yaml"]}.items():
        done = run([sys.executable, "-X", "importtime", *args])
        assert done.returncode == 0, done.stderr[-2000:]
        modules = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "import time:" in line]
        assert "encodings" in "".join(modules)  # the listing is there
        suspects = [name for name in modules if "divalign" in name or name.split(".")[0] in ("yaml", "torch")]
        assert suspects == ([] if label != ".yaml" else ["_divalign_recipe_hook"]), label


@pytest.mark.parametrize(
    "content",
    [
        "a: [1, 2\n",  # SyntaxError
        "name: x\ntrainer: other\n",  # NameError: valid Python, names no stage
        "model:\n  trainer: tofu\n",  # SyntaxError: trainer is not top level
        "import sys\nprint(sys.argv)\n",  # valid Python and valid YAML (a string): it runs
    ],
)
def test_a_yaml_file_that_is_not_a_recipe_runs_as_before(tmp_path, content):
    """As Python without its start-up (`-S`, no site, no .pth files) runs it: the same exit status and output."""
    script = tmp_path / "file.yaml"
    script.write_text(content)
    hooked, bare = run([sys.executable, script, "--flag"]), run([sys.executable, "-S", script, "--flag"])
    assert (hooked.returncode, hooked.stdout, hooked.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    assert "divalign" not in hooked.stderr


def test_a_recipe_that_is_not_yaml_gets_divaligns_error(tmp_path):
    (tmp_path / "broken.yaml").write_text("trainer: tofu\nmax_steps: [1,\n")
    done = run([sys.executable, "broken.yaml"], cwd=tmp_path)
    assert done.returncode == 1
    assert "divalign.train: error: broken.yaml is not valid YAML" in done.stderr


def test_a_recipe_with_an_unknown_trainer_gets_divaligns_error_naming_the_trainers(tmp_path):
    (tmp_path / "recipe.yaml").write_text("trainer: tofu_sft\nmodel_name_or_path: m\ndiversity:\n  prompts: p.jsonl\n")
    bare = run([sys.executable, "-S", "recipe.yaml"], cwd=tmp_path)
    assert "SyntaxError" in bare.stderr  # what Python alone says of it
    done = run([sys.executable, "recipe.yaml"], cwd=tmp_path)
    assert done.returncode == 1 and "SyntaxError" not in done.stderr
    assert (
        "divalign.train: error: recipe.yaml: unknown trainer 'tofu_sft' (a divalign recipe's `trainer:` names the "
        "stage it runs); expected one of sft, tofu, gem, dpo, grpo; did you mean 'tofu'?"
    ) in done.stderr


def test_outside_a_launch_the_recipes_launcher_keys_launch_it_as_divalign_train_does(tmp_path, assets):
    """`python RECIPE` with launcher keys relaunches through `accelerate launch`, like `divalign train RECIPE`;
    flags after the YAML beat the recipe's keys, launcher keys included (here a dry run prints the launch)."""
    recipe = smoke_recipe_with(tmp_path, assets, accelerate_config="ddp", num_processes=2)
    flags = ["--num_processes", "3", "--learning_rate", "1e-3", "--dry-run"]
    as_script = run([sys.executable, recipe, *flags], cwd=tmp_path)
    as_command = run([BIN / "divalign", "train", recipe, *flags], cwd=tmp_path)
    assert as_script.returncode == 0, as_script.stderr[-3000:]
    launch = f"accelerate launch --config_file {preset_directory() / 'ddp.yaml'} --num_processes 3"
    assert f"divalign train: launch: {launch} --mixed_precision no -m divalign.train {recipe} --learning_rate" in (
        as_script.stdout
    )
    assert as_script.stdout == as_command.stdout


def test_a_recipe_error_names_the_key(tmp_path, assets):
    recipe = smoke_recipe_with(tmp_path, assets, tofu_gama=2.0)
    done = run([sys.executable, recipe], cwd=tmp_path)
    assert done.returncode == 1
    assert "divalign.train: error: unknown recipe key 'tofu_gama'" in done.stderr
    assert "did you mean 'tofu_gamma'" in done.stderr


# The runs


@pytest.fixture(scope="module")
def reference(assets, tmp_path_factory) -> Path:
    """`python -m divalign.train RECIPE` in one process, the global batch of 8 there."""
    directory = tmp_path_factory.mktemp("reference")
    recipe = smoke_recipe_with(directory, assets, per_device_train_batch_size=8)
    done = run([sys.executable, "-m", "divalign.train", recipe, "--output_dir", directory / "out"], TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-6000:]
    return directory / "out"


@pytest.mark.slow
def test_python_runs_the_recipe_as_the_module_entry_does(assets, tmp_path, reference):
    """The flags after the YAML reach the recipe (`--max_steps` shortens it, `--output_dir` moves it)."""
    recipe = smoke_recipe_with(tmp_path, assets, per_device_train_batch_size=8, max_steps=10)
    done = run([sys.executable, recipe, "--output_dir", tmp_path / "out", "--max_steps", "4"], TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-6000:]
    assert len(losses(tmp_path / "out")) == 4
    assert losses(tmp_path / "out") == losses(reference)
    assert (tmp_path / "out" / "divalign_finished.json").is_file()


# The recipe's launcher keys ask for 8 processes: a rank never reads them (it would relaunch, or fail)
RANK_RECIPE_KEYS = {"per_device_train_batch_size": 4, "accelerate_config": "zero3", "num_processes": 8}
RANK_FLAGS = ["--ddp_backend", "gloo", "--use_cpu", "true"]


def check_two_ranks(output_dir: Path, done: subprocess.CompletedProcess, reference: Path) -> None:
    assert "divalign train: launch" not in done.stdout + done.stderr  # no relaunch
    assert last_epoch(output_dir) == 0.5  # 64 rows: 4 steps x 4 rows x 2 processes
    assert losses(output_dir) == pytest.approx(losses(reference), rel=1e-4)


@pytest.mark.slow
def test_accelerate_launch_runs_the_recipe_on_each_rank(assets, tmp_path, reference):
    recipe = smoke_recipe_with(tmp_path, assets, **RANK_RECIPE_KEYS)
    config = cpu_accelerate_config("ddp", tmp_path)
    done = accelerate_launch(
        [str(recipe), "--output_dir", str(tmp_path / "out"), *RANK_FLAGS], config, timeout=TIMEOUT_S
    )
    check_two_ranks(tmp_path / "out", done, reference)


@pytest.mark.slow
def test_torchrun_runs_the_recipe_on_each_rank(assets, tmp_path, reference):
    """`--standalone`: torchrun's rendezvous binds a free port itself (tests/launching.py: no port is picked here)."""
    recipe = smoke_recipe_with(tmp_path, assets, **RANK_RECIPE_KEYS)
    command = [BIN / "torchrun", "--standalone", "--nproc_per_node", "2", recipe, "--output_dir", tmp_path / "out"]
    done = run([*command, *RANK_FLAGS], TIMEOUT_S, env={**not_a_rank(), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    check_two_ranks(tmp_path / "out", done, reference)


# Installed by a wheel and by `pip install -e`, removed by `pip uninstall`


def test_this_environment_has_the_hook_installed():
    """`make test` installs divalign with `pip install -e .`: the .pth sits at the top of site-packages, listed in
    divalign's RECORD (what `pip uninstall` removes)."""
    installed = Path(sysconfig.get_paths()["purelib"]) / HOOK_FILES[0]
    assert installed.is_file(), f"{installed} is missing: reinstall divalign (`make install`, or `pip install -e .`)"
    assert installed.read_text() == (REPO / "src" / HOOK_FILES[0]).read_text()
    assert HOOK_FILES[0] in {str(path) for path in importlib.metadata.distribution("divalign").files}


def source_copy(directory: Path) -> Path:
    """What a wheel is built from: the sources, pyproject.toml, setup.py (setuptools writes build/ next to them)."""
    ignored = shutil.ignore_patterns("*.egg-info", "__pycache__")
    shutil.copytree(REPO / "src", directory / "src", ignore=ignored)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, directory / name)
    return directory


def scratch_venv(directory: Path) -> tuple[Path, Path]:
    """A venv without divalign whose Python also finds this environment's packages (torch, trl, ...) on a path line;
    ``(python, site-packages)``. Only its own site-packages is a site directory: this environment's .pth files, the
    hook's and the editable divalign's, are not read there."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(directory)
    python = directory / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, purelib


def pip(python: Path, *args) -> None:
    done = run([sys.executable, "-m", "pip", "--python", python, *args, "-q"], 900)
    assert done.returncode == 0, done.stderr[-3000:]


def check_installed_and_removed(python: Path, purelib: Path, recipe: Path, files: tuple[str, ...]) -> None:
    """The hook's ``files`` are in site-packages and `python RECIPE` reaches divalign; after `pip uninstall` they are
    gone, with everything else of divalign, and the recipe runs as Python ran it without divalign."""
    assert all((purelib / name).is_file() for name in files)
    dry_run = run([python, recipe, "--dry-run"], cwd=recipe.parent)
    assert dry_run.returncode == 0, dry_run.stderr[-3000:]
    assert f"divalign train: in this process: python -m divalign.train {recipe}\n" in dry_run.stdout
    pip(python, "uninstall", "-y", "divalign")
    assert sorted(path.name for path in purelib.iterdir() if "divalign" in path.name) == []
    after = run([python, recipe], cwd=recipe.parent)
    assert after.returncode == 1 and "divalign" not in after.stdout + after.stderr


@pytest.mark.slow
def test_a_wheel_installs_the_hook_and_pip_uninstall_removes_it(tmp_path, assets):
    source = source_copy(tmp_path / "source")
    wheel_dir = tmp_path / "wheels"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheel_dir, source], 900
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheel_dir.glob("divalign-*.whl")
    python, purelib = scratch_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", wheel)
    assert (purelib / "divalign" / "__init__.py").is_file()  # the wheel's divalign, not this environment's
    check_installed_and_removed(python, purelib, smoke_recipe_with(tmp_path, assets), HOOK_FILES)


@pytest.mark.slow
def test_an_editable_install_installs_the_hook_and_pip_uninstall_removes_it(tmp_path, assets):
    source = source_copy(tmp_path / "source")
    python, purelib = scratch_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", "--no-build-isolation", "-e", source)
    assert list(purelib.glob("__editable__.divalign-*.pth"))
    where = run(
        [python, "-c", "import _divalign_recipe_hook as hook, divalign; print(hook.__file__, divalign.__file__)"]
    )
    assert where.stdout.split() == [str(source / "src" / name) for name in (HOOK_FILES[1], "divalign/__init__.py")]
    check_installed_and_removed(
        python, purelib, smoke_recipe_with(tmp_path, assets), HOOK_FILES[:1]
    )  # the module: src/
