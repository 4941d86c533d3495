"""Prompt sets for every sampler (`divalign eval`, `divalign compare`, the training-time diversity callback).

One loader reads every source either accepts: a local .jsonl / .json / .txt / .csv / .parquet file, a dataset saved
with `save_to_disk`, a local data folder, or a Hub dataset id, with a split and a column. A record's prompt is a plain
string or a list of chat messages; a `messages` column holds a training conversation, which loses its trailing
non-user turns (the model is probed with the question, not with the reference answer); a chat prompt that ends in
an assistant turn is continued, as TRL does for prompt-only data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Messages = list[dict[str, Any]]
PROMPT_COLUMNS = ("prompt", "messages")
ANSWER_COLUMNS = ("answer", "solution")
FILE_BUILDERS = {".csv": "csv", ".parquet": "parquet"}
FILE_SUFFIXES = (".jsonl", ".json", ".txt", *FILE_BUILDERS)


@dataclass
class PromptRecord:
    """One prompt: a plain string or a chat `messages` list, an optional reference answer (for a verifier), and the
    row's other fields (`columns`: what a GRPO reward function receives as dataset columns)."""

    prompt: str | Messages
    answer: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)


def load_prompts(
    source: str | Path,
    *,
    split: str = "test",
    column: str | None = None,
    answer_column: str | None = None,
    limit: int | None = None,
) -> list[PromptRecord]:
    """Read the prompt records of `source` (the first `limit` of them, when given).

    Args:
        source: a .jsonl/.json/.txt/.csv/.parquet file, a `save_to_disk` folder, a data folder or a Hub dataset id.
        split: the split to read from a dataset (ignored for single files).
        column: the prompt column; default `prompt`, else `messages`.
        answer_column: the reference-answer column; default `answer`, else `solution`, else none.
        limit: keep the first `limit` records.

    Errors name the file (and line or row) and what was expected.
    """
    source = str(source)
    path = Path(source).expanduser()
    if path.suffix in FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"Prompts file not found: {source}")
        rows, where = _read_file(path)
    else:  # a dataset: saved, a data folder, or a Hub id
        rows, where = _read_dataset(source, path, split), (lambda i: f"Prompts {source} (split {split!r}) row {i}")
    records = [_record(row, column, answer_column, where(i)) for i, row in enumerate(rows)]
    records = records if limit is None else records[:limit]
    if not records:
        raise ValueError(f"Prompts {source} contains no prompts")
    return records


def _read_file(path: Path) -> tuple[list[Any], Callable[[int], str]]:
    """Rows of one file and a function naming row i's place in it (file:line for text formats)."""
    if path.suffix in FILE_BUILDERS:
        import datasets

        if path.suffix == ".csv":
            _utf8_text(path)  # datasets' error would name neither the line nor the byte

        try:
            table = datasets.load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path), split="train")
        except Exception as err:
            raise ValueError(f"Prompts file {path}: cannot read it as {path.suffix[1:]} ({err})") from err
        return list(table), lambda i: f"Prompts file {path} row {i}"
    text = _utf8_text(path)
    if path.suffix == ".txt":
        numbered = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        return [line for _, line in numbered], lambda i: f"Prompts file {path}:{numbered[i][0]}"
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"Prompts file {path}: invalid JSON ({err})") from err
        if not isinstance(data, list):
            raise ValueError(f"Prompts file {path}: expected a JSON list of records, got {type(data).__name__}")
        return data, lambda i: f"Prompts file {path} record {i}"
    rows, lines = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"Prompts file {path}:{line_no}: invalid JSON ({err})") from err
        lines.append(line_no)
    return rows, lambda i: f"Prompts file {path}:{lines[i]}"


def _utf8_text(path: Path) -> str:
    """The file's text; a :class:`ValueError` names the line and column of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line, column = data.count(b"\n", 0, err.start) + 1, err.start - line_start + 1
        raise ValueError(
            f"Prompts file {path}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at column {column}); save it "
            "as UTF-8"
        ) from None


def _read_dataset(source: str, path: Path, split: str) -> list[dict[str, Any]]:
    """Rows of a dataset split: a `save_to_disk` folder, else anything `datasets.load_dataset` reads."""
    import datasets

    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise ValueError(f"it has no split {split!r}; its splits: {list(dataset)}")
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(source, split=split)
    except Exception as err:
        raise ValueError(f"Could not load prompts from {source!r} (split {split!r}): {err}") from err
    return list(dataset)


def _record(row: Any, column: str | None, answer_column: str | None, where: str) -> PromptRecord:
    if isinstance(row, str):
        return PromptRecord(prompt=row)
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected an object with a 'prompt' field or a string, got {row!r:.100}")
    name = column or next((c for c in PROMPT_COLUMNS if c in row), None)
    if name is None or name not in row:
        wanted = repr(column) if column else " or ".join(repr(c) for c in PROMPT_COLUMNS)
        raise ValueError(f"{where}: has no {wanted} field (fields: {sorted(row)})")
    answer_name = answer_column or next((c for c in ANSWER_COLUMNS if c in row), None)
    if answer_column and answer_column not in row:
        raise ValueError(f"{where}: has no answer field {answer_column!r} (fields: {sorted(row)})")
    answer = row.get(answer_name) if answer_name else None
    return PromptRecord(
        prompt=_prompt(row[name], name, where),
        answer=None if answer is None else str(answer),
        columns={key: value for key, value in row.items() if key != name},
    )


def _prompt(value: Any, name: str, where: str) -> str | Messages:
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, Mapping) and {"role", "content"} <= m.keys() for m in value)
    ):
        messages = [dict(m) for m in value]
        if name == "messages":
            while messages and messages[-1]["role"] != "user":
                messages.pop()  # a training conversation: probe with the question, not with the reference answer
        if messages:
            return messages
    raise ValueError(
        f"{where}: {name!r} must be a non-empty string or a non-empty list of chat messages "
        f"({{'role': ..., 'content': ...}}), got {value!r:.100}"
    )
