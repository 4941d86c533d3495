"""The toy demo's README claims, on a shrunken plan (CE and TOFU × 2 seeds, a few steps): two fresh runs are identical
bit for bit (weights, every number of the truth table and of compare's report), and the truth table's variant rows
are the mean ± sample std of each seed's exact metrics."""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

import divalign.toyworld.demo as demo
from divalign.toyworld.report import EXACT_COLUMNS, SPLIT_TITLES

TINY = replace(
    demo.QUICK,
    pretrain=replace(demo.QUICK.pretrain, steps=40, batch_size=64, warmup_steps=4),
    variants=("tofu",),  # with the reference, ce: two variants keep the runs short; the demo treats every one alike
    seeds=(0, 1),
    overrides={"max_steps": 6},
    diversity_every_steps=3,
    evaluation={"samples": 4, "max_bisection_steps": 2, "temperature_grid": [1.0], "n_bootstrap": 50},
    truth_k=4,
)
CELLS = ["ce-seed0", "ce-seed1", "tofu-seed0", "tofu-seed1"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The demo twice from scratch into two directories."""
    root = tmp_path_factory.mktemp("demo")
    for name in ("a", "b"):
        demo.run_demo(root / name, plan=TINY)
    return root / "a", root / "b"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_results(run: Path) -> dict:
    return json.loads((run / "compare" / "report" / "results.json").read_text())


@pytest.mark.slow
def test_two_fresh_runs_are_identical_bit_for_bit(two_runs):
    first, second = two_runs
    weights = sorted(p.relative_to(first) for p in first.rglob("model.safetensors"))
    assert [str(p.parent) for p in weights] == ["base_model", *(f"compare/cells/{c}/{c[:-6]}_sft" for c in CELLS)]
    for relative in weights:
        assert digest(first / relative) == digest(second / relative), relative
    payloads = [json.loads((run / "results.json").read_text()) for run in two_runs]
    for key in ("world", "plan", "references", "variants"):
        assert payloads[0][key] == payloads[1][key], key  # exact equality of every float
    assert [c["exact"] for c in payloads[0]["cells"].values()] == [c["exact"] for c in payloads[1]["cells"].values()]
    reports = [compare_results(run)["calibration"] for run in two_runs]
    for key in ("seeds", "pooled", "seed_mean"):
        assert reports[0][key] == reports[1][key], key
    # the markdown too, once each run's own directory is named alike (the rest after "## Run" is timings)
    texts = [(run / "results.md").read_text().replace(str(run), "OUT").split("## Run")[0] for run in two_runs]
    assert texts[0] == texts[1]


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = lines.index(heading) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_truth_table_is_mean_and_sample_std_over_seeds(two_runs):
    run = two_runs[0]
    payload = json.loads((run / "results.json").read_text())
    assert list(payload["cells"]) == CELLS
    assert [c["cell"] for c in compare_results(run)["cells"]] == CELLS  # compare ran the same cells
    report = (run / "results.md").read_text()
    for split, title in SPLIT_TITLES.items():
        rows = {row[0]: row for row in table_rows(report, f"### {title}")}
        for variant in ("ce", "tofu"):
            seeds = [payload["cells"][f"{variant}-seed{s}"]["exact"][split] for s in (0, 1)]
            assert seeds[0] != seeds[1]  # the seed changed the run
            row = rows[f"{variant} SFT"]
            assert row[1] == "0, 1"
            for (key, _), cell in zip(EXACT_COLUMNS, row[2:], strict=True):
                values = [s[key] for s in seeds]
                assert cell == f"{statistics.fmean(values):.3f} ± {abs(values[0] - values[1]) / 2**0.5:.3f}", key
