"""`divalign compare SPEC`: train every variant × seed of a spec and compare them, calibrated, against a reference.

Each cell (``VARIANT-seedN``) is a pipeline run by `divalign pipeline`'s runner (:mod:`.cells`, :mod:`.runner`); the
report (:mod:`.report`) gathers the finished cells and sets each variant against the reference at the temperatures
where their diversity, then their quality, match (:mod:`.calibration`). Format: recipes/compare/README.md.
"""

from __future__ import annotations

from ..lazy_exports import lazy_getattr
from .command import add_parser, run
from .spec import CompareError, CompareSpec, EvaluationSpec
from .spec_file import load_compare

# The runner loads the launch checks (torch, TRL) and the calibration the samplers: imported on first use, so that
# `divalign --help` registers the subcommand without them
_LAZY = {
    **dict.fromkeys(("Cell", "build_cells"), ".cells"),
    **dict.fromkeys(("CellStatus", "CompareRunner"), ".runner"),
    **dict.fromkeys(("write_report",), ".report"),
    **dict.fromkeys(("run_compare",), ".workflow"),
    **dict.fromkeys(("calibrated_comparison", "calibration_markdown"), ".calibration"),
}

__all__ = [
    "Cell",
    "CellStatus",
    "CompareError",
    "CompareRunner",
    "CompareSpec",
    "EvaluationSpec",
    "add_parser",
    "build_cells",
    "calibrated_comparison",
    "calibration_markdown",
    "load_compare",
    "run",
    "run_compare",
    "write_report",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
