"""JSON Lines files as the datasets, worlds and tests write them: one JSON object per line, UTF-8."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line, in UTF-8 with non-ASCII text kept as it is (names with accents stay readable)."""
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path
