"""What the recipe start-up hook (``divalign_recipe_hook.pth``) costs every Python start that is not a recipe.

Three scratch virtualenvs of this interpreter's base Python, without pip: a bare one, one with a ``.pth`` that does
nothing (``import sys``: what reading any one-line ``.pth`` costs), and one with the hook's ``.pth`` and module copied
into its site-packages as a wheel install puts them. Each runs the same commands, the three in turn, ``--runs`` times;
the table gives the median and the 10th/90th percentiles of the wall time of a whole process (start, run, exit), and
which modules ``-X importtime`` shows with the hook and not in the bare venv.

    python benchmarks/startup_hook_bench.py [--runs 300]

The commands: ``python -c pass``; ``python script.py``; ``python notes.yaml`` (a YAML file that is valid Python and
does not mention ``trainer``: the hook's module is imported and answers no, without reading it as YAML).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HOOK_FILES = ("divalign_recipe_hook.pth", "_divalign_recipe_hook.py")


def make_venv(directory: Path, files: dict[str, bytes]) -> Path:
    """A venv without pip, ``files`` (name: content) written into its site-packages."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(directory)
    python = directory / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for name, content in files.items():
        (Path(purelib) / name).write_bytes(content)
    return python


def wall_time(command: list) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def imported(python: Path, args: list[str]) -> set[str]:
    """The modules ``-X importtime`` reports for ``python args``."""
    done = subprocess.run([python, "-X", "importtime", *args], capture_output=True, text=True, check=True)
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def percentiles(times: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(times, n=10)
    return cuts[0] * 1e3, statistics.median(times) * 1e3, cuts[-1] * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="runs of each command in each venv")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        pythons = {
            "without": make_venv(root / "bare", {}),
            "do-nothing .pth": make_venv(root / "noop", {"noop.pth": b"import sys\n"}),
            "with": make_venv(root / "hooked", {name: (SRC / name).read_bytes() for name in HOOK_FILES}),
        }
        (root / "script.py").write_text("pass\n")
        (root / "notes.yaml").write_text("pass\n")
        commands = {
            "python -c pass": ["-c", "pass"],
            "python script.py": [str(root / "script.py")],
            "python notes.yaml": [str(root / "notes.yaml")],
        }
        print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, {args.runs} runs")
        print("p10 / median / p90 ms of a whole process; Δ: median minus the bare venv's")
        print("| command | bare venv | with a do-nothing .pth (Δ) | with the hook (Δ) |")
        print("|---|---|---|---|")
        for label, command in commands.items():
            times: dict[str, list[float]] = {name: [] for name in pythons}
            for _ in range(args.runs):
                for name, python in pythons.items():
                    times[name].append(wall_time([python, *command]))
            base = percentiles(times["without"])[1]
            cells = []
            for name in pythons:
                low, mid, high = percentiles(times[name])
                delta = "" if name == "without" else f" ({mid - base:+.2f})"
                cells.append(f"{low:.1f} / {mid:.1f} / {high:.1f}{delta}")
            print(f"| `{label}` | {' | '.join(cells)} |")
        for label, command in commands.items():
            extra = sorted(imported(pythons["with"], command) - imported(pythons["without"], command))
            print(f"`-X importtime {label}`: imported only with the hook: {extra or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
