"""Predict's output folder: where each file goes, the names of the files, and the checks made
before anything is written (never into the input, never over an earlier prediction unasked).

    <output_dir>/masks/<name>_mask.png          every input's mask
    <output_dir>/overlays/<name>_overlay.jpg    overlays=true
    <output_dir>/cutouts/<name>.png             cutouts=true (``carseg.inference.cutouts``)
    <output_dir>/composites/<name>.jpg          background=...
    <output_dir>/rows-rank<k>.csv               each process's img,rle_mask rows, merged into
    <output_dir>/submission.csv                 (``carseg.inference.submission``)
    <output_dir>/failed.csv, prediction.json    inputs that could not be read; the settings
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from carseg.utils.checks import check_apart
from carseg.utils.errors import ConfigError, DataError

OUTPUT_FOLDERS = ("masks", "overlays", "cutouts", "composites")
ROWS = "rows-rank*.csv"  # each process's img,rle_mask rows
FAILED = "failed-rank*.csv"  # each process's img,reason rows
CLEARED = (ROWS, FAILED, "submission.csv", "failed.csv", "prediction.json")  # by overwrite=true


@dataclass
class Outputs:
    """Where a prediction run writes, and what: masks and rows always; overlays, cut-outs (the
    photo with the car as its alpha, PNG) and composites (the car on ``background``, JPEG) when
    asked."""

    folder: Path
    overlays: bool
    cutouts: bool
    background: tuple[int, int, int] | Path | None
    feather: float
    threshold: float  # the masks', about which a feathered cut-out's edge is soft

    @property
    def masks(self) -> Path:
        return self.folder / "masks"

    @property
    def submission(self) -> Path:
        return self.folder / "submission.csv"

    @property
    def failed(self) -> Path:
        return self.folder / "failed.csv"

    @property
    def record(self) -> Path:
        """``prediction.json``: the settings a resume must repeat."""
        return self.folder / "prediction.json"

    def rows(self, rank: int) -> Path:
        return self.folder / ROWS.replace("*", str(rank))

    def failures(self, rank: int) -> Path:
        return self.folder / FAILED.replace("*", str(rank))


def check_output_dir(output_dir: Path, inputs: Path, overwrite: bool, background: Any) -> None:
    """Refuse an ``output_dir`` that is, holds or lies inside the input (``overwrite`` would
    clear it, a resume would write masks into it), one whose outputs hold the ``background``
    image it reads (``overwrite`` would delete it, a composite of the same name replace it), or
    that holds an earlier prediction unless ``overwrite``.

    Raises:
        ConfigError: what would have been overwritten, and how to go on.
    """
    check_apart(inputs, "input", output_dir, "output_dir", file_in_folder=True)
    output_dir = output_dir.resolve()
    if isinstance(background, Path):
        image = background.expanduser().resolve()
        for written in (*OUTPUT_FOLDERS, *CLEARED):
            place = output_dir / written
            if image == place or place in image.parents:
                raise ConfigError(
                    f"background={background} lies in {place}, which this command writes "
                    "(overwrite=true clears it): copy the image elsewhere, or give another "
                    "output_dir"
                )
    markers = [output_dir / f for f in (*OUTPUT_FOLDERS, "submission.csv")]
    earlier = [p for p in markers if p.exists()]
    if earlier and not overwrite:
        raise ConfigError(
            f"{output_dir} already holds predictions ({', '.join(p.name for p in earlier)}): "
            "give another output_dir, or overwrite=true to replace them"
        )


def clear(outputs: Outputs) -> None:
    """Remove an earlier prediction's files (``overwrite=true``), so none of it is merged."""
    for pattern in CLEARED:
        for path in outputs.folder.glob(pattern):
            path.unlink()
    for folder in OUTPUT_FOLDERS:  # their files, in subfolders too (recursive=true)
        for path in sorted((outputs.folder / folder).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()


def mask_name(name: str) -> str:
    """``photo.jpg`` -> ``photo_mask.png`` (Kaggle's naming, as a PNG); an input's name may hold
    the subfolders it came from (``recursive=true``): ``a/photo.jpg`` -> ``a/photo_mask.png``."""
    return output_name(name, "_mask.png")


def output_name(name: str, ending: str) -> str:
    """An output's path for input ``name``: ``a/photo.jpg`` + ``_overlay.jpg`` ->
    ``a/photo_overlay.jpg``."""
    path = PurePosixPath(name)
    return str(path.with_name(f"{path.stem}{ending}"))


def input_names(paths: Sequence[Path], root: Path) -> list[str]:
    """Each input's name in the submission and under ``masks/``: its file name, or with
    subfolders, its path below the input folder ``root``."""
    root = root.expanduser()
    if not root.is_dir():
        return [p.name for p in paths]
    return [p.relative_to(root).as_posix() for p in paths]


def check_unique_names(names: Sequence[str]) -> None:
    """Refuse inputs whose masks would share a file (``car.jpg`` and ``car.png``).

    Raises:
        DataError: the clashing inputs, listed.
    """
    by_mask: dict[str, list[str]] = {}
    for name in names:
        by_mask.setdefault(mask_name(name), []).append(name)
    clashes = {name: group for name, group in by_mask.items() if len(group) > 1}
    if clashes:
        lines = [
            f"  {', '.join(group)} -> masks/{name}" for name, group in sorted(clashes.items())[:10]
        ]
        raise DataError(
            f"{len(clashes)} group(s) of inputs share a file name up to the extension, so their "
            "masks would overwrite each other:\n"
            + "\n".join(lines)
            + "\nRename them, or predict them from separate folders"
        )
