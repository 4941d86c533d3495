"""A compare spec's `evaluation:` block checked before any cell trains: every value's type and range, the metric,
the verifier and quality (as `divalign eval` takes them), and both prompt sets read, with no prompt in both."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .spec import CompareError, EvaluationSpec

# field -> (type, lowest allowed value, whether the lowest is allowed)
_NUMBERS: dict[str, tuple[type, float, bool]] = {
    "samples": (int, 2, True),
    "max_new_tokens": (int, 1, True),
    "max_bisection_steps": (int, 1, True),
    "seed": (int, 0, True),
    "batch_size": (int, 1, True),
    "n_bootstrap": (int, 1, True),
    "reference_temperature": (float, 0, False),
    "tolerance": (float, 0, False),
}
_STRINGS = ("prompts", "calibration_prompts", "prompts_column", "answer_column", "quality", "verifier", "samples_dir")


def _number(key: str, value: Any, where: str) -> float:
    kind, lowest, inclusive = _NUMBERS[key]
    ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
    in_range = ok_type and (value >= lowest if inclusive else value > lowest)
    if isinstance(value, bool) or not in_range:
        bound = f">= {lowest}" if inclusive else f"> {lowest}"
        raise CompareError(
            f"{where}: `{key}` must be {'an integer' if kind is int else 'a number'} {bound}, got {value!r}"
        )
    return kind(value)


def _temperature_range(value: Any, where: str) -> tuple[float, float]:
    ok = isinstance(value, list | tuple) and len(value) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or not 0 < value[0] < value[1]:
        raise CompareError(f"{where}: `temperature_range` must be [LOW, HIGH] with 0 < LOW < HIGH, got {value!r}")
    return float(value[0]), float(value[1])


def _temperature_grid(value: Any, where: str) -> tuple[float, ...]:
    ok = isinstance(value, list | tuple) and len(value) > 0
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise CompareError(f"{where}: `temperature_grid` must be a non-empty list of temperatures > 0, got {value!r}")
    return tuple(sorted({float(v) for v in value}))


def _values(raw: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(EvaluationSpec)}
    from ..launch.recipe import RecipeError, check_known_keys

    try:
        check_known_keys(list(raw), known, where, "evaluation")
    except RecipeError as error:
        raise CompareError(f"{error}; valid keys: {', '.join(sorted(known))}") from error
    for key in ("prompts", "calibration_prompts"):
        if key not in raw:
            raise CompareError(f"{where}: `{key}` is required (a prompts file, a dataset folder or a Hub dataset id)")
    values = dict(raw)
    for key in _STRINGS:
        if values.get(key) is not None and (not isinstance(values[key], str) or not values[key].strip()):
            raise CompareError(f"{where}: `{key}` must be a non-empty string, got {values[key]!r}")
    for key in _NUMBERS:
        if key in values:
            values[key] = _number(key, values[key], where)
    if "temperature_range" in values:
        values["temperature_range"] = _temperature_range(values["temperature_range"], where)
    if values.get("temperature_grid") is not None:
        values["temperature_grid"] = _temperature_grid(values["temperature_grid"], where)
    if values.get("tolerance", 0) >= 1:
        raise CompareError(f"{where}: `tolerance` is relative and must be below 1, got {values['tolerance']!r}")
    return values


def _check_metric(name: Any, where: str) -> None:
    from ..diversity import validate_metrics

    try:
        validate_metrics([name])
    except ValueError as error:
        raise CompareError(f"{where}: `diversity_metric`: {error}") from error


def _read(evaluation: EvaluationSpec, key: str, where: str) -> list[Any] | None:
    """The prompt records of a local source (None for a Hub dataset id, read when the comparison samples)."""
    from ..pipeline.spec import is_local_prompts
    from ..prompts import load_prompts

    source = getattr(evaluation, key)
    if not is_local_prompts(source):
        return None
    if not Path(source).expanduser().exists():
        raise CompareError(f"{where}: `{key}` file not found: {source}")
    try:
        return load_prompts(source, column=evaluation.prompts_column, answer_column=evaluation.answer_column)
    except (ValueError, FileNotFoundError) as error:
        raise CompareError(f"{where}: `{key}`: {error}") from error


def _check_prompts(evaluation: EvaluationSpec, where: str) -> list[Any] | None:
    if Path(evaluation.prompts).expanduser().resolve() == Path(evaluation.calibration_prompts).expanduser().resolve():
        raise CompareError(
            f"{where}: `calibration_prompts` must be other prompts than `prompts`, both are {evaluation.prompts}"
        )
    records = _read(evaluation, "prompts", where)
    calibration = _read(evaluation, "calibration_prompts", where)
    if records is not None and calibration is not None:
        shared = {prompt_key(r.prompt) for r in records} & {prompt_key(r.prompt) for r in calibration}
        if shared:
            raise CompareError(
                f"{where}: {len(shared)} prompt(s) are in both `prompts` and `calibration_prompts` (e.g. "
                f"{sorted(shared)[0]!r:.120}); the temperatures are calibrated on prompts the comparison does not read"
            )
    return records


def _check_quality(evaluation: EvaluationSpec, records: list[Any] | None, where: str) -> None:
    if evaluation.quality is None and evaluation.verifier is None:
        raise CompareError(
            f"{where}: set `quality` (as `divalign eval --quality`) or `verifier` (MODULE:FUNCTION): the comparison "
            "matches quality as well as diversity"
        )
    if evaluation.verifier is not None:
        from ..user_code import load_verifier

        try:
            load_verifier(evaluation.verifier)
        except (ValueError, ImportError, AttributeError) as error:
            raise CompareError(f"{where}: `verifier`: {error}") from error
    if evaluation.quality is not None:
        from ..rewards.quality import Quality

        try:
            quality = Quality(evaluation.quality, where=f"{where}: `quality` {evaluation.quality!r}")
            if records is not None:
                quality.check_columns([r.columns for r in records], evaluation.prompts)
        except (ValueError, ImportError) as error:
            raise CompareError(str(error)) from error


def check_evaluation(raw: dict[str, Any], path: Path) -> EvaluationSpec:
    """The `evaluation:` mapping of the spec at ``path`` as an :class:`EvaluationSpec`, every value checked."""
    where = f"{path}: evaluation"
    evaluation = EvaluationSpec(**_values(raw, where))
    _check_metric(evaluation.diversity_metric, where)
    records = _check_prompts(evaluation, where)
    _check_quality(evaluation, records, where)
    return evaluation


def prompt_key(prompt: Any) -> str:
    """A prompt's identity for the overlap check: its text, or its chat messages as JSON."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
