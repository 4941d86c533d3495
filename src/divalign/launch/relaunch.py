"""How a recipe is launched: in this process, or relaunched through accelerate's own launch command.

A recipe's launcher keys (:class:`~divalign.launch.recipe.LaunchSettings`: ``accelerate_config``, ``num_processes`` and the
multi-node ``num_machines``, ``machine_rank``, ``main_process_ip``, ``main_process_port``), each overridden by its
command-line flag, turn ``divalign train RECIPE`` into

    accelerate launch [--config_file CONFIG] [--num_processes N ...] -m divalign.train RECIPE [flags]

as TRL's ``trl sft --config`` does. ``accelerate launch`` runs its argument as a Python script, so the module needs
``-m``. Without launcher keys the run is in-process; inside a distributed launch (the environment ``accelerate
launch``, ``torchrun`` or DeepSpeed's launcher give each rank) there is no relaunch. ``divalign pipeline`` builds each
stage's command here too, with the stage's ``accelerate_config``/``launch_args`` between the recipe and its overrides.

Presets ship inside the package (``divalign/accelerate_configs/*.yaml``; the repository's ``accelerate_configs/``
links there): a preset's ``mixed_precision`` follows the recipe's ``bf16``/``fp16``, a config file of your own is used
as written (and :mod:`divalign.launch.precision` refuses one that disagrees with the recipe before the model loads).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .recipe import LAUNCH_KEYS, LaunchSettings, RecipeError, read_launch_settings, split_launch_flags

TRAIN_ENTRY = ("-m", "divalign.train")
ACCELERATE_LAUNCH = ("-m", "accelerate.commands.launch")
# Set for every rank by `accelerate launch` (all its launchers), torchrun and DeepSpeed's launcher
LAUNCHED_RANK_ENV = ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")
PRESET_SUFFIX = ".yaml"


def preset_directory() -> Path:
    """Where the installed package keeps its accelerate config presets."""
    return Path(str(resources.files("divalign").joinpath("accelerate_configs")))


def preset_names() -> list[str]:
    return sorted(path.stem for path in preset_directory().glob(f"*{PRESET_SUFFIX}"))


def resolve_accelerate_config(value: str | os.PathLike) -> tuple[Path, bool]:
    """``(path, is_preset)`` for an ``accelerate_config`` value: an existing file, else a preset's name."""
    path = Path(value)
    if path.is_file():
        return path, False
    preset = preset_directory() / f"{value}{PRESET_SUFFIX}"
    if preset.is_file():
        return preset, True
    raise RecipeError(
        f"accelerate_config {str(value)!r} is neither a file nor a preset; presets: {', '.join(preset_names())}"
    )


