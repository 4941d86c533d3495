"""What divalign replaces is kept beside it under a timestamped name that nothing has yet; nothing is deleted."""

from __future__ import annotations

import divalign.set_aside as set_aside


def test_names_carry_the_utc_time_and_skip_every_taken_name(tmp_path, monkeypatch):
    monkeypatch.setattr(set_aside.time, "strftime", lambda fmt, t: "20261130-154500")
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.txt").write_text("first")
    (tmp_path / "run.old-20261130-154500").mkdir()  # an earlier move in the same second
    (tmp_path / "run.old-20261130-154500-1").write_text("a file takes a name too")
    moved = set_aside.move_aside(run)
    assert moved == tmp_path / "run.old-20261130-154500-2"
    assert (moved / "result.txt").read_text() == "first" and not run.exists()


def test_a_template_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(set_aside.time, "strftime", lambda fmt, t: "20261130-154500")
    checkpoint = tmp_path / "checkpoint-6"
    assert set_aside.aside_path(checkpoint, "incomplete-{name}-{stamp}").name == "incomplete-checkpoint-6-20261130-154500"
    (tmp_path / "replaced-20261130-154500.jsonl").write_text("{}\n")
    assert set_aside.aside_path(checkpoint, "replaced-{stamp}.jsonl").name == "replaced-20261130-154500-1.jsonl"


def test_the_stamp_is_utc_to_the_second():
    stamp = set_aside.aside_path(set_aside.Path("x"), "{stamp}").name
    assert len(stamp) == 15 and stamp[8] == "-" and stamp.replace("-", "").isdigit()
