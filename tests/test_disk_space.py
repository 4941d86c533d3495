"""The suite's disk check: a disk without room for the temporary folders stops the run before any test, naming
where and how much."""

from __future__ import annotations

import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

import disk_space
from disk_space import GB, existing_ancestor, require_free_disk, temporary_root

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


def test_pytest_refuses_to_start_without_room_before_any_test(tmp_path):
    """A real pytest run with this suite's session hook and a need above any disk: exit code 4 (a usage error), the
    message on stderr, and the one test neither run nor reported."""
    tests = Path(__file__).parent
    (tmp_path / "test_probe.py").write_text("def test_never_runs():\n    open('ran', 'w').close()\n")
    (tmp_path / "conftest.py").write_text(
        f"""import importlib.util, sys
sys.path.insert(0, {str(tests)!r})
import disk_space
disk_space.NEEDED_BYTES = 10**18
spec = importlib.util.spec_from_file_location("suite_conftest", {str(tests / "conftest.py")!r})
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
pytest_sessionstart = suite.pytest_sessionstart
"""
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_probe.py"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "the test suite needs about 1000000000 GB free" in proc.stderr
    assert "passed" not in proc.stdout and not (tmp_path / "ran").exists()
