"""A run's life in its output directory: killed and resumed, finished, changed, locked — nothing lost, nothing
recorded that did not happen. Real (tiny) runs through `divalign.train`; kills are simulated where they happen (an
exception raised from a callback, a checkpoint left without the file transformers writes last)."""

import dataclasses
import gc
import json
import os
import re
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from divalign.launch import train
from divalign.launch.checkpoints import is_complete, newest_complete
from divalign.launch.recipe import RecipeError
from divalign.launch.resume_changes import FIXED_BY_CHECKPOINT
from divalign.launch.run_lock import LOCK_FILE, RunLock, RunLockError, owner_record, process_start_ticks
from divalign.smoke import build_smoke_assets

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"


class Killed(Exception):
    """Stands in for the process being killed."""


class KillAt(TrainerCallback):
    """Raise :class:`Killed` after step ``step`` (``while_saving``: during its checkpoint, before trainer_state.json
    was written; ``mid_write``: while trainer_state.json was being written, leaving its first half)."""

    def __init__(self, step: int, while_saving: bool = False, mid_write: bool = False):
        self.step, self.while_saving, self.mid_write = step, while_saving or mid_write, mid_write

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and not self.while_saving:
            raise Killed(f"killed after step {self.step}")

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step and self.while_saving:
            written = Path(args.output_dir) / f"checkpoint-{self.step}" / "trainer_state.json"
            if self.mid_write:
                written.write_text(written.read_text()[: len(written.read_text()) // 2])
            else:
                written.unlink()
            raise Killed(f"killed while saving checkpoint-{self.step}")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def flags(assets: Path, output_dir: Path, *extra: str) -> list[str]:
    base = ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "train.jsonl")]
    return [*base, "--output_dir", str(output_dir), "--save_steps", "3", *extra]


def write_recipe(path: Path, **blocks) -> Path:
    """The smoke recipe with top-level ``blocks`` (``env``, ``diversity``) set, or removed where ``None``."""
    content = {**yaml.safe_load(SMOKE_RECIPE.read_text()), **blocks}
    path.write_text(yaml.safe_dump({key: value for key, value in content.items() if value is not None}))
    return path


def run_killed(
    monkeypatch,
    assets: Path,
    output_dir: Path,
    kill: TrainerCallback,
    *extra: str,
    recipe_path: Path = SMOKE_RECIPE,
    expected: type[Exception] = Killed,
) -> Exception:
    """Run the smoke recipe with ``kill`` added to its trainer; returns the ``expected`` error that stopped it."""

    def with_kill(build):
        def build_and_arm(run):
            trainer = build(run)
            trainer.add_callback(kill)
            return trainer

        return build_and_arm

    with monkeypatch.context() as patch:
        for name, stage in list(train.STAGES.items()):
            patch.setitem(train.STAGES, name, dataclasses.replace(stage, build=with_kill(stage.build)))
        with pytest.raises(expected) as caught:
            train.run_stage(str(recipe_path), flags(assets, output_dir, *extra))
    return caught.value


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def recipe(directory: Path) -> dict:
    return yaml.safe_load((directory / "divalign_recipe.yaml").read_text())


def global_step(directory: Path) -> int:
    return json.loads((directory / "trainer_state.json").read_text())["global_step"]


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory) -> Path:
    """The smoke run from start to end (10 steps, a checkpoint every 3): what every resumed run must equal."""
    out = tmp_path_factory.mktemp("whole") / "run"
    train.run_stage(str(SMOKE_RECIPE), flags(assets, out))
    return out


def test_the_trainer_is_freed_before_the_run_returns(monkeypatch, assets, tmp_path):
    """The trainer's reference cycles (callbacks bound to it, its accelerator) would keep its model, and on a
    distributed run the DDP wrapper holding the gloo group, alive until the interpreter's exit; `run_stage` collects
    them before it returns. Automatic collection is off here, so only that collection can free the trainer."""
    built = []

    def recording(build):
        def wrapped(run):
            trainer = build(run)
            built.append(weakref.ref(trainer))
            return trainer

        return wrapped

    for name, stage in list(train.STAGES.items()):
        monkeypatch.setitem(train.STAGES, name, dataclasses.replace(stage, build=recording(stage.build)))
    gc.disable()
    try:
        train.run_stage(str(SMOKE_RECIPE), flags(assets, tmp_path / "run", "--max_steps", "2"))
        assert len(built) == 1 and built[0]() is None
    finally:
        gc.enable()


