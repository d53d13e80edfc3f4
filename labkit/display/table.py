"""Rows of measurements as a terminal table, an HTML table (for a notebook) or CSV.

One row is a ``dict`` of column name to value; every row of a table has the same columns. The
same rows feed all three forms, so the notebook, the CLI and a spreadsheet show the same numbers.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

Row = Mapping[str, Any]


class HasRows(Protocol):
    """A result that gives its measurements as rows: a `LoadResult`, a `Grid`."""

    def rows(self) -> list[dict[str, Any]]: ...


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: nothing was measured
            return "-"
        if abs(value) < 10:
            return f"{value:.3g}"
        return f"{value:.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def text_table(rows: Sequence[Row]) -> str:
    """Fixed-width columns, numbers right-aligned: what the CLI prints."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[c], int | float) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def html_table(rows: Sequence[Row]) -> str:
    """A plain HTML table: what a notebook shows for a result or a grid."""
    if not rows:
        return "<p>(no rows)</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_csv(rows: Sequence[Row], target: str | Path | IO[str]) -> None:
    """Write the rows, full precision, to a path or an open text file (``sys.stdout`` works)."""
    if isinstance(target, str | Path):
        with Path(target).open("w", newline="") as f:
            write_csv(rows, f)
        return
    if not rows:
        return
    writer = csv.DictWriter(target, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


class Table:
    """Rows that show themselves: HTML in a notebook, fixed-width text in a terminal.

    `columns` picks and orders columns; a named column the rows do not have is left out (a run
    without ``/health`` polling has no ``health_*`` columns), so one list serves every table.
    """

    def __init__(self, rows: Sequence[Row], columns: Sequence[str] | None = None) -> None:
        if columns is not None and rows:
            rows = [{c: row[c] for c in columns if c in rows[0]} for row in rows]
        self.rows = list(rows)

    def to_csv(self, target: str | Path | IO[str]) -> None:
        write_csv(self.rows, target)

    def __str__(self) -> str:
        return text_table(self.rows)

    __repr__ = __str__  # a notebook's plain-text view, and a printed list of tables

    def _repr_html_(self) -> str:
        return html_table(self.rows)


def table(result: HasRows, columns: Sequence[str] | None = None) -> Table:
    """A result's rows as a table, optionally of some columns only."""
    return Table(result.rows(), columns)
