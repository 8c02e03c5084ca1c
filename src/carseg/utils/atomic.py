"""Write a file or a folder so that a reader sees the old one or the whole new one, never half.

Everything carseg writes that another run reads back (checkpoints, exported models,
``summary.json``, the resized cache, the generated data set) goes through here: the content is
written under a temporary name in the same folder, then renamed into place. A rename within one
folder is atomic; a process killed while writing leaves the previous file whole and at worst a
``.<name>.tmp-*`` sibling, which the next write of the same file does not trip over.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _sibling(path: Path) -> Path:
    """A temporary name next to ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only when the block succeeds.

    The file is flushed to disk (``fsync``) before the rename, so that after a crash the name
    points at complete content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; it is renamed to ``path`` when the block succeeds.

    ``path`` must not exist, or be an empty folder. If another process renamed a complete folder
    to ``path`` first (two DDP ranks building one cache), that one is kept and this one dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # empty: rmdir refuses to delete anything else
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, content: Any) -> Path:
    """Write ``content`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(content, indent=2) + "\n")
