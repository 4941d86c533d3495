"""Markdown tables for the reports (compare, the demos): one writer, so every table has one shape, ``| a | b |`` rows
under a ``|---|---|`` rule, and the cell formats the tables share: a number or ``n/a``, a difference with its CI,
a mean ± std."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NOT_AVAILABLE = "n/a"


def _row(cells: Iterable[object]) -> str:
    # An empty cell is one space between its bars, as the hand-built tables wrote it
    return "|" + "".join(f" {cell} |" if str(cell) else " |" for cell in cells)


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]] = ()) -> list[str]:
    """The table's lines: the header, the rule, a line per row (cells as ``str`` renders them)."""
    return [_row(header), "|" + "---|" * len(header), *(_row(row) for row in rows)]


def number(value: float | None, decimals: int = 3, signed: bool = False) -> str:
    """``value`` with ``decimals`` decimals (and its sign with ``signed``); ``n/a`` for None."""
    if value is None:
        return NOT_AVAILABLE
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def interval(ci: Mapping[str, Any] | None, signed: bool = True, notes: bool = False) -> str:
    """``estimate [low, high]`` of a CI dict (``n/a`` without an estimate; the estimate alone without a CI). With
    ``notes``, why there is no CI (``(no CI: ...)``) and a method other than BCa (``(percentile)``)."""
    if not ci or ci.get("estimate") is None:
        return NOT_AVAILABLE
    text = number(ci["estimate"], signed=signed)
    if ci.get("ci_low") is None:
        return f"{text} (no CI: {ci.get('note', '')})" if notes else text
    text += f" [{number(ci['ci_low'], signed=signed)}, {number(ci['ci_high'], signed=signed)}]"
    return text if not notes or ci.get("method") == "BCa" else f"{text} ({ci['method']})"


def mean_std(mean: float | None, std: float | None, signed: bool = False) -> str:
    """``mean ± std`` over seeds (the mean's sign with ``signed``)."""
    return f"{number(mean, signed=signed)} ± {number(std)}"
