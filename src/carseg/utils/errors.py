"""Errors a user can fix by changing a command, a config or a folder, and how they end a command.

The entry points print these as one message, without a traceback, and exit with status 2
(``exit_user_error``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

USER_ERROR = 2  # the exit status of a command refused for a user's mistake


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): libraries'
    messages run on for screens, ours quote only what says what went wrong."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def exit_user_error(err: BaseException) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``USER_ERROR`` (or the error's own
    ``exit_code``: a run stopped by a signal)."""
    print(f"error: {err}", file=sys.stderr)
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

    def __init__(self, path, reason: str) -> None:
        super().__init__(f"Cannot read {path}: {reason}")
        self.path = path
        self.reason = reason