def test_finished_run_refuses_to_resume(assets, uninterrupted):
    before = weights(uninterrupted)
    with pytest.raises(RecipeError, match=r"holds a finished run \(step 10, finished .*\); there is nothing to resume"):
        train.run_stage(str(SMOKE_RECIPE), flags(assets, uninterrupted, "--resume_from_checkpoint", "true"))
    with pytest.raises(RecipeError, match="holds a finished run"):
        train.run_stage(str(SMOKE_RECIPE), flags(assets, uninterrupted))
    assert same_weights(weights(uninterrupted), before) and global_step(uninterrupted) == 10  # not one step more


def test_killed_while_saving_resumes_from_the_newest_complete_checkpoint(monkeypatch, assets, tmp_path, uninterrupted):
    out = tmp_path / "run"
    run_killed(monkeypatch, assets, out, KillAt(6, while_saving=True))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    with pytest.raises(RecipeError, match=r"holds an interrupted run \(newest complete checkpoint: checkpoint-3\)"):
        train.run_stage(str(SMOKE_RECIPE), flags(assets, out))  # the same command without resuming
    with pytest.warns(UserWarning, match=rf"{out / 'checkpoint-6'} is incomplete .* moved aside to incomplete-checkp"):
        train.run_stage(str(SMOKE_RECIPE), flags(assets, out, "--resume_from_checkpoint", "true"))
    (aside,) = out.glob("incomplete-checkpoint-6-*")
    assert (aside / "model.safetensors").is_file()  # kept, not deleted
    assert same_weights(weights(out), weights(uninterrupted))  # bit for bit the run that was never killed
    assert global_step(out) == 10 and global_step(out / "checkpoint-6") == 6  # checkpoint-6 saved anew
    (resume,) = recipe(out)["resumes"]
    assert (resume["step"], resume["checkpoint"], "changes" in resume) == (3, str(out / "checkpoint-3"), False)


def test_a_trainer_state_cut_off_mid_write_makes_the_checkpoint_incomplete(
    monkeypatch, assets, tmp_path, uninterrupted
):
    out = tmp_path / "run"
    run_killed(monkeypatch, assets, out, KillAt(6, mid_write=True))
    cut = out / "checkpoint-6" / "trainer_state.json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.read_text())  # there, but only its first half
    assert not is_complete(out / "checkpoint-6") and newest_complete(out) == out / "checkpoint-3"
    with pytest.warns(UserWarning, match=rf"{out / 'checkpoint-6'} is incomplete"):
        train.run_stage(str(SMOKE_RECIPE), flags(assets, out, "--resume_from_checkpoint", "true"))
    assert same_weights(weights(out), weights(uninterrupted)) and global_step(out) == 10
    (resume,) = recipe(out)["resumes"]
    assert resume["step"] == 3


