"""Recipes: the YAML files users launch. One flat mapping of TRL/transformers keys plus divalign's own.

A recipe names its stage with ``trainer:`` and may carry a ``diversity:`` block (the training-time diversity
callback) and an ``env:`` block (environment variables), as TRL's own ``--config`` files do. Everything else is parsed
by :class:`trl.TrlParser` into the stage's dataclasses, so command-line flags override the file and every key is
checked against the dataclass fields before anything loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tempfile
import typing
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .value_ranges import RANGE_KEYS, out_of_range


class RecipeError(ValueError):
    """A recipe that cannot be run, with the file and key at fault in the message."""


@dataclass(frozen=True)
class RunOptions:
    """divalign's own run settings: top-level recipe keys beside `trainer:`, also accepted as `--key value` flags."""

    stop_on_nonfinite: bool = field(
        default=True,
        metadata={
            "help": "Stop the run at the first optimizer step whose loss or gradient norm is NaN/inf, before that "
            "step is saved (divalign.launch.nonfinite_guard). false: train on (the final model is still never saved with "
            "non-finite weights)."
        },
    )
    resume_with_changes: bool = field(
        default=False,
        metadata={
            "help": "Let `--resume_from_checkpoint` continue a run whose hyper-parameters differ from the ones it "
            "started with; the differences are recorded under `resumes:` in divalign_recipe.yaml. Off: refused."
        },
    )


RUN_OPTIONS = tuple(f.name for f in dataclasses.fields(RunOptions))


@dataclass(frozen=True)
class LaunchSettings:
    """How `divalign train` launches a recipe: top-level recipe keys, also accepted as `--key value` flags (which win).

    With any of them set, `divalign train` relaunches itself through `accelerate launch ... -m divalign.train`
    (:mod:`divalign.launch.relaunch`); without them the run is in-process. Inside a distributed launch they are not read again.
    """

    accelerate_config: str | None = field(
        default=None,
        metadata={
            "help": "Accelerate config: a preset shipped with divalign (`ddp`, `zero2`, `zero3`; their "
            "`mixed_precision` follows the recipe's bf16/fp16) or the path of a config file (used as written)."
        },
    )
    num_processes: int | None = field(
        default=None, metadata={"help": "Processes over all machines (`accelerate launch --num_processes`)."}
    )
    num_machines: int | None = field(default=None, metadata={"help": "Machines (nodes) taking part in the run."})
    machine_rank: int | None = field(
        default=None, metadata={"help": "This machine's rank, 0 to num_machines - 1; 0 hosts the rendezvous."}
    )
    main_process_ip: str | None = field(default=None, metadata={"help": "Address of machine 0, for multi-node runs."})
    main_process_port: int | None = field(default=None, metadata={"help": "Port of the rendezvous on machine 0."})

    def __post_init__(self) -> None:
        for name in ("num_processes", "num_machines"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise RecipeError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.machine_rank is not None:
            machines = self.num_machines or 1
            if not 0 <= self.machine_rank < machines:
                raise RecipeError(
                    f"`machine_rank` must be in 0..{machines - 1} (num_machines: {machines}), got {self.machine_rank}"
                )
        if self.main_process_port is not None and not 1 <= self.main_process_port <= 65535:
            raise RecipeError(f"`main_process_port` must be a port number (1-65535), got {self.main_process_port}")
        if (self.num_machines or 1) > 1 and self.main_process_ip is None:
            raise RecipeError(f"`num_machines` is {self.num_machines}: set `main_process_ip`, the address of machine 0")

    @property
    def is_set(self) -> bool:
        return any(getattr(self, name) is not None for name in LAUNCH_KEYS)


LAUNCH_KEYS = tuple(f.name for f in dataclasses.fields(LaunchSettings))
DIVALIGN_KEYS = ("trainer", "diversity", "env", *RUN_OPTIONS, *LAUNCH_KEYS)
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}
# A number as YAML 1.2 and Python write it; PyYAML (YAML 1.1) reads `1e-5` (no dot) as a string
_NUMBER = re.compile(r"[-+]?((\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def canonical_flag(arg: str) -> str:
    """``--max-steps`` → ``--max_steps`` (``--key-name=value`` too): the spelling TRL's parser also accepts, as the
    field name. Values and single-dash arguments are left alone."""
    if not arg.startswith("--") or len(arg) == 2:
        return arg
    key, inline, value = arg[2:].partition("=")
    return f"--{key.replace('-', '_')}{inline}{value}"


def canonical_flags(argv: Sequence[str]) -> list[str]:
    return [canonical_flag(arg) for arg in argv]


def load_yaml_mapping(path: str | os.PathLike, kind: str = "recipe") -> dict[str, Any]:
    """Read a YAML ``kind`` file that must hold a mapping; clear errors for a missing file or another shape."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{kind} file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(content, dict):
        raise RecipeError(f"{path} must hold a YAML mapping of {kind} keys, got {type(content).__name__}")
    return content


def field_names(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}


def check_known_keys(keys: Sequence[str], known: set[str], where: str, what: str) -> None:
    """Raise a :class:`RecipeError` naming the first unknown key, with the closest valid names."""
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RecipeError(f"unknown {what} key {key!r} in {where}{hint}")


def _scalar_type(annotation: Any) -> type | None:
    """The plain scalar type a field holds (``float`` for ``float | None``), or ``None`` for anything richer."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    scalars = [a for a in options if a in (bool, int, float)]
    return scalars[0] if len(options) == 1 and scalars else None


def _as_scalar(value: Any, expected: type) -> Any:
    """``value`` as an ``expected`` (bool, int or float), or ``None`` when it is not one.

    Numbers written as strings are read as TRL's parser reads them (``"1e-5"`` is 1e-05); an int key also takes a
    whole number written as a float (``1e3``, ``2.0``). A bool key takes only a bool.
    """
    if expected is bool or isinstance(value, bool):
        return value if expected is bool and isinstance(value, bool) else None
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value.strip()):
            return None
        text = value.strip().replace("_", "")
        value = int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if expected is int:
        return value if isinstance(value, int) else None
    return value if isinstance(value, int | float) else None


