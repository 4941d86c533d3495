"""`divalign plot` on fake trainer_state.json files."""

import json

import pytest
from matplotlib.colors import to_hex

from divalign import run_history
from divalign.cli import main
from divalign.plotting import draw_curves, find_trainer_state, load_curves, load_run, select_keys, split_losses
from divalign.run_history import run_labels


def _write_state(directory, steps, grad_norm=False):
    directory.mkdir(parents=True)
    history = []
    for step in steps:
        history.append({"step": step, "loss": 2.0 / step, "diversity/sbert": 0.5 - step / 1000, "learning_rate": 1e-5,
                        **({"grad_norm": 0.1 * step} if grad_norm else {})})  # fmt: skip
        history.append({"step": step, "diversity/distinct_1": 0.3, "diversity/distinct_1_p10": 0.2,
                        "diversity/distinct_1_p90": 0.4, "diversity/ead_p90": 0.9})  # fmt: skip
    history.append({"step": steps[-1], "train_runtime": 12.0, "train_loss": 1.0})
    (directory / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": steps[-1]}))


@pytest.fixture
def runs(tmp_path):
    _write_state(tmp_path / "tofu", [10, 20, 30], grad_norm=True)
    # A run whose top level has no trainer_state.json: the newest checkpoint (by step, not by name) wins.
    _write_state(tmp_path / "gem" / "checkpoint-9", [5])
    _write_state(tmp_path / "gem" / "checkpoint-20", [10, 20])
    return tmp_path / "tofu", tmp_path / "gem"


def test_reads_diversity_keys_and_loss(runs):
    tofu, gem = runs
    curves = load_curves(tofu)
    assert set(curves) == {"loss", "diversity/sbert", "diversity/distinct_1", "diversity/distinct_1_p10",
                           "diversity/distinct_1_p90", "diversity/ead_p90", "learning_rate", "grad_norm",
                           "train_runtime", "train_loss"}  # fmt: skip
    assert curves["loss"] == [(10, 0.2), (20, 0.1), (30, 2.0 / 30)]
    assert find_trainer_state(gem) == gem / "checkpoint-20" / "trainer_state.json"
    assert [s for s, _ in load_curves(gem)["diversity/sbert"]] == [10, 20]


def test_metric_selection(runs):
    curves = [load_curves(r) for r in runs]
    # p10/p90 fold into a band around their metric; an orphan percentile key keeps its own subplot. By default only
    # the loss and the diversity keys; any logged key when named.
    assert select_keys(curves, None) == ["loss", "diversity/distinct_1", "diversity/ead_p90", "diversity/sbert"]
    assert select_keys(curves, ["loss", "grad_norm", "learning_rate"]) == ["loss", "grad_norm", "learning_rate"]
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
    assert run_labels([tmp_path / "a" / "out", tmp_path / "b" / "run"]) == ["out", "run"]
    assert run_labels(["x/out", "y/out"]) == ["x/out", "y/out"]


def test_out_without_a_suffix_writes_the_png_it_prints(runs, tmp_path, capsys):
    out = tmp_path / "figs" / "curves"
    assert main(["plot", str(runs[0]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out) + ".png"
    assert (tmp_path / "figs" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not out.exists()
    assert main(["plot", str(runs[0]), "--out", str(tmp_path / "curves.pdf")]) == 0  # another format, as asked
    assert (tmp_path / "curves.pdf").read_bytes()[:4] == b"%PDF"
    assert main(["plot", str(runs[0]), "--out", str(tmp_path / "curves.v2")]) == 2
    assert "matplotlib writes no '.v2' images" in capsys.readouterr().err
    assert not (tmp_path / "curves.v2").exists() and not (tmp_path / "curves.v2.png").exists()


def test_a_run_keeps_its_colour_in_every_panel(tmp_path):
    """gem logs no diversity/sbert: in that panel tofu is the only line, still in tofu's colour, not the first
    colour of the panel's own cycle."""
    first, second = tmp_path / "gem", tmp_path / "tofu"
    first.mkdir()
    (first / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": s, "loss": 1.0 / s, "diversity/ead": 0.2} for s in (1, 2)]}))  # fmt: skip
    _write_state(second, [1, 2])
    runs = [load_run(first), load_run(second)]
    figure = draw_curves(runs, ["gem", "tofu"], ["loss", "diversity/ead", "diversity/sbert"])
    colours = {}
    for ax in figure.axes:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    assert colours == {"gem": {to_hex("C0")}, "tofu": {to_hex("C1")}}
    (sbert_panel,) = [ax for ax in figure.axes if ax.get_title() == "diversity/sbert"]
    assert [line.get_label() for line in sbert_panel.get_lines()] == ["tofu"]


def test_metrics_draws_every_named_key_and_names_what_is_missing(runs, tmp_path, capsys):
    """`--metrics loss nll grad_norm`: loss and grad_norm get a panel each (grad_norm is not a diversity key);
    nll, logged by no run, and grad_norm, not logged by gem, are named."""
    out = tmp_path / "m.png"
    assert main(["plot", str(runs[0]), str(runs[1]), "--out", str(out), "--metrics", "loss", "nll", "grad_norm"]) == 0
    err = capsys.readouterr().err
    assert "nll: logged by none of the runs" in err
    assert "grad_norm: not logged by gem; drawn for the other runs only" in err
    assert "loss:" not in err
    assert select_keys([load_run(r) for r in runs], ["loss", "nll", "grad_norm"]) == ["loss", "grad_norm"]
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(runs[0]), "--out", str(out), "--metrics", "nll"]) == 2
    assert "logged keys:" in capsys.readouterr().err


def _write_quality_run(directory, points):
    """A run whose callback logged quality: (step, ead, quality) per evaluation, and a loss entry per step."""
    directory.mkdir(parents=True)
    history = [{"step": s, "loss": 1.0} for s, _, _ in points]
    history += [{"step": s, "diversity/ead": e, "diversity/quality/mean": q} for s, e, q in points]
    (directory / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": points[-1][0]}))


def test_trajectory_draws_one_point_per_evaluation_coloured_by_step(tmp_path, capsys):
    from matplotlib.colors import to_hex

    from divalign.trajectory_plot import draw_trajectories, trajectory

    _write_quality_run(tmp_path / "ce", [(0, 0.5, 0.2), (10, 0.3, 0.6), (20, 0.2, 0.7)])
    _write_quality_run(tmp_path / "tofu", [(0, 0.5, 0.2), (10, 0.45, 0.55)])
    points = trajectory(load_run(tmp_path / "ce"), "diversity/ead")
    assert [(p.step, p.diversity, p.quality) for p in points] == [(0, 0.5, 0.2), (10, 0.3, 0.6), (20, 0.2, 0.7)]
    figure = draw_trajectories([load_run(tmp_path / "ce"), load_run(tmp_path / "tofu")], ["ce", "tofu"], "ead")
    ax = figure.axes[0]
    assert (ax.get_xlabel().split()[0], ax.get_ylabel()) == ("diversity/ead", "diversity/quality/mean")
    scatters = ax.collections
    assert [list(s.get_array()) for s in scatters] == [[0, 10, 20], [0, 10]]  # coloured by step
    assert scatters[0].norm.vmin == 0 and scatters[1].norm.vmax == 20  # one colour scale for every run
    assert [to_hex(line.get_color()) for line in ax.get_lines()] == [to_hex("C0"), to_hex("C1")]
    out = tmp_path / "t"
    assert main(["plot", str(tmp_path / "ce"), str(tmp_path / "tofu"), "--trajectory", "ead", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) + ".png"
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_trajectory_of_a_pipeline_joins_its_stages(tmp_path):
    from divalign.run_history import PIPELINE_MANIFEST
    from divalign.trajectory_plot import trajectory

    root = tmp_path / "pipe"
    _write_quality_run(root / "sft", [(0, 0.6, 0.1), (4, 0.4, 0.5)])
    _write_quality_run(root / "grpo", [(0, 0.4, 0.5), (2, 0.3, 0.8)])
    (root / PIPELINE_MANIFEST).parent.mkdir()
    (root / PIPELINE_MANIFEST).write_text(json.dumps({"stages": [
        {"name": "sft", "output_dir": str(root / "sft")}, {"name": "grpo", "output_dir": str(root / "grpo")}]}))  # fmt: skip
    points = trajectory(load_run(root), "ead")
    assert [(p.step, p.quality, p.stage) for p in points] == [
        (0, 0.1, "sft"), (4, 0.5, None), (4, 0.5, "grpo"), (6, 0.8, None)]  # fmt: skip


def test_trajectory_errors_name_the_run_and_the_missing_key(tmp_path, runs, capsys):
    _write_quality_run(tmp_path / "q", [(0, 0.5, 0.2)])
    assert main(["plot", str(runs[0]), "--trajectory", "ead", "--out", str(tmp_path / "x.png")]) == 2
    assert "run tofu logged no diversity/quality/mean: give its recipe's diversity block a `quality:`" in (
        capsys.readouterr().err
    )
    assert main(["plot", str(tmp_path / "q"), "--trajectory", "sbert", "--out", str(tmp_path / "x.png")]) == 2
    assert "run q logged no diversity/sbert next to diversity/quality/mean" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "q"), "--trajectory", "ead", "--metrics", "loss"]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def _write_objective_run(directory, trainer, nll):
    """A run of `trainer` (its resolved recipe says so) logging loss, diversity/ead and, for TOFU/GEM, nll."""
    directory.mkdir(parents=True)
    history = [{"step": s, "loss": 0.5 / s, "diversity/ead": 0.2, **({"nll": 2.0 / s} if nll else {})} for s in (1, 2)]
    (directory / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": 2}))
    (directory / "divalign_recipe.yaml").write_text(f"trainer: {trainer}\nlearning_rate: 1.0e-05\n")
    return directory


def panels(run_dirs):
    """{panel title: labels of its lines} of the figure `divalign plot` draws by default."""
    runs = split_losses([load_run(d) for d in run_dirs])
    labels = run_labels(run_dirs)
    figure = draw_curves(runs, labels, select_keys(runs, None))
    return {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in figure.axes if ax.get_visible()}


def test_losses_of_different_objectives_get_a_panel_each_and_nll_its_own(tmp_path, capsys):
    """CE's loss is an NLL, TOFU's a focal loss: each gets its own loss panel, and the nll the TOFU trainer logs
    beside its loss gets a panel of its own (drawn by default)."""
    ce = _write_objective_run(tmp_path / "ce", "sft", nll=False)
    tofu = _write_objective_run(tmp_path / "tofu", "tofu", nll=True)
    assert list(panels([ce, tofu])) == ["loss (sft)", "loss (tofu)", "nll", "diversity/ead"]
    assert panels([ce, tofu])["loss (sft)"] == ["ce"] and panels([ce, tofu])["loss (tofu)"] == ["tofu"]
    assert panels([ce, tofu])["nll"] == ["tofu"]
    # --metrics loss names every objective's loss panel
    runs = split_losses([load_run(ce), load_run(tofu)])
    assert select_keys(runs, ["loss"]) == ["loss (sft)", "loss (tofu)"]
    out = tmp_path / "curves.png"
    assert main(["plot", str(ce), str(tofu), "--out", str(out)]) == 0 and out.is_file()
    assert capsys.readouterr().err == ""


def test_runs_of_one_objective_share_one_loss_panel(tmp_path):
    first = _write_objective_run(tmp_path / "tofu_a", "tofu", nll=True)
    second = _write_objective_run(tmp_path / "tofu_b", "tofu", nll=True)
    assert panels([first, second]) == {
        "loss": ["tofu_a", "tofu_b"], "nll": ["tofu_a", "tofu_b"], "diversity/ead": ["tofu_a", "tofu_b"]
    }  # fmt: skip


def test_a_run_without_a_recipe_has_no_known_objective(runs):
    from divalign.launch.output_dir import RESOLVED_RECIPE

    assert RESOLVED_RECIPE == run_history.RESOLVED_RECIPE
    assert run_history.run_objective(runs[0]) is None and load_run(runs[0]).objectives == [None]
