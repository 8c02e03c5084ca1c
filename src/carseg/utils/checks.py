"""Checks of the options a user types: each failure is a ``ConfigError`` naming the key and a fix.

Every option that reaches torch, Lightning or the file system is checked here first, so that a
mistake costs one line of message and exit 2, not a traceback from deep inside a library.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from carseg.utils.errors import ConfigError


def check_int(key: str, value: Any, minimum: int, hint: str = "") -> int:
    """``value`` if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"{key} must be an integer >= {minimum}{extra}, got {value!r}")
    return value


def check_positive(key: str, value: Any) -> float:
    """``value`` if it is a finite number > 0 (a learning rate, a weight)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{key} must be greater than 0, got {value}")
    return float(value)


def check_non_negative(key: str, value: Any) -> float:
    """``value`` if it is a finite number >= 0 (a weight decay, a loss weight)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{key} must be 0 or more, got {value}")
    return float(value)


def check_share(key: str, value: Any) -> float:
    """``value`` if it is a number from 0 to 1 (a probability, a share of crops)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{key} must be a share from 0 to 1, got {value!r}")
    return float(value)


def check_threshold(key: str, value: Any) -> float:
    """``value`` if it is a probability strictly between 0 and 1.

    0 or less makes every pixel car, 1 or more none: both give a mask that means nothing.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ConfigError(
            f"{key}={value!r}: the threshold is the probability above which a pixel is car and "
            "must be between 0 and 1 (exclusive), e.g. 0.5"
        )
    return float(value)


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: choose one of {', '.join(map(str, choices))}")
    return value


MAX_SIDE = 8192  # pixels: the largest side a model is fed (4x Carvana's 1918)


def check_size(key: str, size: Any, minimum: int = 1) -> tuple[int, int]:
    """``(height, width)`` from a two-item list of integers from ``minimum`` to ``MAX_SIDE``
    (a larger frame asks for tens of GB before the model even runs)."""
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= minimum for s in size)
    ):
        least = f", each at least {minimum}" if minimum > 1 else ""
        raise ConfigError(
            f"{key} must be [height, width] in pixels{least}, e.g. [320,480]; got {size!r}"
        )
    if max(size) > MAX_SIDE:
        raise ConfigError(
            f"{key}={list(size)}: at most {MAX_SIDE} pixels a side (Carvana's photos are "
            "1280x1918); for frames that large, predict in tiles (tile=[h,w])"
        )
    return int(size[0]), int(size[1])


def require_gpus(wanted: int, asked_by: str, instead: str) -> None:
    """Stop unless this machine has ``wanted`` CUDA GPUs.

    Args:
        wanted: how many.
        asked_by: the option that asked for them, for the message.
        instead: the option to use on a machine without them.
    """
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        why = (
            "this PyTorch is a CPU-only build"
            if torch.version.cuda is None
            else "CUDA finds no GPU (check the driver and CUDA_VISIBLE_DEVICES)"
        )
        raise ConfigError(
            f"{wanted} GPU(s) asked for ({asked_by}), but this machine has none: {why}. "
            f"Use {instead}."
        )
    if wanted > available:
        raise ConfigError(
            f"{wanted} GPUs asked for ({asked_by}), but only {available} are available: "
            f"ask for {available} or fewer"
        )


def check_required(cfg: Any, key: str, what: str) -> Any:
    """``cfg[key]``, unless the config leaves it empty: then stop with a message naming ``key``."""
    value = cfg.get(key)
    if value in (None, ""):
        raise ConfigError(f"{key} is required: {what}")
    return value


def check_bool(key: str, value: Any) -> bool:
    """``value`` if it is true or false (Hydra reads ``tta=abc`` as the string ``"abc"``)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def check_apart(
    read: Path, read_key: str, write: Path, write_key: str, *, file_in_folder: bool = False
) -> None:
    """Refuse a destination that is, holds or lies inside what the command reads: a command never
    writes into (or clears) a folder it reads from, whatever the nesting. With
    ``file_in_folder``, an input file stands for the folder holding it.

    Raises:
        ConfigError: the two keys, the paths, and the fix.
    """
    read, write = Path(read).expanduser().resolve(), Path(write).expanduser().resolve()
    # an input file: its folder (file_in_folder, predict's input=photo.jpg), or the file itself
    source = read.parent if file_in_folder and read.is_file() else read
    if write == source or source in write.parents or write in source.parents:
        where = "is" if write == source else ("is inside" if source in write.parents else "holds")
        raise ConfigError(
            f"{write_key}={write} {where} what this command reads ({read_key}={read}): it would "
            f"write into, or clear, its own input. Give {write_key} a place apart from it"
        )


def check_writable(folder: Path, key: str) -> Path:
    """``folder``, made if need be, once a file could be written in it.

    Raises:
        ConfigError: the folder cannot be made or written (read-only, no permission, a file).
    """
    folder = Path(folder).expanduser()
    probe = folder / f".carseg-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ConfigError(
            f"{key}={folder} cannot be written ({why}): give {key} a folder you can write"
        ) from None
    return folder