def test_get_last_checkpoint_takes_a_half_written_checkpoint(tmp_path):
    """Why divalign keeps its own lookup: transformers' get_last_checkpoint would resume (or plot) the checkpoint a
    kill cut short."""
    from transformers.trainer_utils import get_last_checkpoint

    from divalign.launch.checkpoints import newest_complete
    from divalign.plotting import find_trainer_state

    for step in (3, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text(json.dumps({"global_step": 3, "log_history": []}))
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-6")  # no trainer_state.json: half-written
    assert newest_complete(tmp_path) == tmp_path / "checkpoint-3"
    assert find_trainer_state(tmp_path) == tmp_path / "checkpoint-3" / "trainer_state.json"


def test_killed_during_the_final_save_takes_the_last_checkpoint_as_output(monkeypatch, assets, tmp_path, uninterrupted):
    out = tmp_path / "run"
    train.run_stage(str(SMOKE_RECIPE), flags(assets, out))
    for name in ("model.safetensors", "trainer_state.json", "divalign_finished.json", "tokenizer.json"):
        (out / name).unlink()  # what a kill while writing the final model leaves
    (out / "model.safetensors").write_bytes(b"half a model")
    train.run_stage(str(SMOKE_RECIPE), flags(assets, out, "--resume_from_checkpoint", "true"))
    assert same_weights(weights(out), weights(uninterrupted)) and (out / "tokenizer.json").is_file()
    assert global_step(out) == 10 and json.loads((out / "divalign_finished.json").read_text())["global_step"] == 10
    assert not (out / "checkpoint-11").exists()


def test_changed_hyperparameters_refuse_to_resume_unless_allowed_and_recorded(monkeypatch, assets, tmp_path):
    out = tmp_path / "run"
    run_killed(monkeypatch, assets, out, KillAt(4))
    started = recipe(out)
    changed = ("--resume_from_checkpoint", "true", "--learning_rate", "1e-3", "--seed", "1", "--logging_steps", "2")
    with pytest.raises(RecipeError) as caught:
        train.run_stage(str(SMOKE_RECIPE), flags(assets, out, *changed))
    message = str(caught.value)
    assert f"resuming {out / 'checkpoint-3'} with other hyper-parameters" in message
    assert "learning_rate: 0.003 -> 0.001; seed: 0 -> 1)" in message  # logging_steps changes nothing trained
    assert recipe(out) == started
    train.run_stage(str(SMOKE_RECIPE), flags(assets, out, *changed, "--resume_with_changes", "true"))
    record = recipe(out)
    assert (record["learning_rate"], record["seed"]) == (0.001, 1)  # the values from step 3 on ...
    (resume,) = record["resumes"]
    assert resume["step"] == 3  # ... and the ones before
    assert resume["changes"] == {"learning_rate": {"before": 0.003, "after": 0.001}, "seed": {"before": 0, "after": 1}}
    assert global_step(out) == 10


def logged_rates(directory: Path) -> dict[int, float]:
    history = json.loads((directory / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["learning_rate"] for entry in history if "learning_rate" in entry}


def test_a_changed_learning_rate_is_applied_to_the_restored_optimizer(monkeypatch, assets, tmp_path, uninterrupted):
    """transformers restores the optimizer and scheduler over the new values; the resume applies the new rate to them
    (here a linear decay over 10 steps: step s trains, and logs, at lr × (10 − (s − 1)) / 10)."""
    out = tmp_path / "run"
    linear = ("--lr_scheduler_type", "linear", "--logging_steps", "1")
    run_killed(monkeypatch, assets, out, KillAt(4), *linear)
    changed = ("--resume_from_checkpoint", "true", "--learning_rate", "1e-3", "--resume_with_changes", "true")
    train.run_stage(str(SMOKE_RECIPE), flags(assets, out, *linear, *changed))
    rates = logged_rates(out)
    assert sorted(rates) == list(range(1, 11))
    for step, rate in rates.items():
        started_with = 3e-3 if step <= 3 else 1e-3  # steps 1-3 come from checkpoint-3, trained at the old rate
        assert rate == pytest.approx(started_with * (11 - step) / 10, rel=1e-6), (step, rate)
    unchanged = tmp_path / "unchanged"
    run_killed(monkeypatch, assets, unchanged, KillAt(4), *linear)
    train.run_stage(str(SMOKE_RECIPE), flags(assets, unchanged, *linear, "--resume_from_checkpoint", "true"))
    assert not same_weights(weights(out), weights(unchanged))  # the new rate trained steps 4-10
    assert recipe(out)["resumes"][0]["changes"] == {"learning_rate": {"before": 0.003, "after": 0.001}}


def test_a_constant_rate_changed_on_resume_is_the_rate_logged(monkeypatch, assets, tmp_path, uninterrupted):
    out = tmp_path / "run"
    run_killed(monkeypatch, assets, out, KillAt(4), "--logging_steps", "1")
    changed = ("--resume_from_checkpoint", "true", "--learning_rate", "1e-3", "--resume_with_changes", "true")
    train.run_stage(str(SMOKE_RECIPE), flags(assets, out, "--logging_steps", "1", *changed))
    assert logged_rates(out) == {step: 3e-3 if step <= 3 else 1e-3 for step in range(1, 11)}
    assert not same_weights(weights(out), weights(uninterrupted))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--weight_decay", "0.1"), r"weight_decay: 0.0 -> 0.1 \(stored in the checkpoint's optimizer state, which "
         r"the resume restores over it\)"),
        (("--optim", "sgd"), r"optim: 'adamw_torch(_fused)?' -> 'sgd' \(the checkpoint's optimizer state belongs to"),
    ],
)  # fmt: skip
def test_changes_that_cannot_take_effect_on_resume_are_refused(monkeypatch, assets, tmp_path, change, message):
    out = tmp_path / "run"
    run_killed(monkeypatch, assets, out, KillAt(4))
    started = recipe(out)
    allowed = ("--resume_from_checkpoint", "true", "--resume_with_changes", "true", "--learning_rate", "1e-3")
    with pytest.raises(RecipeError, match=rf"^resuming {out / 'checkpoint-3'}: these changes cannot take effect on a "
                       rf"resume \({message}"):  # fmt: skip
        train.run_stage(str(SMOKE_RECIPE), flags(assets, out, *allowed, *change))
    assert recipe(out) == started and sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]


