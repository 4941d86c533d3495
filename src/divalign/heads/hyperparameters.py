"""Checks of the numeric hyper-parameters of the losses: a real, finite number in range, named in the error.

A NaN or infinite temperature or exponent makes every loss and gradient NaN: one bad value silently turns a whole run
(and the model it saves) into NaN, so the configs, the recipe and CLI paths (through the configs) and the public
per-token losses all refuse it up front.
"""

from __future__ import annotations

import math
from numbers import Real


def require_number(name: str, value: object, *, minimum: float, inclusive: bool) -> float:
    """Return ``value`` as a float, or raise a ``ValueError`` naming the key and the allowed range.

    Refuses booleans, non-numbers, NaN and ±inf as well as values outside the range.
    """
    bound = f">= {minimum}" if inclusive else f"> {minimum}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"`{name}` must be a number {bound}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value}")
    if value < minimum or (value == minimum and not inclusive):
        raise ValueError(f"`{name}` must be {bound}, got {value}")
    return float(value)


def require_temperature(name: str, value: object) -> float:
    """A temperature β: finite and > 0."""
    return require_number(name, value, minimum=0, inclusive=False)


def require_exponent(name: str, value: object) -> float:
    """A focusing exponent γ: finite and >= 0."""
    return require_number(name, value, minimum=0, inclusive=True)
