"""Compare spec files: read a spec and check its keys, variants, seeds, reference and evaluation before any cell
trains, naming the key at fault. Paths in a spec are relative to the working directory, like recipe paths; the
format is recipes/compare/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..launch.recipe import RecipeError, check_known_keys, load_yaml_mapping
from .evaluation_checks import check_evaluation
from .spec import CompareError, CompareSpec

SPEC_KEYS = {
    "name",
    "output_root",
    "base_model",
    "variants",
    "then",
    "seeds",
    "reference",
    "evaluation",
    "overrides",
    "accelerate_config",
    "launch_args",
    "wandb_group",
    "evaluate_stages",
    "report_dir",
}
STAGE_KEYS = {"name", "recipe", "overrides", "accelerate_config", "launch_args", "adapters"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")  # no '-': a cell is VARIANT-seedN


def _known(keys: list[str], known: set[str], where: str, what: str) -> None:
    try:
        check_known_keys(keys, known, where, what)
    except RecipeError as error:
        raise CompareError(f"{error}; valid keys: {', '.join(sorted(known))}") from error


def _stage(raw: Any, where: str) -> dict[str, Any]:
    """A stage as a pipeline file writes it: a recipe path (named after its file) or a mapping with `recipe`."""
    if isinstance(raw, str):
        raw = {"recipe": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("recipe"), str) or not raw["recipe"]:
        raise CompareError(f"{where}: expected a recipe path or a mapping with `recipe: PATH`, got {raw!r}")
    _known(list(raw), STAGE_KEYS, where, "stage")
    recipe = Path(raw["recipe"])
    if not recipe.is_file():
        raise CompareError(f"{where}: recipe file not found: {recipe}")
    return {"name": recipe.stem, **raw}


def _stages(raw: Any, where: str) -> list[dict[str, Any]]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise CompareError(f"{where}: expected a recipe path or a non-empty list of stages, got {raw!r}")
    stages = [_stage(item, f"{where}[{i}]" if isinstance(raw, list) else where) for i, item in enumerate(items)]
    return stages


def _variants(content: dict[str, Any], path: Path) -> dict[str, list[dict[str, Any]]]:
    raw = content.get("variants")
    if not isinstance(raw, dict) or not raw:
        raise CompareError(
            f"{path}: `variants` must be a mapping of variant name -> recipe path or list of stages, got {raw!r}"
        )
    then = _stages(content["then"], f"{path}: then") if content.get("then") is not None else []
    variants = {}
    for name, stages in raw.items():
        where = f"{path}: variants.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise CompareError(f"{where}: a variant name is a word of letters, digits, '_' and '.', got {name!r}")
        variants[name] = [*_stages(stages, where), *then]
        names = [stage["name"] for stage in variants[name]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise CompareError(
                f"{where}: two stages are named {twice[0]!r} (a stage is named after its recipe file); give them "
                "distinct `name:` keys"
            )
    return variants


def _seeds(raw: Any, path: Path) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise CompareError(f"{path}: `seeds` must be a non-empty list of distinct integers, got {raw!r}")
    for seed in raw:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise CompareError(f"{path}: `seeds` must be distinct non-negative integers, got {seed!r} in {raw!r}")
    twice = sorted({s for s in raw if raw.count(s) > 1})
    if twice:
        raise CompareError(f"{path}: `seeds` lists {twice[0]} twice; every seed is one cell per variant")
    return tuple(raw)


def _evaluate_stages(
    raw: Any, variants: dict[str, list[dict[str, Any]]], reference: str, path: Path
) -> tuple[str, ...] | None:
    """`evaluate_stages`: names of the reference variant's stages; every variant is read at its stage in the same
    position, so the variants must have equally many stages."""
    if raw is None:
        return None
    stages = [stage["name"] for stage in variants[reference]]
    if not isinstance(raw, list) or not raw or not all(isinstance(name, str) for name in raw):
        raise CompareError(
            f"{path}: `evaluate_stages` must be a non-empty list of stage names of the reference {reference!r} "
            f"({', '.join(stages)}), got {raw!r}"
        )
    for name in raw:
        if name not in stages:
            raise CompareError(
                f"{path}: `evaluate_stages` names {name!r}, which is no stage of the reference variant {reference!r}; "
                f"its stages are {', '.join(stages)}"
            )
    twice = sorted({name for name in raw if raw.count(name) > 1})
    if twice:
        raise CompareError(f"{path}: `evaluate_stages` lists {twice[0]!r} twice")
    counts = {name: len(v) for name, v in variants.items()}
    if len(set(counts.values())) > 1:
        raise CompareError(
            f"{path}: `evaluate_stages` reads every variant at the reference's stage in the same position, so the "
            f"variants need equally many stages; stages per variant: "
            + ", ".join(f"{name} {count}" for name, count in counts.items())
        )
    return tuple(raw)


def _mapping(value: Any, key: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CompareError(f"{path}: `{key}` must be a mapping, got {value!r}")
    return value


def load_compare(path: str | Path) -> CompareSpec:
    """Read the spec at ``path`` and check its keys, variants, seeds, reference and evaluation (recipes are checked
    as launches when the cells are built: :func:`divalign.compare.cells.build_cells`)."""
    path = Path(path)
    try:
        content = load_yaml_mapping(path, kind="compare spec")
    except RecipeError as error:
        raise CompareError(str(error)) from error
    _known(list(content), SPEC_KEYS, str(path), "compare spec")
    for key in ("name", "output_root", "variants", "seeds", "reference", "evaluation"):
        if content.get(key) is None:
            raise CompareError(f"{path}: `{key}` is required")
    for key in ("name", "output_root", "reference"):
        if not isinstance(content[key], str) or not content[key]:
            raise CompareError(f"{path}: `{key}` must be a string, got {content[key]!r}")
    variants = _variants(content, path)
    if content["reference"] not in variants:
        raise CompareError(
            f"{path}: `reference` must name a variant ({', '.join(variants)}), got {content['reference']!r}"
        )
    launch_args = content.get("launch_args")
    report_dir = content.get("report_dir")
    if report_dir is not None and (not isinstance(report_dir, str) or not report_dir):
        raise CompareError(f"{path}: `report_dir` must be a directory path, got {report_dir!r}")
    return CompareSpec(
        path=path,
        name=content["name"],
        output_root=Path(content["output_root"]),
        variants=variants,
        seeds=_seeds(content["seeds"], path),
        reference=content["reference"],
        evaluation=check_evaluation(_mapping(content["evaluation"], "evaluation", path), path),
        base_model=content.get("base_model"),
        overrides=_mapping(content.get("overrides"), "overrides", path),
        accelerate_config=content.get("accelerate_config"),
        launch_args=None if launch_args is None else tuple(str(a) for a in launch_args),
        wandb_group=content.get("wandb_group"),
        evaluate_stages=_evaluate_stages(content.get("evaluate_stages"), variants, content["reference"], path),
        report_root=None if report_dir is None else Path(report_dir),
    )
