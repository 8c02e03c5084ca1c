"""CSV rows that several processes write side by side and one merges: each process appends to a
file of its own, one whole row at a time, flushed, so a kill loses at most the row it was writing
(left out when read back, and predicted again by a resume)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path


def csv_line(row: Sequence[str]) -> str:
    """``row`` as one CSV line, quoted where a field needs it, ending in ``\\n``.

    A field holding ``\\r`` is quoted too (the csv module quotes only the line terminator it
    writes), so that a reader never takes it for the end of the row.
    """
    buffer = io.StringIO()
    quoting = csv.QUOTE_ALL if any("\r" in str(field) for field in row) else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator="\n", quoting=quoting).writerow(row)
    return buffer.getvalue()


def append_row(path: Path, row: Sequence[str]) -> None:
    """One CSV row, written whole in one call and flushed: a kill loses at most that row."""
    line = csv_line(row)
    with path.open("a", newline="", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def drop_partial_row(path: Path) -> None:
    """Cut off a last row a kill left without its ``\n``, so the next row starts a line and the
    fragment is never read as a row (its input is predicted again)."""
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            with path.open("rb+") as f:
                f.truncate(data.rfind(b"\n") + 1)


def read_rows(paths: Sequence[Path], width: int) -> list[list[str]]:
    """The complete rows of ``width`` fields in ``paths``, in order.

    Only ``\\n`` ends a row: a file name may hold any other line separator (U+2028, U+0085,
    ``\\r``), quoted by the writer. A last row without its ``\\n`` was cut short by a kill and is
    left out, as is a row of another width.
    """
    rows: list[list[str]] = []
    for path in paths:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            text = f.read()
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        try:
            for row in csv.reader(io.StringIO(complete, newline="")):
                if len(row) == width:
                    rows.append(row)
        except csv.Error:  # a quoted field a kill cut short: the rows before it count
            pass
    return rows
