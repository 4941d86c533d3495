"""The package's layout: its import graph has no cycle, no module imports another module's private names, the configs
read the loss-head modes without loading a kernel, the trainer configs list their parameters, and the module paths the
docs promise still import (docs/architecture.md)."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "divalign"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(module: str) -> list[tuple[str, list[str]]]:
    """``(imported divalign module, names)`` for every import statement of ``module``, those inside functions too; a
    name that is itself a module (``from . import precision``) is an import of that module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "divalign":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, []) if submodule in MODULES else (target, [alias.name]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "divalign"]
    return found


def import_graph() -> dict[str, set[str]]:
    return {module: {target for target, _ in imports(module)} - {module} for module in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_cycle():
    """Every explicit import counts, the lazy ones inside functions too (they would close a cycle at call time).
    Not counted: a submodule's implicit import of its package's ``__init__``, which Python always runs first."""
    graph = import_graph()
    assert graph["divalign.launch.train"] >= {"divalign.launch.recipe", "divalign.launch.stages"}  # edges are seen
    assert "divalign.launch.train" in graph["divalign.launch"]  # a lazy one too
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The package's rooms in layers, lowest first (docs/architecture.md, "Layers"): a module imports its own room and the
# rooms of lower layers, never a room of its own layer or above. Top-level modules outside these rooms (generation.py,
# dashboards.py, ...) are not checked here.
LAYERS = [
    ["diversity", "prompts"],
    ["rewards"],
    ["evaluation", "callback"],
    ["trainers"],
    ["launch"],
    ["pipeline"],
    ["compare"],
]


def room_of(module: str) -> str | None:
    """``divalign.diversity.registry`` -> ``diversity``, ``divalign.prompts`` -> ``prompts``; ``None`` off the layers."""
    parts = module.split(".")
    room = parts[1] if len(parts) > 1 else None
    return room if any(room in layer for layer in LAYERS) else None


def test_no_module_imports_a_room_above_its_own():
    """Lazy imports inside functions count too: the metrics library (diversity/) imports no command, reward or
    callback; the rewards no evaluation or callback; the evaluation and the training callback neither each other nor
    the launch path."""
    layer = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if (here := room_of(module)) and (there := room_of(target)) and here != there and layer[there] >= layer[here]
    ]
    assert not upward, upward


def test_the_architecture_page_lists_the_layers():
    page = (REPO / "docs" / "architecture.md").read_text()
    section = page[page.index("## Layers") :].split("\n## ")[0]
    listed = [re.findall(r"`(\w+)(?:/|\.py)`", line) for line in re.findall(r"^\d+\. (.+)$", section, re.MULTILINE)]
    assert listed == LAYERS


def test_no_module_imports_another_modules_private_names():
    offenders = [
        f"{module} imports {name} from {target}"
        for module in MODULES
        for target, names in imports(module)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not offenders, offenders


def test_the_configs_read_the_head_modes_without_loading_a_kernel():
    code = (
        "import sys\n"
        "from divalign.trainers.gem_config import GEMConfig\n"
        "from divalign.trainers.tofu_config import TOFUConfig\n"
        "from divalign.heads.registry import HEAD_MODES\n"
        "kernels = ('divalign.heads.chunked', 'divalign.heads.tiled', 'divalign.heads.torch_tiles', "
        "'divalign.heads.triton_tiles')\n"
        "print(sorted(name for name in kernels if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _trainer_configs() -> list[type]:
    from divalign.trainers.gem_config import GEMConfig
    from divalign.trainers.grpo_config import DivGRPOConfig
    from divalign.trainers.loss_head_config import LossHeadSFTConfig
    from divalign.trainers.tofu_config import TOFUConfig

    return [LossHeadSFTConfig, TOFUConfig, GEMConfig, DivGRPOConfig]


@pytest.mark.parametrize("config", _trainer_configs(), ids=lambda config: config.__name__)
def test_trainer_configs_document_their_own_parameters(config):
    inherited = {field.name for base in config.__bases__ for field in dataclasses.fields(base)}
    own = [field for field in dataclasses.fields(config) if field.name not in inherited]
    assert own
    for field in own:
        assert field.metadata.get("help"), f"{config.__name__}.{field.name} has no help"
        assert f"\n        {field.name} (`" in config.__doc__, (
            f"{config.__name__}'s docstring does not list {field.name}"
        )


def test_the_documented_module_paths_still_import():
    import divalign
    import divalign.heads.losses
    import divalign.launch.train
    import divalign.losses
    import divalign.train

    for name in ("tofu_per_token", "gem_per_token", "LossSpec"):  # README: divalign.losses.tofu_per_token(...)
        assert getattr(divalign.losses, name) is getattr(divalign.heads.losses, name) is getattr(divalign, name)
    assert divalign.train.main is divalign.launch.train.main  # python -m divalign.train (tests/test_doc_commands.py)


def test_the_architecture_page_names_every_module():
    """The package's modules in its table, the top-level modules beside the package (the start-up hook) by path."""
    page = (REPO / "docs" / "architecture.md").read_text()
    table = re.findall(r"^\| `([\w/]+\.py)` \|", page, re.MULTILINE)
    tree = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py"))
    assert sorted(table) == tree
    beside = [path.name for path in SRC.glob("*.py")]
    assert beside and [name for name in beside if f"`src/{name}`" not in page] == []


@pytest.mark.parametrize("doc", ["architecture.md", "losses.md", "distributed.md"])
def test_the_files_the_docs_name_exist(doc):
    """Files named in backticks: under src/divalign/ (as the docs say), else from the repository's root."""
    named = re.findall(r"`([\w./-]+\.(?:py|json|sh))`", (REPO / "docs" / doc).read_text())
    assert named
    missing = [name for name in named if not (PACKAGE / name).is_file() and not (REPO / name).is_file()]
    assert not missing, missing


def test_the_readme_layout_matches_the_tree():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Layout") :]
    block = section[section.index("```") : section.index("```", section.index("```") + 3)]
    files = {path.name for path in [*PACKAGE.rglob("*"), *SRC.glob("*.py"), *REPO.glob("*.py")] if path.is_file()}
    assert not [name for name in re.findall(r"\b[\w]+\.(?:py|json)\b", block) if name not in files]
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert not [package for package in packages if f"  {package}/" not in block]
