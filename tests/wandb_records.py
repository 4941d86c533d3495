"""Read an offline W&B run back: the records of its ``run-*.wandb`` file, as the W&B service wrote them.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks,
each ``crc32 (4 bytes) | length (2, little-endian) | type (1: full, 2: first, 3: middle, 4: last)`` and its bytes; a
record is one chunk or a first..last run of them, and holds one ``wandb_internal_pb2.Record`` protobuf. Checksums are
not verified (the file is read back by the test that wrote it).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every ``Record`` in the run file at ``path``, in order."""
    data = path.read_bytes()
    assert data.startswith(HEADER), f"{path} is not a W&B run file"
    found, pending, offset = [], b"", len(HEADER)
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:  # the block's tail is zero padding
            offset += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + CHUNK_HEADER])
        if kind == 0 and length == 0:
            break
        chunk = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
    return found


def _value(item: Any) -> Any:
    return json.loads(item.value_json)


def _nested(items: Any) -> dict[str, Any]:
    """A history row: ``{"diversity/ead": 0.4, "diversity/samples": {"_type": ..., "nrows": ...}}``; W&B files a
    logged object's fields under ``nested_key`` (the key, then the field)."""
    row: dict[str, Any] = {}
    for item in items:
        *parents, last = [item.key] if item.key else list(item.nested_key)
        holder = row
        for parent in parents:
            holder = holder.setdefault(parent, {})
        holder[last] = _value(item)
    return row


@dataclass
class OfflineRun:
    """What a test checks of an offline W&B run: its history rows, config, metric definitions, group, job type and
    alerts (``wandb.alert``: title, text, level)."""

    directory: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # glob or name -> step metric
    group: str = ""
    job_type: str = ""
    alerts: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, run_dir: Path) -> OfflineRun:
        (path,) = run_dir.glob("run-*.wandb")
        run = cls(run_dir)
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                run.rows.append(_nested(record.history.item))
            elif kind == "config":
                run.config.update({item.key: _value(item) for item in record.config.update})
            elif kind == "metric":
                run.metrics[record.metric.glob_name or record.metric.name] = record.metric.step_metric
            elif kind == "alert":
                alert = record.alert
                run.alerts.append({"title": alert.title, "text": alert.text, "level": alert.level})
            elif kind == "run":
                run.group, run.job_type = record.run.run_group, record.run.job_type
                run.config.update({item.key: _value(item) for item in record.run.config.update})
        return run

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if key in row]


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under a ``WANDB_DIR``, oldest first."""
    return [OfflineRun.read(path) for path in sorted((wandb_dir / "wandb").glob("offline-run-*"))]
