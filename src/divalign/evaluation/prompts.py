"""Prompt files for `divalign eval`: reading them, rendering them for a tokenizer, and loading a verifier."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


@dataclass
class PromptRecord:
    """One evaluation prompt: a plain string or a chat `messages` list, and an optional reference answer."""

    prompt: str | Messages
    answer: str | None = None


def _record_from_json(obj: Any, path: Path, line_no: int) -> PromptRecord:
    where = f"{path}:{line_no}"
    if not isinstance(obj, dict) or "prompt" not in obj:
        raise ValueError(f"Prompts file {where}: expected a JSON object with a 'prompt' field, got {obj!r:.100}")
    prompt = obj["prompt"]
    is_messages = isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt)
    if not (isinstance(prompt, str) or (is_messages and prompt)):
        raise ValueError(f"Prompts file {where}: 'prompt' must be a string or a non-empty list of chat messages")
    answer = obj.get("answer")
    return PromptRecord(prompt=prompt, answer=None if answer is None else str(answer))


def load_prompts(path: str | Path) -> list[PromptRecord]:
    """Read a .jsonl file (`prompt` string or chat `messages` list, optional `answer`) or a .txt file (one prompt
    per non-empty line). Errors name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompts file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"Prompts file {path}:{line_no}: invalid JSON ({err})") from err
            records.append(_record_from_json(obj, path, line_no))
    elif path.suffix == ".txt":
        records = [PromptRecord(prompt=line.strip()) for line in lines if line.strip()]
    else:
        raise ValueError(f"Prompts file {path}: expected a .jsonl or .txt file")
    if not records:
        raise ValueError(f"Prompts file {path} contains no prompts")
    return records


def render_prompts(tokenizer: Any, records: list[PromptRecord], model_name: str) -> tuple[list[str], bool]:
    """Texts to feed the model, and whether they came from the chat template (then they already hold any BOS).

    A tokenizer with a chat template gets every prompt as a conversation with the generation prompt appended, so
    each model in a lineage is queried in the format it was trained on.
    """
    if getattr(tokenizer, "chat_template", None):
        conversations = [[{"role": "user", "content": r.prompt}] if isinstance(r.prompt, str) else r.prompt
                         for r in records]  # fmt: skip
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        return texts, True
    if any(not isinstance(r.prompt, str) for r in records):
        raise ValueError(
            f"Model {model_name!r}: its tokenizer has no chat template, so chat `messages` prompts cannot be rendered; "
            "use plain string prompts or a model with a chat template"
        )
    return [r.prompt for r in records], False


def load_verifier(spec: str) -> Callable[[str, str | None], bool]:
    """Import `module:function`; the function is called as `fn(completion_text, reference_answer) -> bool`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"Verifier {spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"Verifier {spec!r}: cannot import module {module_name!r} ({err})") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"Verifier {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn
