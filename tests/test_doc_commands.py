"""Every command the docs show runs as written, or — where it needs GPUs, the Hub or `make demo`'s outputs — is
checked as far as this machine allows: the recipe and flags validated as `divalign.train` and the pipeline would
validate them, the pipeline dry-run, the CLI flags parsed.

Commands are read from the files (```bash blocks of the Markdown docs, the indented `#   ` command lines of the
recipe headers), so a new or changed command is tested without touching this file; a command no rule recognises
fails `test_every_documented_command_has_a_check` until a rule is added to `CHECKS`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from divalign.cli import build_parser
from divalign.launch.train import main as train_main
from divalign.pipeline.stage_values import has_gpu, validate_launch
from divalign.smoke import build_smoke_assets

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [
    REPO / "README.md",
    REPO / "recipes" / "README.md",
    REPO / "recipes" / "pipelines" / "README.md",
    REPO / "recipes" / "compare" / "README.md",
]
RECIPE_FILES = sorted((REPO / "recipes").rglob("*.yaml"))
TRAIN_ENTRY = re.compile(r"(?:-m divalign\.train|divalign train)\s+(\S+)\s*(.*)")


def _join_continuations(lines: list[str]) -> list[str]:
    commands, current = [], ""
    for line in lines:
        text = re.split(r"\s#(?:\s|$)", line, maxsplit=1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        current = f"{current} {text.strip()}".strip() if current else text.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current:
            commands.append(current)
        current = ""
    return commands


def markdown_commands(path: Path) -> list[str]:
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            lines.append(line)
    return _join_continuations(lines)


def recipe_header_commands(path: Path) -> list[str]:
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    return _join_continuations([line[1:] for line in header if line.startswith("#   ")])


def doc_commands() -> list[tuple[str, str]]:
    """(file relative to the repository, command) for every documented command, first occurrence of each."""
    found: dict[str, str] = {}
    for path in DOC_FILES:
        for command in markdown_commands(path):
            found.setdefault(command, str(path.relative_to(REPO)))
    for path in RECIPE_FILES:
        for command in recipe_header_commands(path):
            found.setdefault(command, str(path.relative_to(REPO)))
    return [(where, command) for command, where in found.items()]


# How each command is checked


def workdir(tmp_path: Path, smoke_assets: Path) -> Path:
    """A working directory like the repository root: recipes/, accelerate_configs/, examples/ and runs/smoke."""
    for name in ("recipes", "accelerate_configs", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    shutil.copytree(smoke_assets, tmp_path / "runs" / "smoke")
    return tmp_path


def run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # PATH: the interpreter's bin (divalign, accelerate) first (conftest)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def check_runs(command: str, cwd: Path) -> None:
    result = run_shell(command, cwd)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def check_dry_run(command: str, cwd: Path) -> None:
    """A pipeline for GPUs and the Hub: its dry run validates every stage here and prints the launches."""
    result = run_shell(command if "--dry-run" in command else f"{command} --dry-run", cwd)
    assert result.returncode == 0, f"{command}\n{result.stderr[-4000:]}"
    assert "dry run: nothing was launched" in result.stdout


def _launch_parts(command: str) -> tuple[Path | None, list[str], Path, list[str]]:
    """(accelerate config, other launch args, recipe, flags) of an `accelerate launch ... -m divalign.train RECIPE`,
    `accelerate launch ... RECIPE.yaml` or `torchrun --nproc_per_node N RECIPE.yaml` line (torchrun's process count
    as accelerate's `--num_processes`)."""
    words = shlex.split(command)
    if "divalign.train" in words:
        at = words.index("divalign.train") + 1
        launch = words[2 : at - 2]
    else:
        at = next(i for i, w in enumerate(words) if w.endswith((".yaml", ".yml")) and words[i - 1] != "--config_file")
        launch = words[1 if words[0] == "torchrun" else 2 : at]
    launch = ["--num_processes" if w == "--nproc_per_node" else w for w in launch]
    config = Path(launch[launch.index("--config_file") + 1]) if "--config_file" in launch else None
    rest = [w for i, w in enumerate(launch) if w != "--config_file" and (i == 0 or launch[i - 1] != "--config_file")]
    return config, rest, Path(words[at]), words[at + 1 :]


def check_validates(command: str, cwd: Path) -> None:
    """A GPU launch: the recipe with its flags validates as the launch would see it (precision included)."""
    config, launch_args, recipe, flags = _launch_parts(command)
    validate_launch(REPO / recipe, flags, None if config is None else REPO / config, launch_args, has_gpu())


def check_train_dry_run(command: str, cwd: Path) -> None:
    """A GPU run: `divalign train ... --dry-run` (or `python RECIPE ... --dry-run`, the same main) checks the recipe
    with its flags as the launch would see it (on a machine without GPU as a CPU run) and prints the launch."""
    words = shlex.split(command)
    output = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(output):
        assert train_main([*words[1 if words[0] == "python" else 2 :], "--dry-run"]) == 0, command
    assert "divalign train: " in output.getvalue()


def check_slurm(command: str, cwd: Path) -> None:
    """examples/slurm/pipeline.sbatch RECIPE FLAGS on --nodes N: every node runs examples/slurm/node_launch.sh, i.e.
    `divalign train RECIPE` with the node's rank and N x 8 processes (a dry run here, as machine 0)."""
    words = shlex.split(command)
    script = next(w for w in words if w.endswith(".sbatch"))
    assert (REPO / script).is_file() and (REPO / "examples" / "slurm" / "node_launch.sh").is_file()
    nodes = int(words[words.index("--nodes") + 1]) if "--nodes" in words else 2
    recipe, *flags = words[words.index(script) + 1 :]
    node = ["--num_machines", str(nodes), "--machine_rank", "0", "--num_processes", str(8 * nodes)]
    node += ["--main_process_ip", "127.0.0.1", "--main_process_port", "29500"]
    check_train_dry_run(shlex.join(["divalign", "train", recipe, *node, *flags]), cwd)


def check_compare_array(command: str, cwd: Path) -> None:
    """`bash examples/slurm/compare_array.sbatch SPEC` submits jobs (tests/test_compare_command.py runs it with a
    stand-in sbatch): here the script parses, the spec exists and the `divalign compare` flags it uses parse."""
    words = shlex.split(command)
    script, spec = words[1], words[2]
    assert subprocess.run(["bash", "-n", str(REPO / script)]).returncode == 0
    assert (REPO / spec).is_file()
    build_parser().parse_args(["compare", spec, "--list-cells"])


def check_cli_parses(command: str, cwd: Path) -> None:
    """Needs `make demo`'s outputs (minutes): the flags parse as the CLI reads them."""
    build_parser().parse_args(shlex.split(command)[1:])


def check_make_target(command: str, cwd: Path) -> None:
    target = shlex.split(command)[1]
    assert subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True).returncode == 0


