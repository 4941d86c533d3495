"""End to end: the reduced toy demo (`--quick`) builds, pretrains, runs the three recipes, evaluates and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from divalign.toyworld.report import EXACT_COLUMNS, SAMPLED_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("truth", "base (plain format)", "base (chat format)", "CE SFT", "TOFU SFT", "GEM SFT")


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the markdown table right under ``heading``."""
    lines = markdown.splitlines()
    start = lines.index(heading) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "divalign.toyworld.demo", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = (out / "results.md").read_text()
    for heading in ("## Exact, SFT prompts (seen)", "## Exact, held-out prompts (categories never in SFT)"):
        rows = _table_rows(report, heading)
        assert rows[0] == ["model", *(title for _, title in EXACT_COLUMNS)]
        labels = [row[0] for row in rows[2:]]
        assert set(MODELS) <= set(labels), labels
        for row in rows[2:]:
            assert len(row) == len(EXACT_COLUMNS) + 1
            assert all(cell != "nan" for cell in row)
    sampled = _table_rows(report, "### SFT prompts (seen)")
    assert sampled[0] == ["model", *(title for _, title in SAMPLED_COLUMNS)]
    results = json.loads((out / "results.json").read_text())
    for label in ("CE SFT", "TOFU SFT", "GEM SFT"):
        exact = results["results"][label]["seen"]["exact"]
        assert 0.0 <= exact["validity"] <= 1.0 and exact["entropy"] >= 0.0
        assert len(results["trajectories"][label.split()[0]]) >= 2  # step 0 and at least one checkpoint
    for figure in results["figures"]:
        assert Path(figure).stat().st_size > 0
    # the runs went through divalign.train with W&B offline
    assert (out / "ce_sft" / "divalign_recipe.yaml").exists()
    assert any((out / "wandb").glob("offline-run-*"))
