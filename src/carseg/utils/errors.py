"""Errors a user can fix by changing a command, a config or a folder.

The entry points print these as one message, without a traceback; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): libraries'
    messages run on for screens, ours quote only what says what went wrong."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


class UnreadableFileError(DataError):
    """An image or mask file that cannot be read: ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str) -> None:
        super().__init__(f"Cannot read {path}: {reason}")
        self.path = path
        self.reason = reason
