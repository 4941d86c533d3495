"""End to end: the reduced toy demo (`--quick`) builds, pretrains, runs the three recipes, evaluates and reports."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _interpolate(points: list[tuple[float, float]], level: float) -> float:
    """Linear interpolation by hand between the (diversity, quality) points around `level`, among the points that no
    other point beats on both axes."""
    kept = [(x, y) for x, y in points if not any(a >= x and b >= y and (a, b) != (x, y) for a, b in points)]
    for (x0, y0), (x1, y1) in itertools.pairwise(sorted(kept)):
        if x0 <= level <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (level - x0) / (x1 - x0)
    return math.nan


def _run_quick_demo(out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "divalign.toyworld.demo", "--quick", "--seeds", "2", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _comparable(results: dict) -> dict:
    """results.json without what legitimately differs between two runs: timings and the output paths."""
    return {k: v for k, v in results.items() if k not in ("timings_s", "figures")}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    _run_quick_demo(out)
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
    num_samples = results["plan"]["num_samples"]
    seen = 45  # 15 seen categories x 3 phrasings
    for label in ("CE SFT", "TOFU SFT", "GEM SFT"):
        scores = results["results"][label]["seen"]
        # two independent routes to one number: the exact valid mass (a forward pass over every answer) and the
        # share of valid answers among the generated samples; they agree within 5 standard errors
        exact, sampled = scores["exact"]["validity"], scores["sampled"]["validity"]
        assert abs(exact - sampled) < 5 * math.sqrt(max(exact * (1 - exact), 1e-4) / (seen * num_samples)), label
        assert len(results["trajectories"][label.split()[0]]) >= 2  # step 0 and at least one checkpoint
        # the frontier at T = 1 is the exact table's point
        point = results["frontier"]["points"][label]["1"]
        assert point["quality"] == pytest.approx(scores["exact"]["validity"])
        assert point["diversity"] == pytest.approx(scores["exact"]["coverage"])
    frontier = results["frontier"]
    assert frontier["reference"] == "CE SFT" and set(frontier["comparisons"]) == {
        "TOFU SFT",
        "GEM SFT",
        "base (plain format)",
    }
    for name, comparison in frontier["comparisons"].items():
        points = sorted((p["diversity"], p["quality"]) for p in frontier["points"][name].values())
        reference = sorted((p["diversity"], p["quality"]) for p in frontier["points"]["CE SFT"].values())
        for level, difference in zip(comparison["levels"], comparison["difference"], strict=True):
            assert difference == pytest.approx(_interpolate(points, level) - _interpolate(reference, level)), name
    assert "## Quality–diversity frontier (exact, SFT prompts; `frontier.png`)" in report
    assert (out / "frontier.png").stat().st_size > 0
    for figure in results["figures"]:
        assert Path(figure).stat().st_size > 0
    # the seed spread: mean ± sample std over the 2 SFT seeds of each loss, recomputed from the per-seed values
    spread = _table_rows(
        report, "## Seed spread (exact; mean ± std over SFT seeds; same world, SFT set and base model)"
    )
    for row in spread[2:]:
        by_seed = results["seed_spread"][row[0].removesuffix(" SFT")]
        assert row[1] == ", ".join(by_seed) and len(by_seed) == 2
        values = [metrics["seen"]["validity"] for metrics in by_seed.values()]
        assert row[2] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    # the runs went through divalign.train with W&B offline
    assert (out / "ce_sft" / "divalign_recipe.yaml").exists()
    assert any((out / "wandb").glob("offline-run-*"))
    # reproducible bit for bit: a second demo from scratch writes the same results
    again = tmp_path / "again"
    _run_quick_demo(again)
    assert _comparable(json.loads((again / "results.json").read_text())) == _comparable(results)
