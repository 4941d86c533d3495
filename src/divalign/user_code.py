"""A function of your own named `MODULE:FUNCTION` (a verifier, a quality scorer): imported as `python -m` would,
with a module in the current directory found, and a module that does not import (a syntax error, an error at import)
reported as the name it was given under, its file and line, instead of a traceback. A verifier's own error names the
sample it failed on.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _current_directory_importable(module_name: str) -> None:
    """Put the current directory first on the import path when `module_name`'s top-level module is a file or package
    there, as `python -m` does for every run."""
    top, here = module_name.split(".")[0], Path.cwd()
    if "" in sys.path or str(here) in sys.path:  # `python -m` or `python -c`: already on it
        return
    if (here / f"{top}.py").is_file() or (here / top / "__init__.py").is_file():
        sys.path.insert(0, str(here))
        importlib.invalidate_caches()


def _import_failure(what: str, spec: str, module_name: str, err: BaseException) -> ValueError:
    """The error of a module that exists but does not import: where it failed (file:line) and why."""
    if isinstance(err, SyntaxError):
        where = f"{err.filename}:{err.lineno}" if err.filename else f"line {err.lineno}"
        return ValueError(f"{what} {spec!r}: module {module_name!r} has a syntax error at {where}: {err.msg}")
    frames = traceback.extract_tb(err.__traceback__)
    frame = frames[-1] if frames else None
    where = f" at {frame.filename}:{frame.lineno}" if frame else ""
    return ValueError(f"{what} {spec!r}: importing module {module_name!r} raised {type(err).__name__}{where}: {err}")


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import `module:function` (a verifier, a quality scorer), naming `what` in errors. A module in the current
    directory is found as `python -m` finds it (the `divalign` script alone would not look there)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r}: expected 'module:function'")
    _current_directory_importable(module_name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name != err.name and not module_name.startswith(f"{err.name}."):
            raise _import_failure(what, spec, module_name, err) from err  # the module imports a missing one
        raise ValueError(
            f"{what} {spec!r}: cannot import module {module_name!r} ({err}); it must be installed or a .py file "
            f"(or package) in the current directory, {Path.cwd()}"
        ) from err
    except Exception as err:  # any error while the user's module runs is theirs: name its file and line
        raise _import_failure(what, spec, module_name, err) from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn


def load_verifier(spec: str) -> Callable[[str, str | None], bool]:
    """Import `module:function`; the function is called as `fn(completion_text, reference_answer) -> bool`, and an
    exception it raises is reported naming it, the sample and the reference answer (:func:`checked_verifier`)."""
    return checked_verifier(load_callable(spec, "Verifier"), spec)


def checked_verifier(verify: Callable[[str, str | None], Any], name: str) -> Callable[[str, str | None], bool]:
    """`verify` as a 0/1 verdict; an exception it raises becomes a ValueError naming `name`, the sample and the
    reference answer — a user's function failing on one sample among thousands must say which."""

    def checked(completion: str, answer: str | None) -> bool:
        try:
            return bool(verify(completion, answer))
        except Exception as err:
            raise ValueError(
                f"verifier {name!r} raised {type(err).__name__} on the sample {completion!r:.120} "
                f"(reference answer {answer!r:.80}): {err}"
            ) from err

    return checked
