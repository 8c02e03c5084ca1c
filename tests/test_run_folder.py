"""carseg.runs.run_folder: a run folder belongs to one run."""

from __future__ import annotations

from carseg.runs.run_folder import claim, made_by_this_run


def test_a_default_run_folder_that_is_taken_gives_way_to_the_next_name(tmp_path):
    folder = tmp_path / "2026-01-01_00-00-00"
    assert claim(folder) == folder and made_by_this_run(folder)
    assert claim(folder) == tmp_path / "2026-01-01_00-00-00-2"
    assert claim(folder) == tmp_path / "2026-01-01_00-00-00-3"