def _a(expected: type) -> str:
    return {bool: "true or false", int: "of type int (a whole number)", float: "of type float (a number)"}[expected]


def _typed_value(value: Any, expected: type, key: str, where: str) -> Any:
    """``value`` converted for a field of scalar type ``expected``; a :class:`RecipeError` names ``key`` (at
    ``where``) when it is not one."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return value
    number = _as_scalar(value, expected)
    if number is None:
        raise RecipeError(f"{where} must be {_a(expected)}, got {value!r} ({type(value).__name__})")
    if isinstance(number, float) and math.isnan(number):
        # NaN is never a setting: it compares unequal to every bound a config checks, so it would pass them all
        raise RecipeError(f"`{key}` must be a finite number, got nan ({where})")
    return number


def _field_hints(dataclass_types: Sequence[type]) -> dict[str, Any]:
    return {name: hint for cls in dataclass_types for name, hint in typing.get_type_hints(cls).items()}


def coerce_value_types(content: dict[str, Any], dataclass_types: Sequence[type], where: str) -> dict[str, Any]:
    """``content`` with every int/float key as a number; a :class:`RecipeError` names a key that is not one."""
    hints = _field_hints(dataclass_types)
    coerced = dict(content)
    for key, value in content.items():
        expected = _scalar_type(hints.get(key))
        if expected is not None:
            coerced[key] = _typed_value(value, expected, key, f"recipe key {key!r} in {where}")
    return coerced


def _coerce_flags(argv: Sequence[str], dataclass_types: Sequence[type]) -> list[str]:
    """``argv`` with int/float flag values in the form argparse reads (``--max_steps 1e3`` → ``1000``)."""
    hints = _field_hints(dataclass_types)
    out = list(argv)
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        key, inline, value = arg[2:].partition("=")
        if not inline and i + 1 < len(argv):
            value = argv[i + 1]
        expected = _scalar_type(hints.get(key))
        if expected not in (int, float) or (not inline and i + 1 >= len(argv)):
            continue
        number = _typed_value(value, expected, key, f"flag --{key}")
        if not isinstance(number, str):
            if inline:
                out[i] = f"--{key}={number}"
            else:
                out[i + 1] = str(number)
    return out


def _cli_keys(argv: Sequence[str]) -> list[str]:
    return [arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")]


def _option_value(key: str, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise RecipeError(f"{key!r} in {where} must be true or false, got {value!r}")


def _take_flags(
    overrides: Sequence[str], keys: Collection[str], bare: str | None
) -> tuple[list[tuple[str, str]], list[str]]:
    """``(key, value)`` of each ``--key value`` or ``--key=value`` in ``overrides`` whose key is in ``keys``, in order,
    and the other flags. A key with no value after it takes ``bare``, or is an error when ``bare`` is ``None``."""
    taken: list[tuple[str, str]] = []
    rest: list[str] = []
    args = canonical_flags(overrides)
    i = 0
    while i < len(args):
        key, inline, value = args[i][2:].partition("=") if args[i].startswith("--") else ("", "", "")
        i += 1
        if key not in keys:
            rest.append(args[i - 1])
            continue
        if not inline:
            if i < len(args) and not args[i].startswith("--"):
                value, i = args[i], i + 1
            elif bare is None:
                raise RecipeError(f"flag --{key} needs a value")
            else:
                value = bare
        taken.append((key, value))
    return taken, rest


def flag_values(overrides: Sequence[str], key: str) -> list[str]:
    """The values ``overrides`` gives ``--key`` (``--key value``, ``--key=value``, a bare ``--key`` for true), in order."""
    return [value for _, value in _take_flags(overrides, [key], bare="true")[0]]


def split_run_options(overrides: Sequence[str]) -> tuple[dict[str, bool], list[str]]:
    """The :class:`RunOptions` flags in ``overrides`` (``--key value``, ``--key=value`` or a bare ``--key`` for
    true), and the other flags, for TRL's parser."""
    taken, rest = _take_flags(overrides, RUN_OPTIONS, bare="true")
    return {key: _option_value(key, value, "the command line") for key, value in taken}, rest


def split_launch_flags(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The :class:`LaunchSettings` flags in ``overrides`` (``--key value`` or ``--key=value``, the last one wins), and
    the other flags, for TRL's parser."""
    taken, rest = _take_flags(overrides, LAUNCH_KEYS, bare=None)
    return dict(taken), rest


def _launch_value(key: str, value: Any, where: str) -> Any:
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    if key in ("accelerate_config", "main_process_ip"):
        if not isinstance(value, str) or not value.strip():
            raise RecipeError(f"`{key}` in {where} must be a non-empty string, got {value!r}")
        return value
    return _typed_value(value, int, key, f"`{key}` in {where}")


def read_launch_settings(path: str | os.PathLike, overrides: Sequence[str]) -> LaunchSettings:
    """The recipe's :class:`LaunchSettings`, each overridden by its flag in ``overrides``."""
    content = load_yaml_mapping(path)
    values = {key: _launch_value(key, content[key], str(path)) for key in LAUNCH_KEYS if key in content}
    flags = split_launch_flags(overrides)[0]
    values.update({key: _launch_value(key, value, "the command line") for key, value in flags.items()})
    try:
        return LaunchSettings(**values)
    except RecipeError as error:
        raise RecipeError(f"{path}: {error}") from error


def read_run_options(path: str | os.PathLike, overrides: Sequence[str]) -> RunOptions:
    """The recipe's :class:`RunOptions`, overridden by their flags in ``overrides``."""
    content = load_yaml_mapping(path)
    values = {key: _option_value(key, content[key], str(path)) for key in RUN_OPTIONS if key in content}
    values.update(split_run_options(overrides)[0])
    return RunOptions(**values)


def _check_ranges(
    content: dict[str, Any], flags: Sequence[str], dataclass_types: Sequence[type], path: str | os.PathLike
) -> None:
    """Refuse a number outside its range (:mod:`divalign.launch.value_ranges`), from the recipe or a flag (which wins),
    before the configs are built."""
    values = {key: (value, f"recipe key in {path}") for key, value in content.items() if key in RANGE_KEYS}
    for key, value in _take_flags(flags, RANGE_KEYS, bare="")[0]:
        expected = _scalar_type(_field_hints(dataclass_types).get(key))
        if expected is not None and value:
            values[key] = (_as_scalar(value, expected), f"flag --{key}")
    defaults = {f.name: f.default for cls in dataclass_types for f in dataclasses.fields(cls)}
    message = out_of_range(values, defaults)
    if message:
        raise RecipeError(message)


def _raise_recipe_error(message: str) -> typing.NoReturn:
    raise RecipeError(message)


def parse_recipe(
    path: str | os.PathLike, overrides: Sequence[str], dataclass_types: Sequence[type], trainer: str
) -> tuple[Any, ...]:
    """Parse ``path`` and ``overrides`` (``--key value`` flags) into ``dataclass_types`` with TRL's parser.

    The recipe's own divalign keys must already be removed by the caller (see :func:`split_recipe`).
    """
    from trl import TrlParser

    content = {k: v for k, v in load_yaml_mapping(path).items() if k not in DIVALIGN_KEYS}
    overrides = split_launch_flags(split_run_options(canonical_flags(overrides))[1])[1]
    known = field_names(dataclass_types)
    check_known_keys(list(content), known, f"{path} (trainer: {trainer})", "recipe")
    check_known_keys(_cli_keys(overrides), known, "the command line", "flag")
    content = coerce_value_types(content, dataclass_types, str(path))
    overrides = _coerce_flags(overrides, dataclass_types)
    _check_ranges(content, overrides, dataclass_types, path)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(content, handle)
    try:
        parser = TrlParser(list(dataclass_types))
        parser.error = _raise_recipe_error  # argparse would print the whole usage and exit
        return tuple(parser.parse_args_and_config(["--config", handle.name, *overrides]))
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{path}: {error}") from error
    finally:
        os.unlink(handle.name)


def split_recipe(path: str | os.PathLike, known_trainers: Sequence[str]) -> tuple[str, dict | None, dict]:
    """Read divalign's own keys: the stage name, the ``diversity:`` block and the ``env:`` block."""
    content = load_yaml_mapping(path)
    trainer = content.get("trainer")
    if trainer is None:
        raise RecipeError(f"{path} has no `trainer:` key; expected one of {', '.join(known_trainers)}")
    if trainer not in known_trainers:
        close = difflib.get_close_matches(str(trainer), list(known_trainers), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(
            f"{path}: unknown trainer {trainer!r} (a divalign recipe's `trainer:` names the stage it runs); expected "
            f"one of {', '.join(known_trainers)}{hint}"
        )
    diversity = content.get("diversity")
    if diversity is not None and not isinstance(diversity, dict):
        raise RecipeError(f"{path}: `diversity:` must be a mapping of callback settings, got {diversity!r}")
    env = content.get("env") or {}
    if not isinstance(env, dict):
        raise RecipeError(f"{path}: `env:` must be a mapping of environment variables, got {env!r}")
    written = _env_texts(path) if env else {}
    return trainer, diversity, {_env_key(k, path): _env_value(k, v, path, written) for k, v in env.items()}


def _env_key(key: Any, path: str | os.PathLike) -> str:
    """An ``env:`` key as a variable name: the OS takes no empty name and none holding ``=`` (``NAME=value`` is how
    the environment stores a variable) or a NUL byte."""
    name = "" if key is None else str(key)
    if not name.strip() or "=" in name or "\0" in name:
        why = "an empty name" if not name.strip() else "a name holding '='" if "=" in name else "a name holding NUL"
        raise RecipeError(
            f"{path}: `env:` key {key!r} is {why}; an environment variable's name is non-empty and holds no '=' "
            "(write `NAME: value`, e.g. `WANDB_MODE: offline`)"
        )
    return name


def _env_texts(path: str | os.PathLike) -> dict[Any, str]:
    """The text of each plain (unquoted) scalar of the ``env:`` block as written in the file, by its parsed key.

    PyYAML reads YAML 1.1, where ``010`` is octal (8), ``1:30`` base 60 (90) and ``1_000`` is 1000: an environment
    variable gets what the recipe says, not Python's spelling of that number."""
    try:
        root = yaml.compose(Path(path).read_text())
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key_node, value_node in root.value:
        if key_node.value == "env" and isinstance(value_node, yaml.MappingNode):
            loader = yaml.SafeLoader("")
            return {
                loader.construct_object(k, deep=True): v.value
                for k, v in value_node.value
                if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode) and v.style is None
            }
    return {}


def _env_value(key: Any, value: Any, path: str | os.PathLike, written: dict[Any, str] | None = None) -> str:
    """An ``env:`` value as the variable's text: a string, or a number as written in the recipe (:func:`_env_texts`).
    YAML's null, true/false, lists and mappings have no one spelling as an environment variable (Python would set
    'None', 'True', '[1, 2]')."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (written or {}).get(key, str(value))
    kind = "null" if value is None else {bool: "a boolean", list: "a list", dict: "a mapping"}.get(type(value), "")
    hint = f" (quote it: {key}: '{str(value).lower()}')" if isinstance(value, bool) else ""
    raise RecipeError(
        f"{path}: `env: {key}` must be a string or a number, got {value!r}{f' ({kind})' if kind else ''}{hint}"
    )
