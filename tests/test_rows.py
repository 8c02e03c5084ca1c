"""carseg.inference.rows: rows written one whole line at a time, read back whatever the file
names hold, a row a kill cut short left out."""

from __future__ import annotations

import pytest

from carseg.inference.rows import append_row, drop_partial_row, read_rows


@pytest.mark.parametrize(
    "separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\r", "\n"]
)
def test_a_name_holding_any_line_separator_reads_back_as_written(tmp_path, separator):
    path = tmp_path / "rows-rank0.csv"
    names = [f"a{separator}b.jpg", "plain.jpg", f"{separator}start.jpg"]
    for name in names:
        append_row(path, [name, "1 2"])
    assert [row[0] for row in read_rows([path], width=2)] == names


def test_a_row_cut_short_is_left_out_and_the_next_starts_a_line(tmp_path):
    path = tmp_path / "rows-rank0.csv"
    append_row(path, ["a.jpg", "1 2"])
    with path.open("a") as f:
        f.write("b.jpg,3")  # killed in the middle of the row
    assert read_rows([path], width=2) == [["a.jpg", "1 2"]]
    drop_partial_row(path)  # (a resumed run, before it writes again)
    append_row(path, ["c.jpg", "5 6"])
    assert read_rows([path], width=2) == [["a.jpg", "1 2"], ["c.jpg", "5 6"]]
    assert path.read_text() == "a.jpg,1 2\nc.jpg,5 6\n"  # the fragment is gone, not a row
