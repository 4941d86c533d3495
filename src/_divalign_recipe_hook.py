"""A divalign recipe given to Python as its script runs as ``python -m divalign.train RECIPE`` does.

    python recipes/tofu_sft.yaml [--key value ...]
    accelerate launch [--config_file CONFIG] recipes/tofu_sft.yaml [--key value ...]
    torchrun --nproc_per_node N recipes/tofu_sft.yaml [--key value ...]

Each of these ends in ``python RECIPE.yaml [flags]`` (the launchers start one per rank). ``divalign_recipe_hook.pth``,
installed with divalign at the top of site-packages, is read by every Python start (``site``); its one line looks at
``sys.argv[0]`` only, which Python has already set to the script it will run, and imports this module only when that
names a ``.yaml``/``.yml`` file: every other start returns there, importing nothing. :func:`install` then puts a path
hook first on ``sys.path_hooks``. Before running a script, Python asks the path hooks whether the file is an archive it
can import from, as for ``python app.zip``; the hook answers for the script alone, and only when its top-level mapping
names a divalign stage in ``trainer:`` (or another trainer, in a file that is plainly a recipe: divalign then says
that the trainer is unknown and names the stages). Python then runs that archive's ``__main__``, which is
:func:`divalign.launch.train.main` on the recipe and its flags: in each rank of a launch without relaunching, outside
one through the recipe's launcher keys as ``divalign train`` does. Any other YAML file runs, and fails, as before.

This is a top-level module, not part of the ``divalign`` package, so that answering costs no import of divalign,
torch or (for a file that does not mention ``trainer``) yaml.
"""

import os
import sys

SUFFIXES = (".yaml", ".yml")
# The names of divalign.launch.stages.STAGES, repeated here so that the check imports nothing of divalign
# (tests/test_recipe_scripts.py checks that the two agree)
STAGE_NAMES = ("sft", "tofu", "gem", "dpo", "grpo")
# Top-level keys a recipe has and other YAML files do not: with one of them, an unknown `trainer:` is a recipe's error
RECIPE_KEYS = {"model_name_or_path", "dataset_name", "diversity"}
# What `python RECIPE` runs as __main__: the recipe is argv[0], its flags follow
MAIN_SOURCE = "import sys\nfrom divalign.launch.train import main\nsys.exit(main(sys.argv))\n"


def script_argument() -> str | None:
    """The script Python was asked to run, when it is a YAML file (``None`` for ``-c``, ``-m``, ``.py``, ...)."""
    argv = getattr(sys, "argv", None) or [""]
    return argv[0] if argv[0].endswith(SUFFIXES) else None


def _top_level_trainer_line(text: str) -> str | None:
    """The value of an unindented ``trainer:`` line, for a file PyYAML cannot read."""
    import re

    match = re.search(r"^trainer\s*:\s*['\"]?([\w-]+)['\"]?\s*(#.*)?$", text, re.MULTILINE)
    return match.group(1) if match else None


def _meant_as_recipe(content: dict, trainer: str) -> bool:
    """Whether a mapping whose ``trainer:`` names no stage is still plainly a divalign recipe: it has a recipe's own
    keys, or its trainer is a near miss of a stage name (``tofu_sft``). divalign then names the trainers it knows,
    instead of Python's ``SyntaxError``."""
    import difflib

    return bool(RECIPE_KEYS & set(content)) or bool(difflib.get_close_matches(trainer, STAGE_NAMES, n=1))


def recipe_stage(path: str) -> str | None:
    """The trainer the YAML file at ``path`` names in its top-level ``trainer:`` key when it is a divalign recipe
    (a stage, or an unknown trainer in a file that is plainly a recipe: :func:`_meant_as_recipe`), else ``None``.

    A file that PyYAML cannot read counts when an unindented ``trainer:`` line names a stage: divalign then reports
    the YAML error with the file and line, instead of Python's ``SyntaxError``.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    if "trainer" not in text:
        return None
    try:
        import yaml
    except ImportError:
        return None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError:
        stage = _top_level_trainer_line(text)
    else:
        stage = content.get("trainer") if isinstance(content, dict) else None
        if isinstance(stage, str) and stage not in STAGE_NAMES and _meant_as_recipe(content, stage):
            return stage
    return stage if isinstance(stage, str) and stage in STAGE_NAMES else None


class RecipeLoader:
    """Loads the ``__main__`` of a recipe: :data:`MAIN_SOURCE`."""

    def __init__(self, path: str):
        self.path = path

    def create_module(self, spec: object) -> None:
        return None  # the default module

    def get_code(self, fullname: str) -> object:
        return compile(MAIN_SOURCE, f"<divalign recipe {self.path}>", "exec")

    def exec_module(self, module: object) -> None:
        exec(self.get_code(module.__name__), module.__dict__)


class RecipeFinder:
    """The path entry finder of a recipe file: it holds one module, ``__main__``."""

    def __init__(self, path: str):
        self.path = path

    def find_spec(self, fullname: str, target: object = None) -> object:
        if fullname != "__main__":
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec("__main__", RecipeLoader(self.path), origin=self.path)

    def invalidate_caches(self) -> None:
        pass


class RecipeScriptHook:
    """A ``sys.path_hooks`` entry that answers for one path, the script, when it is a divalign recipe."""

    def __init__(self, script: str):
        self.script = os.path.abspath(script)

    def __call__(self, entry: str) -> RecipeFinder:
        if not isinstance(entry, str) or os.path.abspath(entry) != self.script or recipe_stage(self.script) is None:
            raise ImportError("not a divalign recipe", path=entry)
        return RecipeFinder(self.script)


def install() -> None:
    """Called by ``divalign_recipe_hook.pth``: when the script is a YAML file, hook it (once; the check of its
    contents waits until Python asks the hook, after start-up)."""
    script = script_argument()
    if script is not None and not any(isinstance(hook, RecipeScriptHook) for hook in sys.path_hooks):
        sys.path_hooks.insert(0, RecipeScriptHook(script))
