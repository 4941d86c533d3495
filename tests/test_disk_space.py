"""The suite's disk check: a disk without room for the temporary folders stops the run before any test, naming
where and how much."""

from __future__ import annotations

import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

import disk_space
from disk_space import GB, existing_ancestor, require_free_disk, selects_real_model_tests, temporary_root

Usage = namedtuple("Usage", "total used free")


def test_a_disk_with_room_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda path: Usage(100 * GB, 10 * GB, 90 * GB))
    require_free_disk(tmp_path)


def test_a_full_disk_names_the_folder_what_is_free_and_what_is_needed(tmp_path, monkeypatch):
    seen = []

    def usage(path):
        seen.append(Path(path))
        return Usage(100 * GB, 97.9 * GB, 2.1 * GB)

    monkeypatch.setattr(disk_space.shutil, "disk_usage", usage)
    with pytest.raises(pytest.UsageError) as refused:
        require_free_disk(tmp_path / "not" / "made" / "yet", needed=6 * GB)
    message = str(refused.value)
    assert str(tmp_path / "not" / "made" / "yet") in message
    assert "2.1 GB is free" in message and "about 6 GB" in message and "TMPDIR" in message
    assert seen == [tmp_path]  # measured on the nearest folder that exists


def test_the_temporary_root_is_basetemp_or_the_systems_temporary_directory(tmp_path, monkeypatch):
    assert temporary_root(str(tmp_path / "base")) == tmp_path / "base"
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(disk_space.tempfile, "tempdir", None)  # gettempdir() caches its first answer
    assert temporary_root(None) == tmp_path
    assert existing_ancestor(tmp_path / "a" / "b") == tmp_path


def test_only_runs_that_reach_the_real_model_tests_need_the_room(tmp_path):
    tests = Path(__file__).parent
    repo = tests.parent
    assert selects_real_model_tests(["tests"], repo) and selects_real_model_tests(["."], repo)
    assert selects_real_model_tests(["tests/test_realworld_demo.py::test_a_rerun_reuses_every_cell_and_sample"], repo)
    assert selects_real_model_tests(["test_realworld_demo.py"], tests)
    assert not selects_real_model_tests(["tests/test_losses.py", "tests/test_trainers.py::test_x"], repo)
    assert not selects_real_model_tests([str(tmp_path)], repo)


PROBE_CONFTEST = """import importlib.util, pathlib, sys
sys.path.insert(0, {tests!r})
import disk_space
disk_space.NEEDED_BYTES = 10**18
disk_space.REAL_MODEL_TESTS = pathlib.Path(__file__).with_name("test_needs_room.py")
spec = importlib.util.spec_from_file_location("suite_conftest", {conftest!r})
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
pytest_sessionstart = suite.pytest_sessionstart
"""


def test_pytest_refuses_to_start_without_room_before_any_test(tmp_path):
    """Real pytest runs with this suite's session hook and a need above any disk: a run reaching the tests that need
    the room exits with code 4 (a usage error) before any test, the message on stderr; a run of other tests goes on."""
    tests = Path(__file__).parent
    conftest = PROBE_CONFTEST.format(tests=str(tests), conftest=str(tests / "conftest.py"))
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_needs_room.py").write_text("def test_never_runs():\n    open('ran', 'w').close()\n")
    (tmp_path / "test_small.py").write_text("def test_runs():\n    pass\n")

    def pytest_run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)

    refused = pytest_run("test_needs_room.py")
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout + refused.stderr
    assert "the test suite needs about 1000000000 GB free" in refused.stderr
    assert "passed" not in refused.stdout and not (tmp_path / "ran").exists()
    whole = pytest_run()  # no paths: the folder, which holds the tests that need the room
    assert whole.returncode == pytest.ExitCode.USAGE_ERROR and not (tmp_path / "ran").exists()
    small = pytest_run("test_small.py")
    assert small.returncode == 0 and "1 passed" in small.stdout, small.stdout + small.stderr
    assert "needs about" not in small.stderr
