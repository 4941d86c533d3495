"""The demo's README claims, on a shrunken plan: its multi-seed table is the mean ± sample std of each seed's exact
metrics, and two fresh runs are identical bit for bit (weights, every number in results.json, the report)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import divalign.toyworld.demo as demo
from divalign.toyworld.report import SPLIT_TITLES, SPREAD_COLUMNS

TINY = replace(
    demo.QUICK,
    pretrain=replace(demo.QUICK.pretrain, steps=40, batch_size=64, warmup_steps=4),
    max_steps=6,
    save_steps=3,
    diversity_every_steps=3,
    num_samples=4,
)
LOSSES = {"TOFU": "tofu_sft.yaml"}  # one loss keeps the two runs short; the demo treats every loss alike


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The demo twice from scratch into two directories, with 2 SFT seeds per loss (`--seeds 2`)."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "QUICK", TINY)
        patch.setattr(demo, "RECIPES", LOSSES)
        try:
            for name in ("a", "b"):
                assert demo.main(["--quick", "--seeds", "2", "--out", str(root / name)]) == 0
        finally:
            torch.set_num_threads(threads)  # the demo sets its own thread count for this process
    return root / "a", root / "b"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_two_fresh_runs_are_identical_bit_for_bit(two_runs):
    first, second = two_runs
    weights = sorted(p.relative_to(first) for p in first.rglob("model.safetensors"))
    finals = [p for p in weights if not any(part.startswith("checkpoint-") for part in p.parts)]
    assert len(finals) == 1 + 2 * len(LOSSES)  # the base model and every SFT run (both seeds), and the checkpoints
    for relative in weights:
        assert digest(first / relative) == digest(second / relative), relative
    payloads = [json.loads((run / "results.json").read_text()) for run in two_runs]
    for key in ("world", "plan", "results", "trajectories", "seed_spread"):
        assert payloads[0][key] == payloads[1][key], key  # exact equality of every float
    reports = [(run / "results.md").read_text().split("## Run")[0] for run in two_runs]  # the rest is timings
    assert reports[0] == reports[1]


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 4
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_seed_table_is_mean_and_sample_std_over_seeds(two_runs):
    run = two_runs[0]
    payload = json.loads((run / "results.json").read_text())
    spread = payload["seed_spread"]
    assert sorted(spread) == sorted(LOSSES)
    rows = {row[0]: row for row in table_rows((run / "results.md").read_text(), "## Seed spread")}
    for name, by_seed in spread.items():
        assert list(by_seed) == ["0", "1"]  # the recipe's seed, then --seeds 2 adds seed 1
        # the recipe-seed run is the one the main tables score
        main = payload["results"][f"{name} SFT"]
        for split in SPLIT_TITLES:
            assert by_seed["0"][split] == pytest.approx(main[split]["exact"], rel=1e-9)
        row = rows[f"{name} SFT"]
        assert row[1] == "0, 1"
        cells = iter(row[2:])
        for split in SPLIT_TITLES:
            for key, _ in SPREAD_COLUMNS:
                a, b = by_seed["0"][split][key], by_seed["1"][split][key]
                mean, std = (a + b) / 2, abs(a - b) / 2**0.5  # sample std of two values
                assert next(cells) == f"{mean:.3f} ± {std:.3f}"
        assert by_seed["0"]["seen"] != by_seed["1"]["seen"]  # the seed changed the run
