"""Errors a user can fix by changing a command, a config or a folder, and how they end a command.

The entry points print these as one message, without a traceback, and exit with status 2
(``exit_user_error``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from typing import NoReturn

USER_ERROR = 2  # the exit status of a command refused for a user's mistake


def without_worker_traceback(message: str) -> str:
    """``"Caught DataError in DataLoader worker process 0. Original Traceback ... DataError:
    Cannot read x.gif: ..."`` -> ``"Cannot read x.gif: ..."``."""
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    lines = message.splitlines()
    for start in range(len(lines) - 1, -1, -1):  # the exception's line: "module.Name: message"
        head, sep, rest = lines[start].partition(": ")
        if sep and not lines[start].startswith(" ") and head.rsplit(".", 1)[-1].endswith("Error"):
            return "\n".join([rest, *lines[start + 1 :]]).strip()
    return lines[-1]


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): libraries'
    messages run on for screens, ours quote only what says what went wrong."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def exit_user_error(err: BaseException) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``USER_ERROR`` (or the error's own
    ``exit_code``: a run stopped by a signal). An error a loader worker raised comes wrapped in
    the worker's traceback: only the error itself is printed."""
    print(f"error: {without_worker_traceback(str(err))}", file=sys.stderr)
    raise SystemExit(getattr(err, "exit_code", USER_ERROR)) from None


class CarsegError(Exception):
    """Base of the errors whose message says what was wrong and how to fix it."""


class ConfigError(CarsegError, ValueError):
    """A configuration that cannot run here (an unknown choice, GPUs that are not there ...)."""


class DataError(CarsegError, ValueError):
    """A data folder whose content does not fit Kaggle's Carvana layout."""


class DataNotFoundError(CarsegError, FileNotFoundError):
    """A data folder, or a part of it, that does not exist."""


class TrainingDivergedError(CarsegError, ArithmeticError):
    """The training loss became NaN or infinite."""


class DiskFullError(CarsegError, OSError):
    """A file could not be written: no space left on the device."""


class TerminatedError(CarsegError):
    """A run stopped by SIGTERM (what SLURM and Kubernetes send first) at a consistent point:
    exit status 143, as for a process the signal ended."""

    exit_code = 128 + 15


class UnreadableFileError(DataError):
    """An image or mask file that cannot be read: ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str | None = None) -> None:
        # (one argument: the whole message, as torch's DataLoader re-raises a worker's error)
        super().__init__(f"Cannot read {path}: {reason}" if reason is not None else str(path))
        self.path = path
        self.reason = reason if reason is not None else str(path)


_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
# how torch's zip writer reports a write the disk refused (it keeps no errno)
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "unexpected pos")
NEARLY_FULL = 16 * 2**20  # bytes free below which torch's failed write means a full disk


def is_disk_full(err: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """Whether ``err`` is a write the disk refused: ``ENOSPC`` or ``EDQUOT``, or torch's zip
    writer's failed write. Given the ``folder`` written to, torch's failure counts only while
    that folder's disk is nearly full (under ``NEARLY_FULL`` free): it may have other causes."""
    if isinstance(err, OSError):
        return err.errno in _FULL
    if not isinstance(err, RuntimeError) or not any(s in str(err) for s in _TORCH_WRITE_FAILED):
        return False
    if folder is None:
        return True
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


def free_space(filename: object) -> str:
    """``" (12 MiB free)"``: what is left on the disk of ``filename``'s folder, for a message
    (empty where it cannot be told)."""
    if not filename:
        return ""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(str(filename)))).free
    except OSError:
        return ""
    return f" ({free / 2**20:.0f} MiB free)"


def from_os_error(err: BaseException) -> CarsegError | None:
    """The user's error an OS-level failure means, or None for any other failure: a full disk
    (``is_disk_full``) or a destination that cannot be written (read-only, no permission),
    naming the file and the fix."""
    if isinstance(err, OSError) and is_disk_full(err):
        where = err.filename or "a file"
        return DiskFullError(
            f"No space left on the device while writing {where}{free_space(err.filename)}. The "
            "files written before are kept whole; free some space, or send the output elsewhere "
            "(paths.log_dir=...)"
        )
    if isinstance(err, OSError) and err.errno in _READ_ONLY and err.filename:
        return ConfigError(
            f"Cannot write {err.filename}: {err.strerror} (a read-only folder?). Give the "
            "command a destination you can write (output_dir=, output=, hydra.run.dir=, "
            "paths.log_dir=)"
        )
    if isinstance(err, RuntimeError) and is_disk_full(err):
        return DiskFullError(
            f"A file could not be written ({first_line(err)}): is the disk full? The files "
            "written before are kept whole"
        )
    return None
