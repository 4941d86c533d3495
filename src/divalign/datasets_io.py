"""Load a recipe's dataset (Hub id, local file or saved dataset) and check the columns a stage reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from .recipe import RecipeError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _load_local(path: Path) -> DatasetDict:
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise RecipeError(f"dataset file {path} has an unknown extension; expected one of {sorted(FILE_BUILDERS)}")
        return load_dataset(builder, data_files=str(path))
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = load_from_disk(str(path))
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict(train=loaded)
    return load_dataset(str(path))


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
    return dataset


def check_columns(dataset, alternatives: Sequence[tuple[str, ...]], dataset_name: str) -> None:
    """Raise unless ``dataset`` has every column of at least one of ``alternatives``."""
    columns = set(dataset.column_names or [])
    if any(set(option) <= columns for option in alternatives):
        return
    wanted = " or ".join("+".join(option) for option in alternatives)
    raise RecipeError(f"dataset {dataset_name!r} is missing columns: it needs {wanted}, but has {sorted(columns)}")
