"""`divalign plot` on fake trainer_state.json files."""

import json

import pytest

from divalign.cli import main
from divalign.plotting import _run_labels, find_trainer_state, load_curves, select_keys


def _write_state(directory, steps):
    directory.mkdir(parents=True)
    history = []
    for step in steps:
        history.append({"step": step, "loss": 2.0 / step, "diversity/sbert": 0.5 - step / 1000, "learning_rate": 1e-5})
        history.append({"step": step, "diversity/distinct_1": 0.3, "diversity/distinct_1_p10": 0.2,
                        "diversity/distinct_1_p90": 0.4, "diversity/ead_p90": 0.9})  # fmt: skip
    history.append({"step": steps[-1], "train_runtime": 12.0, "train_loss": 1.0})
    (directory / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": steps[-1]}))


@pytest.fixture
def runs(tmp_path):
    _write_state(tmp_path / "tofu", [10, 20, 30])
    # A run whose top level has no trainer_state.json: the newest checkpoint (by step, not by name) wins.
    _write_state(tmp_path / "gem" / "checkpoint-9", [5])
    _write_state(tmp_path / "gem" / "checkpoint-20", [10, 20])
    return tmp_path / "tofu", tmp_path / "gem"


def test_reads_diversity_keys_and_loss(runs):
    tofu, gem = runs
    curves = load_curves(tofu)
    assert set(curves) == {"loss", "diversity/sbert", "diversity/distinct_1", "diversity/distinct_1_p10",
                           "diversity/distinct_1_p90", "diversity/ead_p90"}  # fmt: skip
    assert curves["loss"] == [(10, 0.2), (20, 0.1), (30, 2.0 / 30)]
    assert find_trainer_state(gem) == gem / "checkpoint-20" / "trainer_state.json"
    assert [s for s, _ in load_curves(gem)["diversity/sbert"]] == [10, 20]


def test_metric_selection(runs):
    curves = [load_curves(r) for r in runs]
    # p10/p90 fold into a band around their metric; an orphan percentile key keeps its own subplot.
    assert select_keys(curves, None) == ["loss", "diversity/distinct_1", "diversity/ead_p90", "diversity/sbert"]
    assert select_keys(curves, ["sbert"]) == ["diversity/sbert"]
    assert select_keys(curves, ["distinct_*", "loss"]) == ["loss", "diversity/distinct_1"]


def test_plot_cli_writes_png(runs, tmp_path, capsys):
    out = tmp_path / "figs" / "curves.png"
    assert main(["plot", str(runs[0]), str(runs[1]), "--out", str(out), "--metrics", "loss", "sbert"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in capsys.readouterr().out


def test_missing_trainer_state_is_a_clear_error(runs, tmp_path, capsys):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["plot", str(runs[0]), str(empty), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"No trainer_state.json in {empty}" in err
    assert not (tmp_path / "x.png").exists()


def test_no_matching_keys_is_an_error(runs, tmp_path, capsys):
    assert main(["plot", str(runs[0]), "--out", str(tmp_path / "y.png"), "--metrics", "nothing_like_this"]) == 2
    assert "nothing_like_this" in capsys.readouterr().err


def test_run_labels_disambiguate_equal_names(tmp_path):
    assert _run_labels([tmp_path / "a" / "out", tmp_path / "b" / "run"]) == ["out", "run"]
    assert _run_labels(["x/out", "y/out"]) == ["x/out", "y/out"]
