"""What the tests compare on disk."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Inside the block, ``folder`` and everything below it behave as on a read-only mount: a
    write, a new file or folder there raises ``OSError(EROFS)`` (the tests run as root, whom
    permission bits do not stop)."""
    import builtins
    import io

    folder = Path(folder).resolve()
    real_open, real_mkdir, real_os_open = builtins.open, os.mkdir, os.open

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(folder)
        except (TypeError, ValueError):
            return False

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | bytes | os.PathLike) and set(mode) & set("wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = fake_open
    os.mkdir, os.open = fake_mkdir, fake_os_open
    try:
        yield
    finally:
        builtins.open = io.open = real_open
        os.mkdir, os.open = real_mkdir, real_os_open
