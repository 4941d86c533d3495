"""How a demo runs a shipped compare spec: its output directory and command line, the offline environment, and the
spec derived for another output directory.

The demos (``make demo``, ``make demo-real``) run a shipped spec as it is, or, with another ``--out`` or a smaller
plan, a copy of it and its recipes under ``OUT/spec/`` with every path under ``OUT``: :func:`derive_spec`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the block in ``path`` (a shipped spec's paths start at the repository root); the caller's is restored."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def offline_environment(out: Path, extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """:data:`OFFLINE_ENV` (and ``extra``) with W&B under ``out``; a variable the caller set is kept; the environment
    is restored afterwards."""
    before = dict(os.environ)
    for key, value in {**OFFLINE_ENV, **(extra or {}), "WANDB_DIR": str(out)}.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def _derived_recipe(recipe: Path, out: Path, directory: Path, every_steps: int | None) -> Path:
    """A copy of a shipped recipe reading the world and the base model under ``out`` (and the callback's cadence)."""
    content = yaml.safe_load(recipe.read_text())
    content.update(
        model_name_or_path=str(out / "base_model"),
        dataset_name=str(out / "world" / Path(content["dataset_name"]).name),
        output_dir=str(out / recipe.stem),
    )
    content["diversity"]["prompts"] = str(out / "world" / "prompts_probe.jsonl")
    if every_steps is not None:
        content["diversity"]["every_steps"] = every_steps
    path = directory / recipe.name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


class SpecChanges(Protocol):
    """What a demo's plan changes in the shipped spec (the demos' ``Plan`` dataclasses)."""

    variants: tuple[str, ...] | None  # None: the spec's (the reference is always kept)
    seeds: Sequence[int] | None  # None: the spec's
    overrides: Mapping[str, Any]  # added to the spec's `overrides`
    evaluation: Mapping[str, Any]  # replace keys of the spec's `evaluation`
    diversity_every_steps: int | None  # the recipes' diversity callback


def derive_spec(spec: Path, out: Path, plan: SpecChanges) -> Path:
    """``OUT/spec/<spec's name>``: the shipped ``spec`` (relative to the repository root, as its own paths are) with
    every path under ``out`` and the plan's changes."""
    content = yaml.safe_load((REPO_ROOT / spec).read_text())
    shipped = content["variants"]
    unknown = sorted(set(plan.variants or ()) - set(shipped))
    if unknown:
        raise ValueError(f"Plan.variants: {unknown} are not variants of {spec} ({', '.join(shipped)})")
    directory = out / "spec"
    directory.mkdir(parents=True, exist_ok=True)
    keep = set(plan.variants or shipped) | {content.get("reference")}
    shipped_root = Path(content["output_root"])
    content["output_root"] = str(out / "compare")
    content["base_model"] = str(out / "base_model")
    content["variants"] = {
        name: str(_derived_recipe(REPO_ROOT / recipe, out, directory, plan.diversity_every_steps))
        for name, recipe in shipped.items()
        if name in keep
    }
    if plan.seeds is not None:
        content["seeds"] = list(plan.seeds)
    content["overrides"] = {**(content.get("overrides") or {}), **plan.overrides}
    content["evaluation"].update(
        prompts=str(out / "world" / "prompts_eval.jsonl"),
        calibration_prompts=str(out / "world" / "prompts_calibration.jsonl"),
        **plan.evaluation,
    )
    if content.get("then"):
        content["then"] = [_derived_stage(stage, out, directory, plan) for stage in content["then"]]
    for holder, key in ((content, "report_dir"), (content["evaluation"], "samples_dir")):
        if holder.get(key) is not None:
            holder[key] = str(_rebased(holder[key], shipped_root, out / "compare"))
    path = directory / spec.name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def _derived_stage(stage: str | dict[str, Any], out: Path, directory: Path, plan: SpecChanges) -> dict[str, Any]:
    """A `then:` stage of the shipped spec, its recipe derived as the variants' are."""
    stage = {"recipe": stage} if isinstance(stage, str) else dict(stage)
    stage["recipe"] = str(_derived_recipe(REPO_ROOT / stage["recipe"], out, directory, plan.diversity_every_steps))
    return stage


def _rebased(path: str, shipped_root: Path, root: Path) -> Path:
    """``path`` (under the shipped spec's output root) under ``root`` instead."""
    try:
        return root / Path(path).relative_to(shipped_root)
    except ValueError as error:
        raise ValueError(f"{path} is not under the spec's output_root {shipped_root}: it cannot be derived") from error


def output_directory(out: str | Path | None, quick: bool, fresh: bool, default: Path, quick_default: Path) -> Path:
    """The demo's ``--out`` (absolute; by default ``default``, with ``--quick`` ``quick_default``), deleted first
    when ``fresh``."""
    out = Path(out if out is not None else quick_default if quick else default).resolve()
    if fresh and out.exists():
        shutil.rmtree(out)
    return out


def demo_main(
    argv: Sequence[str] | None,
    run_demo: Callable[[str | None, bool, bool], Path],
    module: str,
    doc: str,
    outs: tuple[Path, Path],
    quick_help: str,
) -> int:
    """A demo's command line: ``python -m MODULE [--out OUT] [--quick] [--fresh]`` (described by the first paragraph
    of the module's ``doc``; ``outs``: the default ``--out`` and the one with ``--quick``), handed to
    ``run_demo(out, quick, fresh)``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"output directory (default: {outs[0]}; with --quick: {outs[1]})")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--fresh", action="store_true", help="delete --out first instead of reusing finished work")
    args = parser.parse_args(argv)
    run_demo(args.out, args.quick, args.fresh)
    return 0