def inside_distributed_launch(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a rank started by a distributed launcher (then it never relaunches)."""
    return any(name in env for name in LAUNCHED_RANK_ENV)


def _option(arg: str) -> tuple[str, str | None]:
    """``--num-processes=2`` → ``("num_processes", "2")``; accelerate takes hyphens or underscores."""
    name, inline, value = arg[2:].partition("=")
    return name.replace("-", "_"), value if inline else None


def split_launch_args(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The launcher keys (and ``--config_file``, as ``accelerate_config``) among raw ``accelerate launch`` arguments,
    and the arguments left, in order."""
    settings: dict[str, str] = {}
    rest: list[str] = []
    args = list(args)
    i = 0
    while i < len(args):
        name, inline = _option(args[i]) if args[i].startswith("--") else ("", None)
        key = "accelerate_config" if name == "config_file" else name
        if key not in LAUNCH_KEYS:
            rest.append(args[i])
            i += 1
            continue
        if inline is None and i + 1 >= len(args):
            raise RecipeError(f"launch argument {args[i]} needs a value")
        settings[key] = inline if inline is not None else args[i + 1]
        i += 1 if inline is not None else 2
    return settings, rest


def _has_option(args: Sequence[str], name: str) -> bool:
    return any(arg.startswith("--") and _option(arg)[0] == name for arg in args)


@dataclass(frozen=True)
class LaunchRequest:
    """The launcher settings of a run, merged: recipe < stage config and launch args (pipelines) < command line."""

    settings: LaunchSettings
    extra_args: tuple[str, ...] = ()  # other `accelerate launch` arguments (pipelines' `launch_args`, e.g. --cpu)
    always: bool = False  # launch through accelerate even without settings (a pipeline stage is a subprocess)

    @property
    def relaunches(self) -> bool:
        return self.always or self.settings.is_set or bool(self.extra_args)

    @property
    def config(self) -> tuple[Path | None, bool]:
        """The accelerate config file and whether it is a preset."""
        value = self.settings.accelerate_config
        return (None, False) if value is None else resolve_accelerate_config(value)

    def launch_args(self, precision: str | None) -> list[str]:
        """``accelerate launch`` arguments; a preset runs in the recipe's ``precision`` unless the arguments say."""
        config, is_preset = self.config
        args = [] if config is None else ["--config_file", str(config)]
        for name in LAUNCH_KEYS[1:]:
            if getattr(self.settings, name) is not None:
                args += [f"--{name}", str(getattr(self.settings, name))]
        args += self.extra_args
        if is_preset and precision is not None and not _has_option(self.extra_args, "mixed_precision"):
            args += ["--mixed_precision", precision]
        return args


def launch_request(
    recipe: str | os.PathLike,
    flags: Sequence[str],
    *,
    accelerate_config: str | os.PathLike | None = None,
    launch_args: Sequence[str] = (),
    always: bool = False,
) -> LaunchRequest:
    """Merge the launcher settings of ``recipe``, of a pipeline stage (``accelerate_config``, ``launch_args``) and of
    the command-line ``flags``, later ones winning; a :class:`~divalign.launch.recipe.RecipeError` names a bad value."""
    from_args, extra = split_launch_args(launch_args)
    if accelerate_config is not None:
        from_args.setdefault("accelerate_config", str(accelerate_config))
    stage_flags = [part for key, value in from_args.items() for part in (f"--{key}", value)]
    # the flags last: read_launch_settings lets the later of two values for one key win
    settings = read_launch_settings(recipe, [*stage_flags, *flags])
    if settings.accelerate_config is not None:
        resolve_accelerate_config(settings.accelerate_config)  # fail now, naming the value
    return LaunchRequest(settings, tuple(extra), always)


@dataclass(frozen=True)
class LaunchPlan:
    """What runs: ``python -m divalign.train RECIPE flags`` in-process, or ``accelerate launch ARGS -m ... RECIPE
    flags`` (``launch_args`` not ``None``)."""

    recipe: str
    train_flags: tuple[str, ...]
    launch_args: tuple[str, ...] | None = None
    entry: tuple[str, ...] = TRAIN_ENTRY
    config_file: Path | None = None

    @property
    def relaunches(self) -> bool:
        return self.launch_args is not None

    @property
    def command(self) -> list[str]:
        script = [*self.entry, self.recipe, *self.train_flags]
        if self.launch_args is None:
            return [sys.executable, *script]
        return [sys.executable, *ACCELERATE_LAUNCH, *self.launch_args, *script]

    def shell(self) -> str:
        """The command as a user would type it (``accelerate launch ...``, ``python -m divalign.train ...``)."""
        words = self.command
        if self.relaunches:
            words = ["accelerate", "launch", *words[1 + len(ACCELERATE_LAUNCH) :]]
        else:
            words = ["python", *words[1:]]
        return shlex.join(words)


def plan_launch(
    request: LaunchRequest,
    recipe: str | os.PathLike,
    flags: Sequence[str],
    precision: str | None,
    entry: Sequence[str] = TRAIN_ENTRY,
) -> LaunchPlan:
    """The command for ``recipe`` with ``flags`` (launcher flags removed: the launched ranks do not relaunch)."""
    train_flags = tuple(split_launch_flags(flags)[1])
    if not request.relaunches:
        return LaunchPlan(str(recipe), train_flags, None, tuple(entry))
    config, _ = request.config
    return LaunchPlan(str(recipe), train_flags, tuple(request.launch_args(precision)), tuple(entry), config)


def run_command(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` in the foreground and return its exit status.

    Ctrl-C reaches the launcher directly (same process group), which stops its ranks; this process waits for it to
    finish instead of killing it half-way.
    """
    process = subprocess.Popen(list(command), env=None if env is None else dict(env))
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue
