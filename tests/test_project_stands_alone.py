"""The project stands alone: nothing it ships cites a document outside the repository, and the docs it cites exist."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"REFERENCE(\.md)?\s*§|\.\./shared\b")
DOCS_CITED = re.compile(r"docs/[\w./-]+\.md")


SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".sbatch"}
SKIPPED = {".git", ".venv", "runs", "wandb", "build", "dist"}


def tracked_text_files() -> list[Path]:
    """The repository's text files: git's list in a checkout, else every file outside build and run outputs."""
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode == 0:
        paths = [REPO / name for name in listed.stdout.split()]
    else:
        paths = [p for p in REPO.rglob("*") if not SKIPPED & set(p.relative_to(REPO).parts)]
    return [p for p in paths if p.is_file() and p.suffix in SUFFIXES and p.name != "test_project_stands_alone.py"]


def test_nothing_cites_a_document_outside_the_repository():
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in tracked_text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not offenders, offenders


def test_every_cited_doc_exists():
    cited = {match for path in tracked_text_files() for match in DOCS_CITED.findall(path.read_text(encoding="utf-8"))}
    assert cited, "the code cites its derivations in docs/"
    assert not [doc for doc in sorted(cited) if not (REPO / doc).is_file()]