@pytest.mark.parametrize("key", sorted(FIXED_BY_CHECKPOINT))
def test_every_value_the_checkpoint_restores_over_is_refused_on_resume(key):
    from divalign.launch.resume_changes import refuse_ineffective

    changes = {key: {"before": 1, "after": 2}, "learning_rate": {"before": 0.1, "after": 0.2}}
    with pytest.raises(RecipeError, match=rf"cannot take effect on a resume \({key}: 1 -> 2 \(") as caught:
        refuse_ineffective(changes, "checkpoint-3")
    assert "learning_rate" not in str(caught.value)  # applied, not refused


def test_a_scheduler_change_is_refused_only_to_or_from_a_stateful_scheduler():
    """LambdaLR schedules keep only the step in their state (the new one takes effect); ReduceLROnPlateau's and
    GreedyLR's state fits only themselves."""
    from divalign.launch.resume_changes import refuse_ineffective

    refuse_ineffective({"lr_scheduler_type": {"before": "constant", "after": "cosine"}}, "checkpoint-3")
    for before, after in (("cosine", "reduce_lr_on_plateau"), ("greedy", "linear")):
        with pytest.raises(RecipeError, match=rf"lr_scheduler_type: '{before}' -> '{after}' \(the checkpoint's sched"):
            refuse_ineffective({"lr_scheduler_type": {"before": before, "after": after}}, "checkpoint-3")


def test_a_resume_that_adds_or_removes_a_key_is_a_change(monkeypatch, assets, tmp_path):
    """An `env:` entry or a `diversity:` block added, removed or changed on resume is refused like any changed value."""
    probe = tmp_path / "probe.txt"
    probe.write_text("say a word w1\nsay a word w2\n")
    diversity = {"prompts": str(probe), "samples_per_prompt": 2, "max_new_tokens": 3, "every_steps": 5,
                 "embedding_model": None, "metrics": ["distinct_1"]}  # fmt: skip
    started_with = write_recipe(tmp_path / "started.yaml", env={"DIVALIGN_TEST_A": "1"}, diversity=diversity)
    out = tmp_path / "run"
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the env: block changes the process environment
    run_killed(monkeypatch, assets, out, KillAt(4), recipe_path=started_with)
    resume = ("--resume_from_checkpoint", "true")
    variants = {
        "env": ({"env": None, "diversity": diversity}, {"DIVALIGN_TEST_A": "1"}, None),
        "env ": ({"env": {"DIVALIGN_TEST_A": "1", "DIVALIGN_TEST_B": "2"}, "diversity": diversity}, None, None),
        "diversity": ({"env": {"DIVALIGN_TEST_A": "1"}, "diversity": None}, None, None),
        "diversity ": ({"env": {"DIVALIGN_TEST_A": "1"}, "diversity": {**diversity, "every_steps": 2}}, None, None),
    }
    for key, (blocks, before, after) in variants.items():
        changed = write_recipe(tmp_path / "changed.yaml", **blocks)
        with pytest.raises(RecipeError) as caught:
            train.run_stage(str(changed), flags(assets, out, *resume))
        message = str(caught.value)
        # a whole block added or removed is named by itself, a key added inside one as BLOCK.KEY
        opening = f"resuming {out / 'checkpoint-3'} with other hyper-parameters than the run started with ("
        assert re.search(re.escape(opening + key.strip()) + r"(\.\w+)?: ", message), message
        if before is not None:
            assert f"{key.strip()}: {before!r} -> {after!r})" in message
    train.run_stage(str(started_with), flags(assets, out, *resume))  # the same blocks: resumed
    assert global_step(out) == 10 and recipe(out)["env"] == {"DIVALIGN_TEST_A": "1"}


