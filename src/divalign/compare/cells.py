"""A compare spec's cells: one pipeline (`divalign pipeline`'s own spec) per variant × seed.

Cell ``VARIANT-seedN`` is the variant's stages with ``seed: N`` (and ``data_seed: N`` where a stage sets a data seed)
in every stage's overrides, written under ``OUTPUT_ROOT/cells/VARIANT-seedN/<stage>``. Each cell is validated as a
pipeline file is (recipes, overrides, outputs, adapters), so a bad recipe is refused before any cell trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..launch.recipe import RecipeError, load_yaml_mapping
from ..pipeline.spec import PipelineError, PipelineSpec, pipeline_from_mapping
from .spec import CompareError, CompareSpec

CELLS_DIR = "cells"


@dataclass(frozen=True)
class Cell:
    """One variant trained with one seed: a pipeline whose last stage's output is the model compared."""

    variant: str
    seed: int
    pipeline: PipelineSpec

    @property
    def name(self) -> str:
        return cell_name(self.variant, self.seed)

    @property
    def directory(self) -> Path:
        return self.pipeline.output_root

    @property
    def model_dir(self) -> Path:
        return self.pipeline.stages[-1].output_dir


def cell_name(variant: str, seed: int) -> str:
    return f"{variant}-seed{seed}"


def _base_model(spec: CompareSpec, variant: str, first: dict[str, Any]) -> str:
    """The spec's `base_model`, else the first stage's recipe's `model_name_or_path`."""
    if spec.base_model is not None:
        return spec.base_model
    try:
        model = load_yaml_mapping(first["recipe"]).get("model_name_or_path")
    except RecipeError as error:
        raise CompareError(f"{spec.path}: variants.{variant}: {error}") from error
    if not isinstance(model, str) or not model:
        raise CompareError(
            f"{spec.path}: variants.{variant}: {first['recipe']} sets no `model_name_or_path`; set `base_model` in the "
            "spec (the model every variant starts from)"
        )
    return model


def _seeded(stage: dict[str, Any], spec: CompareSpec, seed: int) -> dict[str, Any]:
    """The stage with the spec's and its own overrides, and the cell's seed (and data seed, where one is set)."""
    overrides = {**spec.overrides, **(stage.get("overrides") or {}), "seed": seed}
    if "data_seed" in overrides or "data_seed" in load_yaml_mapping(stage["recipe"]):
        overrides["data_seed"] = seed
    return {**stage, "overrides": overrides}


def _pipeline(spec: CompareSpec, variant: str, seed: int) -> PipelineSpec:
    stages = spec.variants[variant]
    name = cell_name(variant, seed)
    content: dict[str, Any] = {
        "name": name,
        "output_root": str(spec.output_root / CELLS_DIR / name),
        "base_model": _base_model(spec, variant, stages[0]),
        "stages": [_seeded(stage, spec, seed) for stage in stages],
    }
    if spec.accelerate_config is not None:
        content["accelerate_config"] = spec.accelerate_config
    if spec.launch_args is not None:
        content["launch_args"] = list(spec.launch_args)
    try:
        return pipeline_from_mapping(content, spec.path)
    except PipelineError as error:
        raise CompareError(f"variants.{variant} (cell {name}): {error}") from error


def build_cells(spec: CompareSpec) -> list[Cell]:
    """Every variant × seed cell of ``spec``, in spec order (variants, then seeds), each validated as a pipeline."""
    return [Cell(variant, seed, _pipeline(spec, variant, seed)) for variant in spec.variants for seed in spec.seeds]


def find_cell(cells: list[Cell], name: str, spec: CompareSpec) -> Cell:
    for cell in cells:
        if cell.name == name:
            return cell
    raise CompareError(f"{spec.path}: no cell named {name!r}; cells are {', '.join(c.name for c in cells)}")