def check_install(command: str, cwd: Path) -> None:
    """Not run (it installs packages): the extras it names exist."""
    extras = importlib.metadata.metadata("divalign").get_all("Provides-Extra")
    for extra in re.findall(r"\.\[(\w+)\]", command):
        assert extra in extras


# (matches, check, slow): the first rule whose pattern is found in the command decides
CHECKS: list[tuple[str, Callable[[str, Path], None], bool]] = [
    (r"^pip install", check_install, False),
    (r"^make [\w-]+$", check_make_target, False),
    (r"^bash examples/slurm/compare_array\.sbatch ", check_compare_array, False),
    (r"^sbatch ", check_slurm, False),
    (r"^divalign (plot|eval) .*runs/demo/", check_cli_parses, False),
    (r"^divalign eval .*--quality reward_model:path/to/", check_cli_parses, False),  # a Hub model and your own RM
    (r"^divalign pipeline recipes/toy/", check_cli_parses, False),  # after `make demo`
    (r"^divalign compare recipes/compare/toy\.yaml", check_cli_parses, False),  # after `make demo`
    (r"^divalign compare recipes/compare/toy_rl\.yaml", check_cli_parses, False),  # after `make demo`
    (r"^divalign compare recipes/compare/real\.yaml", check_cli_parses, False),  # after `make demo-real`
    (r"^divalign compare recipes/compare/real_rl\.yaml", check_cli_parses, False),  # after `make demo-real`
    (r"^divalign compare recipes/compare/smoke\.yaml --(dry-run|list-cells)", check_runs, False),
    (r"^divalign pipeline recipes/pipelines/smoke\.yaml --dry-run", check_runs, False),
    (r"^divalign pipeline recipes/pipelines/smoke\.yaml", check_runs, True),
    (r"^divalign pipeline recipes/pipelines/tofu_dpo_grpo\.yaml", check_dry_run, False),
    (r"^(accelerate launch|torchrun) ", check_validates, False),
    (r"^python -m divalign\.(smoke|train recipes/smoke/)", check_runs, False),
    (r"^python recipes/smoke/", check_runs, False),
    (r"^python recipes/\S+\.yaml", check_train_dry_run, False),
    (r"^divalign train recipes/smoke/\S+ .*--num_processes 2", check_runs, True),  # a real 2-process launch
    (r"^divalign train recipes/smoke/", check_runs, False),
    (r"^divalign train ", check_train_dry_run, False),
]


def rule_for(command: str) -> tuple[Callable[[str, Path], None], bool] | None:
    for pattern, check, slow in CHECKS:
        if re.search(pattern, command):
            return check, slow
    return None


COMMANDS = doc_commands()


def test_every_documented_command_has_a_check():
    assert len(COMMANDS) >= 20, COMMANDS  # the extraction found the docs' commands
    unchecked = [(where, command) for where, command in COMMANDS if rule_for(command) is None]
    assert unchecked == [], "add a rule to CHECKS for these commands"


@pytest.fixture(scope="module")
def smoke_assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def _param(where: str, command: str):
    rule = rule_for(command)
    marks = [pytest.mark.slow] if rule is not None and rule[1] else []
    return pytest.param(command, id=f"{where}: {command[:70]}", marks=marks)


@pytest.mark.parametrize("command", [_param(where, command) for where, command in COMMANDS])
def test_documented_command(command, tmp_path, smoke_assets):
    rule = rule_for(command)
    if rule is None:
        pytest.fail(f"no check for {command!r}")
    check, _ = rule
    check(command, workdir(tmp_path, smoke_assets))