def test_a_resume_that_saves_nothing_records_nothing(monkeypatch, assets, tmp_path):
    out = tmp_path / "run"
    run_killed(monkeypatch, assets, out, KillAt(4))
    started = recipe(out)
    allowed = ("--resume_from_checkpoint", "true", "--learning_rate", "1e-3", "--resume_with_changes", "true")
    run_killed(monkeypatch, assets, out, KillAt(5), *allowed)  # killed again before its first new checkpoint
    assert recipe(out) == started  # checkpoint-3 still holds what the first attempt trained
    with pytest.raises(RecipeError, match=r"learning_rate: 0\.003 -> 0\.001"):
        train.run_stage(
            str(SMOKE_RECIPE), flags(assets, out, "--resume_from_checkpoint", "true", "--learning_rate", "1e-3")
        )


def test_failure_before_the_first_checkpoint_leaves_the_dir_usable(monkeypatch, assets, tmp_path, uninterrupted):
    out = tmp_path / "run"
    run_killed(monkeypatch, assets, out, KillAt(2))
    assert sorted(p.name for p in out.iterdir()) == ["divalign_recipe.yaml"]
    train.run_stage(str(SMOKE_RECIPE), flags(assets, out))  # the same command, nothing removed by hand
    assert same_weights(weights(out), weights(uninterrupted))


# One run per output directory


def write_lock(directory: Path, **owner) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_FILE).write_text(json.dumps({**owner_record(), **owner}))
    return directory / LOCK_FILE


def test_a_second_run_into_a_locked_dir_is_refused(assets, tmp_path):
    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        write_lock(out, pid=sleeper.pid, pid_start_ticks=process_start_ticks(sleeper.pid), command="divalign.train x")
        with pytest.raises(RunLockError) as caught:
            train.run_stage(str(SMOKE_RECIPE), flags(assets, out))
    finally:
        sleeper.kill()
        sleeper.wait()
    message = str(caught.value)
    assert f"output_dir {out} is in use by another run: pid {sleeper.pid} on host {socket.gethostname()}" in message
    assert "started 20" in message and "(divalign.train x)" in message and f"remove {out / LOCK_FILE}" in message
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the other run's files untouched


def test_a_stale_lock_is_taken_over(assets, tmp_path, uninterrupted):
    out = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lock(out, pid=gone.pid)
    with pytest.warns(UserWarning, match=rf"took over the stale lock of pid {gone.pid} on host"):
        train.run_stage(str(SMOKE_RECIPE), flags(assets, out))
    assert same_weights(weights(out), weights(uninterrupted)) and not (out / LOCK_FILE).exists()


def test_lock_owner_checks(tmp_path):
    reused = write_lock(tmp_path / "reused", pid=os.getpid(), pid_start_ticks=-1)  # our pid, another process
    with pytest.warns(UserWarning, match="took over the stale lock"), RunLock(reused.parent) as lock:
        assert json.loads(reused.read_text())["token"] == lock.owner["token"]
    assert not reused.exists()
    live = write_lock(tmp_path / "live")
    with pytest.raises(RunLockError, match="is in use by another run: pid"):
        RunLock(live.parent).acquire()
    remote = write_lock(tmp_path / "remote", host="gpu-node-17")
    with pytest.raises(
        RunLockError, match=r"in use by another run \(on another host: it cannot be checked from here\)"
    ):
        RunLock(remote.parent).acquire()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / LOCK_FILE).write_text("not json")
    with pytest.raises(RunLockError, match="is not a divalign lock record"):
        RunLock(tmp_path / "junk").acquire()


class LoseLock(TrainerCallback):
    """After step ``step``, delete the run's lock file (``owner=None``) or write another run's record into it."""

    def __init__(self, step: int, owner: dict | None = None):
        self.step, self.owner = step, owner

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            lock = Path(args.output_dir) / LOCK_FILE
            lock.unlink() if self.owner is None else lock.write_text(json.dumps(self.owner))


