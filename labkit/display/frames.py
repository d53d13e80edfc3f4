"""How the lab's tables show their numbers: every result's `to_frame()` is a pandas DataFrame,
and `readable` is the one way its floats are written, in a notebook and in the CLI alike.

A notebook's setup cell says it once, ``pd.set_option("display.float_format", readable)``; the
frames keep full precision for filtering, grouping and ``to_csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def readable(value: float) -> str:
    """Three significant digits under 10, one decimal under 100, whole numbers with thousands
    separators above: 0.457, 7.21, 43.7, 1,290."""
    if abs(value) < 10:
        return f"{value:.3g}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:,.0f}"


def as_text(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """The frame as the CLI prints it: of the `columns` it has (a run without ``/health``
    polling has no ``health_*`` columns), no index, NaN (nothing measured) as a dash."""
    shown = frame if columns is None else frame.filter(items=list(columns))
    return shown.to_string(index=False, float_format=readable, na_rep="-")
