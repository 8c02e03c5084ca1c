"""The one reader of the torch files carseg reads (checkpoints, encoder weight files), and the
check that the weights they hold are finite.

``read_torch_file`` loads with ``torch.load(weights_only=True)``: tensors and plain values only,
so a file carrying pickled code is refused without being run. Its messages are carseg's own:
torch's advice to load with ``weights_only=False`` (to run the file's code) is never passed on.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from carseg.utils.errors import DataError, DataNotFoundError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
# torch.save's format before torch 1.6 (``_use_new_zipfile_serialization=False``): pickle
# protocol 2, then torch's magic number 0x1950a86a20f9469cfc6c as a pickled long. Weights files
# published then are in it (efficientnet-lite0-57934424.pth); torch reads it as safely.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def read_torch_file(
    path: str | Path, noun: str = "file", what: str | None = None, fix: str = ""
) -> Any:
    """The content of a file written by ``torch.save``, read safely.

    Args:
        path: the file.
        noun: what it should be (``"checkpoint"``, ``"weights file"``).
        what: how messages start (``"model.net.encoder_weights=/x.pth"``); the path if None.
        fix: what to do instead, appended to each message.

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: a folder, an empty file, not a torch file (a zip archive, or the format
            before torch 1.6), one carrying pickled objects (refused unread), or a damaged one.
    """
    file = Path(path).expanduser()
    what = what or str(file)
    tail = f". {fix}" if fix else ""
    if file.is_dir():
        raise DataError(f"{what} is a folder, not a {noun}{tail}")
    if not file.is_file():
        raise DataNotFoundError(f"{what}: no such file{tail}")
    with file.open("rb") as f:
        start = f.read(len(LEGACY_MAGIC))
    legacy = start == LEGACY_MAGIC
    if not start.startswith(ZIP_MAGIC) and not legacy:
        kind = "an empty file" if not start else "it does not start as torch.save's zip archive"
        raise DataError(f"{what} is not a PyTorch {noun} ({kind}){tail}")
    try:  # (only a zip archive can be memory-mapped)
        return torch.load(file, map_location="cpu", weights_only=True, mmap=not legacy)
    except pickle.UnpicklingError:
        raise DataError(
            f"{what} was refused: it holds Python objects other than tensors and plain values, "
            "and unpickling them could run code. carseg's files never do; load only files you "
            f"trust{tail}"
        ) from None
    except Exception:  # a zip archive torch cannot read: cut short, or damaged
        raise DataError(
            f"{what} is a damaged PyTorch {noun} (a zip archive torch cannot read: cut short while "
            f"it was written or copied?){tail}"
        ) from None


def non_finite(tensors: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors in ``tensors`` that hold NaN or infinity."""
    return [
        str(name)
        for name, value in tensors.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]


def check_finite(tensors: Mapping[str, Any], what: str, fix: str) -> None:
    """Refuse weights holding NaN or infinity where they enter: trained on, they give NaN losses
    blamed on the learning rate; predicted with, empty masks without a word.

    Raises:
        DataError: naming the first such tensor and how many there are.
    """
    bad = non_finite(tensors)
    if bad:
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        raise DataError(f"{what} holds NaN or infinite weights ({bad[0]}{more}). {fix}")
