"""carseg.utils.atomic: a reader sees the old file or the whole new one, never half."""

from __future__ import annotations

import json

import pytest

from carseg.utils.atomic import atomic_dir, atomic_file, write_json, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"status": "running"})
    with pytest.raises(RuntimeError, match="killed"), atomic_file(path) as tmp:
        tmp.write_text('{"status": "comp')  # half written
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_write_replaces_the_file_whole_and_makes_its_folder(tmp_path):
    path = tmp_path / "deep" / "er" / "a.txt"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_the_temporary_is_a_sibling_so_the_rename_stays_on_one_file_system(tmp_path):
    path = tmp_path / "model.ckpt"
    with atomic_file(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".model.ckpt.tmp-")
        tmp.write_bytes(b"x")
        assert not path.exists()  # not in place until the block ends
    assert path.read_bytes() == b"x"


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "cache"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "part").write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "index.json").write_text("{}")
    assert [p.name for p in target.iterdir()] == ["index.json"]


def test_a_folder_another_process_completed_first_is_kept(tmp_path):
    """Two DDP ranks building one cache: the second's rename finds the first's folder."""
    target = tmp_path / "cache"
    with atomic_dir(target) as tmp:
        (tmp / "index.json").write_text('{"by": "rank 0"}')
        with atomic_dir(target) as other:
            (other / "index.json").write_text('{"by": "rank 1"}')
    assert json.loads((target / "index.json").read_text())["by"] in ("rank 0", "rank 1")
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