@pytest.mark.parametrize("taken", [False, True], ids=["deleted", "taken by another run"])
def test_a_run_that_lost_its_lock_stops_before_its_next_save(monkeypatch, assets, tmp_path, uninterrupted, taken):
    out = tmp_path / "run"
    other = {**owner_record(), "pid": 4242, "command": "divalign.train other.yaml"} if taken else None
    message = str(run_killed(monkeypatch, assets, out, LoseLock(4, other), expected=RunLockError))
    assert message.startswith(f"output_dir {out}: the lock {out / LOCK_FILE} no longer names this run (")
    assert ("(now held by pid 4242 on host" if taken else "(deleted)") in message
    assert "stopped before saving checkpoint-6" in message and "--resume_from_checkpoint true" in message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]  # nothing written after the loss
    assert same_weights(weights(out / "checkpoint-3"), weights(uninterrupted / "checkpoint-3"))  # intact
    assert not (out / "model.safetensors").exists() and not (out / "divalign_finished.json").exists()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == 4242 if taken else not (out / LOCK_FILE).exists()


def test_the_final_model_is_not_saved_without_the_lock(tmp_path):
    from divalign.launch.run_lock import require_lock

    lock = RunLock(tmp_path / "run").acquire()
    require_lock(lock, "before saving the final model")  # held: nothing happens
    (tmp_path / "run" / LOCK_FILE).unlink()
    with pytest.raises(RunLockError, match=r"no longer names this run \(deleted\), .*stopped before saving the final"):
        require_lock(lock, "before saving the final model")


@pytest.mark.slow
def test_two_processes_refuse_a_locked_dir_together(assets, tmp_path):
    """The main process checks the lock; the other rank gets the same error instead of waiting for it forever."""
    out = tmp_path / "run"
    write_lock(out, host="gpu-node-17")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "-m",
               "divalign.train", str(SMOKE_RECIPE), *flags(assets, out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("divalign.train: error: output_dir")]
    assert errors and all("is in use by another run (on another host" in line for line in errors), result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_resume_with_an_edited_diversity_block_names_only_the_changed_keys(tmp_path):
    """The resolved `diversity:` block is one key of the recipe: the refusal (and the record under `resumes:`) names
    the keys changed inside it, not both whole blocks."""
    from types import SimpleNamespace

    from divalign.launch.output_dir import RESOLVED_RECIPE, prepare_output_dir
    from divalign.launch.recipe import RunOptions

    block = {"prompts": "probe.jsonl", "every_steps": 2, "metrics": ["ead"], "stop_below": {"ead": 0.5}}
    started = {"trainer": "sft", "learning_rate": 0.001, "diversity": block, "env": {"A": "1"}}
    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "trainer_state.json").write_text(json.dumps({"global_step": 3, "max_steps": 10}))
    (out / RESOLVED_RECIPE).write_text(yaml.safe_dump(started))
    edited = {**started, "diversity": {**block, "every_steps": 5, "stop_below": {"ead": 0.4}}}
    args = SimpleNamespace(output_dir=str(out), resume_from_checkpoint="true", max_steps=10)
    with pytest.raises(RecipeError) as caught:
        prepare_output_dir(args, edited, RunOptions())
    message = str(caught.value)
    assert "(diversity.every_steps: 2 -> 5; diversity.stop_below.ead: 0.5 -> 0.4). Resume with" in message
    assert "probe.jsonl" not in message  # the unchanged keys of the block are not repeated
    plan = prepare_output_dir(args, edited, RunOptions(resume_with_changes=True))
    assert plan.changes == {
        "diversity.every_steps": {"before": 2, "after": 5},
        "diversity.stop_below.ead": {"before": 0.5, "after": 0.4},
    }
    removed = {**started, "diversity": None}  # a block added or removed is one change, shown whole
    assert prepare_output_dir(args, removed, RunOptions(resume_with_changes=True)).changes == {
        "diversity": {"before": block, "after": None}
    }


def test_the_checkpoint_prefix_is_transformers_own():
    """divalign spells transformers' checkpoint prefix out (so `divalign plot` and `--help` load no transformers)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from divalign.launch import checkpoints

    assert checkpoints.PREFIX_CHECKPOINT_DIR == PREFIX_CHECKPOINT_DIR
