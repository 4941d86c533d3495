"""Load a recipe's dataset (Hub id, local file or saved dataset) and check the splits and columns a stage reads.

Every failure names the file (and, for JSON Lines, the line) or the split at fault, instead of surfacing as the
``datasets`` builder's ``StopIteration`` (an empty file) or ``DatasetGenerationError`` (a malformed line). The text
fields a stage reads (``messages``, ``prompt``, ``completion``, ``chosen``, ``rejected``, SFT's text field) must hold
text or chat messages, one kind in every row and field of a row, and every message a known role and a ``content``
(:func:`check_text_fields`): ``datasets`` loads a file that mixes them (typing the column ``Json``), and TRL then stops
inside tokenization after the model has loaded, or trains on the mix (or on empty turns) silently. With
``assistant_only_loss`` the data must be conversational (:func:`check_conversational`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from .recipe import RecipeError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
TEXT, CHAT = "text", "chat messages"
CHAT_ROLES = ("system", "user", "assistant", "tool")  # the roles chat templates render
# The fields TRL reads as text or as a conversation (SFT, DPO, GRPO); other columns (answers, rewards' inputs) are free
CONVERSATION_FIELDS = ("messages", "prompt", "completion", "chosen", "rejected")
# HuggingFaceH4/ultrafeedback_binarized has a text `prompt` beside `chosen`/`rejected` conversations that repeat it;
# its trl-lib/ultrafeedback_binarized copy keeps only the conversations
DPO_PROMPT_HINT = (
    " (preference data: drop the `prompt` column when the conversations already contain it, and DPO takes their shared"
    " start as the prompt; or make `prompt` a list of messages)"
)


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


def check_columns(dataset, alternatives: Sequence[tuple[str, ...]], dataset_name: str) -> tuple[str, ...]:
    """The first of ``alternatives`` whose every column ``dataset`` has; raise when there is none."""
    columns = set(dataset.column_names or [])
    for option in alternatives:
        if set(option) <= columns:
            return option
    wanted = " or ".join("+".join(option) for option in alternatives)
    raise RecipeError(f"dataset {dataset_name!r} is missing columns: it needs {wanted}, but has {sorted(columns)}")


def messages_problem(value: list[dict[str, Any]]) -> str | None:
    """What is wrong with the messages of one conversation (a list of ``{role, ...}`` mappings), or ``None``.

    Every message needs a :data:`CHAT_ROLES` role and a ``content`` (text, or a list of content parts), except an
    assistant turn that calls tools. A message whose text sits under another key (``text``, ``value``) would be
    rendered by the chat template as an empty turn, and the run would train on it without a word."""
    for number, message in enumerate(value):
        role = message.get("role")
        if role not in CHAT_ROLES:
            return f"message {number} has role {role!r}; expected one of {', '.join(CHAT_ROLES)}"
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            others = sorted(key for key, item in message.items() if key != "role" and item is not None)
            held = f" (it holds {', '.join(repr(k) for k in others)}: the text goes in 'content')" if others else ""
            return f"message {number} ({role}) has no 'content'{held}; expected {{'role': ..., 'content': ...}}"
        if content is not None and not isinstance(content, str | list):
            return f"message {number} ({role}): 'content' is {value_kind(content)}; expected text or content parts"
    return None


def _is_chat(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def value_kind(value: Any) -> str:
    """What a text field holds: :data:`TEXT`, :data:`CHAT` (a non-empty list of ``{role, content}`` messages), or a
    description of anything else (``a number (3)``, ``null``, ``a list of str (['x'])``)."""
    if isinstance(value, str):
        return TEXT
    if _is_chat(value):
        return CHAT
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return f"a number ({value!r})"
    if isinstance(value, list) and value:
        return f"a list of {'/'.join(sorted({type(item).__name__ for item in value}))} ({str(value)[:60]})"
    return "an empty list" if isinstance(value, list) else f"a {type(value).__name__} ({str(value)[:60]})"


def _typed_kind(dataset: Dataset, column: str) -> str | None:
    """The kind every row of ``column`` holds, read from its Arrow type; ``None`` when the rows must be read (mixed
    values, nulls, empty conversations, or another type)."""
    import pyarrow.compute as pc
    from datasets import List, Value

    feature, data = dataset.features[column], dataset.data.column(column)
    if data.null_count:
        return None
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return TEXT
    inner = feature.feature if isinstance(feature, List) else None
    if isinstance(inner, dict) and "role" in inner and (pc.min(pc.list_value_length(data)).as_py() or 0) > 0:
        return CHAT
    return None


def _typed_messages_hold(dataset: Dataset, column: str) -> bool:
    """Whether every message of a typed conversation column has a known role and a ``content`` (read from Arrow;
    ``False`` sends the rows to :func:`messages_problem`)."""
    import pyarrow.compute as pc

    if "content" not in dataset.features[column].feature:
        return False
    messages = pc.list_flatten(dataset.data.column(column))
    roles = set(pc.unique(pc.struct_field(messages, "role")).to_pylist())
    return roles <= set(CHAT_ROLES) and pc.struct_field(messages, "content").null_count == 0


def _messages_problem(row: dict[str, Any], kinds: dict[str, str]) -> tuple[str, str] | None:
    for field, kind in kinds.items():
        problem = messages_problem(row[field]) if kind == CHAT else None
        if problem is not None:
            return field, problem
    return None


def _row_problem(kinds: dict[str, str], allowed: dict[str, set[str]], first: dict[str, str]) -> tuple[str, str] | None:
    """``(field, what is wrong)`` with one row's field kinds, or ``None``."""
    for field, kind in kinds.items():
        if kind not in allowed[field]:
            form = " (a list of {'role': ..., 'content': ...} messages)" if allowed[field] == {CHAT} else ""
            return field, f"{kind}; expected {' or '.join(sorted(allowed[field]))}{form}"
    lead, *others = kinds
    for field in others:
        if kinds[field] != kinds[lead]:
            problem = f"{kinds[field]}, but its {lead!r} holds {kinds[lead]}; a row's fields are all text or all chat"
            preference = (lead, kinds[lead]) == ("prompt", TEXT) and field in ("chosen", "rejected")
            return field, problem + (DPO_PROMPT_HINT if preference else "")
    for field, kind in kinds.items():
        if first.setdefault(field, kind) != kind:
            return field, f"{kind}, but the first row's holds {first[field]}; every row must hold the same kind"
    return None


def check_row_types(dataset: Dataset, allowed: dict[str, set[str]], where: Callable[[int], str]) -> None:
    """Raise a :class:`RecipeError` at the first row (``where(index)`` names it) whose text field holds another kind
    than ``allowed[field]``, than the row's other text fields, or than the first row, or whose conversation has a
    message without a known role or a ``content`` (:func:`messages_problem`): TRL would stop on it mid-tokenization,
    after the model has loaded, or train on it silently.

    Typed columns (all text, all conversations) are checked from their Arrow type; the rows are read only when a
    column mixes values (``datasets`` then types it ``Json``), holds nulls or empty conversations, or a message
    fails the check."""
    typed = {field: _typed_kind(dataset, field) for field in allowed}
    if (
        len(set(typed.values())) == 1
        and all(kind in allowed[field] for field, kind in typed.items())
        and all(_typed_messages_hold(dataset, field) for field, kind in typed.items() if kind == CHAT)
    ):
        return
    first: dict[str, str] = {}
    for index, row in enumerate(dataset.select_columns(list(allowed))):
        kinds = {field: value_kind(row[field]) for field in allowed}
        problem = _row_problem(kinds, allowed, first) or _messages_problem(row, kinds)
        if problem is not None:
            raise RecipeError(f"{where(index)}, field {problem[0]!r}: {problem[1]}")


def _jsonl_line(path: Path, row: int) -> int:
    """The line of a JSON Lines file holding its ``row``-th record (blank lines hold none)."""
    with path.open("rb") as handle:
        records = (number for number, line in enumerate(handle, start=1) if line.strip())
        return next(itertools.islice(records, row, None))


def row_locator(dataset_name: str, split: str) -> Callable[[int], str]:
    """How an error names row ``index`` of a recipe's dataset: file and line for a JSON Lines file, else row number."""
    path = Path(dataset_name)
    if path.suffix == ".jsonl" and path.is_file():
        return lambda index: f"dataset file {path}, line {_jsonl_line(path, index)}"
    if path.suffix in FILE_BUILDERS and path.is_file():
        return lambda index: f"dataset file {path}, row {index + 1}"
    return lambda index: f"dataset {dataset_name!r}, split {split!r}, row {index + 1}"


def check_text_fields(
    dataset: Dataset, columns: Sequence[str], text_field: str | None, dataset_name: str, split: str
) -> None:
    """:func:`check_row_types` on the text fields among the stage's ``columns``: the conversation fields (text or chat
    messages; ``messages`` chat messages only) and ``text_field`` (SFT's ``dataset_text_field``: text only)."""
    # `messages` is a conversation by name: text there is no conversation TRL can read
    allowed = {
        column: {CHAT} if column == "messages" else {TEXT, CHAT} for column in columns if column in CONVERSATION_FIELDS
    }
    if text_field in columns and text_field not in allowed:
        allowed[text_field] = {TEXT}
    if allowed and isinstance(dataset, Dataset) and len(dataset):
        check_row_types(dataset, allowed, row_locator(dataset_name, split))


def check_conversational(dataset: Any, columns: tuple[str, ...], training_args: Any, dataset_name: str) -> None:
    """Refuse ``assistant_only_loss`` on data that is not conversational (TRL refuses it after the model loads)."""
    if not getattr(training_args, "assistant_only_loss", False) or not hasattr(dataset, "__len__") or not len(dataset):
        return  # a streamed dataset is left to the trainer
    if value_kind(dataset[0][columns[0]]) != CHAT:
        raise RecipeError(
            f"assistant_only_loss is true, but dataset {dataset_name!r} is not conversational (field "
            f"{columns[0]!r} holds text); give chat messages (a `messages` column, or `prompt`/`completion` message "
            "lists), or set `assistant_only_loss: false`"
        )
