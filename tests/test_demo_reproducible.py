"""The toy demo's README claim, on a shrunken plan (CE and TOFU × 1 seed, a few steps): two fresh runs are identical
bit for bit (weights, every number of the truth table and of compare's report). The truth table's mean ± std over
seeds is checked on the quick demo's two seeds (tests/test_toyworld_demo.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

import divalign.toyworld.demo as demo

TINY = replace(
    demo.QUICK,
    pretrain=replace(demo.QUICK.pretrain, steps=40, batch_size=64, warmup_steps=4),
    variants=("tofu",),  # with the reference, ce: two variants keep the runs short; the demo treats every one alike
    seeds=(0,),
    overrides={"max_steps": 6},
    diversity_every_steps=3,
    evaluation={"samples": 4, "max_bisection_steps": 2, "temperature_grid": [1.0], "n_bootstrap": 50},
    truth_k=4,
)
CELLS = ["ce-seed0", "tofu-seed0"]


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
    assert [c["cell"] for c in compare_results(first)["cells"]] == CELLS  # compare ran these cells
    reports = [compare_results(run)["calibration"] for run in two_runs]
    for key in ("seeds", "pooled", "seed_mean"):
        assert reports[0][key] == reports[1][key], key
    # the markdown too, once each run's own directory is named alike (the rest after "## Run" is timings)
    texts = [(run / "results.md").read_text().replace(str(run), "OUT").split("## Run")[0] for run in two_runs]
    assert texts[0] == texts[1]
