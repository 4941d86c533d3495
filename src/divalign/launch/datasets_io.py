"""Load a recipe's dataset (Hub id, local file or saved dataset) and check the splits and columns a stage reads.

Every failure names the file (and, for JSON Lines, the line) or the split at fault, instead of surfacing as the
``datasets`` builder's ``StopIteration`` (an empty file) or ``DatasetGenerationError`` (a malformed line).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from .recipe import RecipeError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _is_blank(path: Path) -> bool:
    """Whether the file holds nothing but whitespace (read until the first other character)."""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def first_bad_json_line(path: Path) -> tuple[int, str] | None:
    """The first line of a JSON Lines file that is not one JSON object: (line number, why), or ``None``."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                return number, f"not valid JSON ({error.msg} at column {error.colno})"
            if not isinstance(record, dict):
                return number, f"a JSON {type(record).__name__}, not an object with one field per column"
    return None


def _load_file(path: Path, builder: str) -> DatasetDict:
    if _is_blank(path):
        raise RecipeError(f"dataset file {path} is empty (dataset_name)")
    try:
        return load_dataset(builder, data_files=str(path))
    except Exception as error:
        bad = first_bad_json_line(path) if path.suffix == ".jsonl" else None
        if bad is not None:
            raise RecipeError(f"dataset file {path}, line {bad[0]}: {bad[1]}") from error
        cause = error.__cause__ or error
        raise RecipeError(f"could not read dataset file {path} as {builder}: {cause}") from error


def _load_local(path: Path) -> DatasetDict:
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise RecipeError(f"dataset file {path} has an unknown extension; expected one of {sorted(FILE_BUILDERS)}")
        return _load_file(path, builder)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            loaded = load_from_disk(str(path))
        except Exception as error:  # e.g. a split saved with no rows: datasets cannot read it back
            raise RecipeError(f"could not read the saved dataset {path} (dataset_name): {error!r}") from error
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict(train=loaded)
    try:
        return load_dataset(str(path))
    except Exception as error:
        raise RecipeError(f"could not read the dataset folder {path} (dataset_name): {error}") from error


def load_recipe_dataset(script_args) -> DatasetDict:
    """The dataset named by ``dataset_name``: a local path if one exists there, else a Hub dataset id."""
    name = script_args.dataset_name
    if not name:
        raise RecipeError("`dataset_name` is required: a Hub dataset id or a local .jsonl/.json/.parquet file or dir")
    path = Path(name)
    if not path.exists() and (path.suffix in FILE_BUILDERS or name.startswith((".", "/", "~"))):
        raise RecipeError(f"dataset file not found: {name} (dataset_name)")
    dataset = (
        _load_local(path)
        if path.exists()
        else load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)
    )
    if isinstance(dataset, Dataset):
        dataset = DatasetDict(train=dataset)
    split = script_args.dataset_train_split
    if split not in dataset:
        raise RecipeError(f"dataset {name!r} has no split {split!r} (dataset_train_split); it has {list(dataset)}")
    if isinstance(dataset[split], Dataset) and len(dataset[split]) == 0:
        raise RecipeError(f"dataset {name!r}: split {split!r} (dataset_train_split) has no rows")
    return dataset


def eval_split(dataset: DatasetDict, script_args, training_args) -> Dataset | None:
    """The evaluation split when the run evaluates (``eval_strategy`` not ``no``), else ``None``."""
    strategy = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy))
    if strategy == "no":
        return None
    split = script_args.dataset_test_split
    if split not in dataset:
        raise RecipeError(
            f"eval_strategy is {strategy!r} but dataset {script_args.dataset_name!r} has no split {split!r} "
            f"(dataset_test_split); it has {list(dataset)}. Set dataset_test_split to one of them, or eval_strategy: "
            "'no'"
        )
    if isinstance(dataset[split], Dataset) and len(dataset[split]) == 0:
        raise RecipeError(f"dataset {script_args.dataset_name!r}: split {split!r} (dataset_test_split) has no rows")
    return dataset[split]


def check_columns(dataset, alternatives: Sequence[tuple[str, ...]], dataset_name: str) -> None:
    """Raise unless ``dataset`` has every column of at least one of ``alternatives``."""
    columns = set(dataset.column_names or [])
    if any(set(option) <= columns for option in alternatives):
        return
    wanted = " or ".join("+".join(option) for option in alternatives)
    raise RecipeError(f"dataset {dataset_name!r} is missing columns: it needs {wanted}, but has {sorted(columns)}")
