"""What predict writes, process by process: masks, overlays and Kaggle RLE rows, merged at the end.

A ``MaskWriter`` in every process writes its masks, and its Kaggle RLE rows to a file of its own,
row by row, each after its mask; at the end the first process merges them into one
``submission.csv``, sorted, and checks that every input is in it exactly once. A run that is
killed keeps what it wrote: the same command with ``resume=true`` predicts only the inputs without
a row (``plan``), then merges all rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
from PIL import Image, ImageColor
from pytorch_lightning.callbacks import BasePredictionWriter

from carseg.data.image_io import read_image, save_mask
from carseg.data.rle import rle_encode
from carseg.inference.rows import append_row, csv_line, drop_partial_row, read_rows
from carseg.utils import drawing
from carseg.utils.atomic import atomic_file, write_json, write_text
from carseg.utils.checks import check_apart
from carseg.utils.errors import ConfigError, DataError, TerminatedError
from carseg.utils.processes import is_first_process

log = logging.getLogger(__name__)

OUTPUT_FOLDERS = ("masks", "overlays", "cutouts", "composites")
ROWS = "rows-rank*.csv"  # each process's img,rle_mask rows
FAILED = "failed-rank*.csv"  # each process's img,reason rows
CLEARED = (ROWS, FAILED, "submission.csv", "failed.csv", "prediction.json")  # by overwrite=true


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


def mask_name(name: str) -> str:
    """``photo.jpg`` -> ``photo_mask.png`` (Kaggle's naming, as a PNG); an input's name may hold
    the subfolders it came from (``recursive=true``): ``a/photo.jpg`` -> ``a/photo_mask.png``."""
    return _named(name, "_mask.png")


def _named(name: str, ending: str) -> str:
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


def parse_background(value: Any) -> tuple[int, int, int] | Path | None:
    """``background=``: None, a colour (a name or ``#rrggbb`` Pillow knows, or ``[r,g,b]``), or
    an image file, which is stretched to each photo's size.

    Raises:
        ConfigError: neither a colour nor an image file that can be read.
    """
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):  # (a ListConfig too)
        channels = list(value)
        if len(channels) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in channels):
            return tuple(channels)
        raise ConfigError(f"background={channels!r}: give three values from 0 to 255")
    text = str(value)
    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        pass
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"background={text!r} is neither a colour (white, #f0f0f0, [240,240,240]) nor an "
            "image file"
        )
    read_image(path)  # refuses a file that is not a readable image, naming it
    return path


def alpha_of(
    mask: np.ndarray, probabilities: np.ndarray | None, feather: float, threshold: float
) -> np.ndarray:
    """A cut-out's alpha ``(H, W)`` uint8, made from the final mask (threshold and
    post-processing applied): the mask itself, or with ``feather`` > 0 a soft edge over the
    probabilities within ``feather`` of ``threshold``, half-way at the threshold, where the
    mask's edge is.

    Whatever the feather, alpha is at least 128 exactly where the mask is car; where
    post-processing changed the thresholded mask (a component removed, a hole filled) it is the
    mask's own 0 or 255, and a soft fringe outside the mask is kept only where it joins the
    mask's car (not around a removed component): the cut-out shows the car the mask shows.
    """
    hard = mask.astype(np.uint8) * 255
    if feather <= 0 or probabilities is None:
        return hard
    car = mask.astype(bool)
    p = probabilities.astype(np.float32) / 255.0  # (stored to 1/255)
    below, above = max(min(feather, threshold), 1e-6), max(min(feather, 1 - threshold), 1e-6)
    soft = np.where(
        p > threshold,
        0.5 + 0.5 * np.clip((p - threshold) / above, 0.0, 1.0),
        0.5 * np.clip(1 - (threshold - p) / below, 0.0, 1.0),
    )
    alpha = (soft * 255).round()
    alpha = np.where(car, np.maximum(alpha, 128), np.minimum(alpha, 127))
    step = 1 / 255  # a pixel this close to the threshold may fall either side of it
    changed = (car & (p < threshold - step)) | (~car & (p > threshold + step))
    alpha = np.where(changed, hard, alpha).astype(np.uint8)
    fringe = ~car & (alpha > 0)
    if fringe.any():  # fringes of the mask's car only
        _, labels = cv2.connectedComponents((car | fringe).astype(np.uint8), connectivity=8)
        alpha[fringe & ~np.isin(labels, np.unique(labels[car]))] = 0
    return alpha


def save_cutout(photo: np.ndarray, alpha: np.ndarray, file: Any) -> None:
    """A cut-out: the photo ``(H, W, 3)`` with ``alpha`` ``(H, W)`` as an RGBA PNG, to a path or
    a binary file object (predict's ``cutouts/`` and the server's answers alike)."""
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(file, format="PNG")


def composite(
    photo: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int] | np.ndarray
) -> np.ndarray:
    """The car of ``photo`` ``(H, W, 3)`` uint8 over ``background``: a colour, or an RGB image
    stretched (bilinear) to the photo's size; ``alpha`` ``(H, W)`` uint8 weighs the photo."""
    if isinstance(background, np.ndarray):
        height, width = photo.shape[:2]
        ground = np.asarray(
            Image.fromarray(background).resize((width, height), Image.Resampling.BILINEAR),
            np.float32,
        )
    else:
        ground = np.broadcast_to(np.float32(background), photo.shape)
    a = alpha[..., None].astype(np.float32) / 255.0
    return (a * photo + (1 - a) * ground).round().astype(np.uint8)


def save_composite(image: np.ndarray, file: Any) -> None:
    """A composite as a JPEG (quality 95), to a path or a binary file object."""
    Image.fromarray(image).save(file, format="JPEG", quality=95)


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

    def rows(self, rank: int) -> Path:
        return self.folder / ROWS.replace("*", str(rank))

    def failures(self, rank: int) -> Path:
        return self.folder / FAILED.replace("*", str(rank))


class MaskWriter(BasePredictionWriter):
    """Writes each process's masks and rows as its batches come; merges them at the end."""

    def __init__(self, outputs: Outputs, inputs: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.outputs = outputs
        self.inputs = list(inputs)  # every input's file name, this attempt's and earlier ones'
        self.result: Merged | None = None
        self.written = 0  # inputs this process has written (or listed as failed)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs.masks.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        for path in (self.outputs.rows(rank), self.outputs.failures(rank)):
            drop_partial_row(path)  # a row a kill cut short: its input is predicted again

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        rank = trainer.global_rank
        written: list[str] = []
        for name, path, mask in zip(
            prediction["names"], prediction["paths"], prediction["masks"], strict=True
        ):
            with atomic_file(self.outputs.masks / mask_name(name)) as tmp:
                save_mask(mask, tmp, format="PNG")
            photo = None
            if self.outputs.overlays:
                photo = read_image(path)[0]
                with atomic_file(
                    self.outputs.folder / "overlays" / _named(name, "_overlay.jpg")
                ) as t:
                    Image.fromarray(drawing.overlay(photo, mask)).save(t, format="JPEG", quality=90)
            if self.outputs.cutouts or self.outputs.background is not None:
                photo = read_image(path)[0] if photo is None else photo
                probabilities = prediction.get("probabilities", [None] * len(prediction["names"]))
                alpha = alpha_of(
                    mask, probabilities[len(written)], self.outputs.feather, self.outputs.threshold
                )
                self._write_cutout(name, photo, alpha)
            written.append(name)
            append_row(self.outputs.rows(rank), [name, rle_encode(mask)])  # after its files
        for name, reason in prediction["failed"]:
            log.warning("Skipped %s: %s", name, reason)
            append_row(self.outputs.failures(rank), [name, reason])
        self.written += len(prediction["names"]) + len(prediction["failed"])
        if trainer.received_sigterm:  # (Lightning's predict loop does not stop for it)
            raise TerminatedError(
                f"Stopped by SIGTERM after {self.written} input(s) of this run; every row "
                f"written is whole. The same command with resume=true predicts the rest into "
                f"{self.outputs.folder}"
            )

    def _write_cutout(self, name: str, photo: np.ndarray, alpha: np.ndarray) -> None:
        """``cutouts/<name>.png`` (RGBA) and/or ``composites/<name>.jpg`` (the car on the
        background), each written whole."""
        if self.outputs.cutouts:
            with atomic_file(self.outputs.folder / "cutouts" / _named(name, ".png")) as tmp:
                save_cutout(photo, alpha, tmp)
        if self.outputs.background is not None:
            background = self.outputs.background
            if isinstance(background, Path):
                background = read_image(background)[0]
            with atomic_file(self.outputs.folder / "composites" / _named(name, ".jpg")) as tmp:
                save_composite(composite(photo, alpha, background), tmp)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier("carseg-merge")  # every process has written its rows
        if trainer.is_global_zero:
            self.result = merge(self.outputs, self.inputs)


def _rows(outputs: Outputs, pattern: str) -> dict[str, str]:
    """The ``name -> value`` rows of every process's file of ``pattern``."""
    return dict(read_rows(sorted(outputs.folder.glob(pattern)), width=2))


def done_before(outputs: Outputs) -> dict[str, str]:
    """The inputs a killed run finished: a row, and the mask it was written after."""
    return {
        name: rle
        for name, rle in _rows(outputs, ROWS).items()
        if (outputs.masks / mask_name(name)).is_file()
    }


@dataclass
class Merged:
    """What the merged prediction holds."""

    submission: Path
    written: int
    failed: dict[str, str] = field(default_factory=dict)  # input -> why it could not be read


def merge(outputs: Outputs, inputs: Sequence[str]) -> Merged:
    """``submission.csv`` from every process's rows: sorted by file name, every readable input
    exactly once; ``failed.csv`` lists the others.

    Raises:
        DataError: an input with neither a row nor a failure, or a row of no input.
    """
    rows = _rows(outputs, ROWS)
    failed = {k: v for k, v in _rows(outputs, FAILED).items() if k not in rows}
    expected = set(inputs)
    missing = sorted(expected - rows.keys() - failed.keys())
    extra = sorted(rows.keys() - expected)
    if missing:
        raise DataError(
            f"The prediction in {outputs.folder} is incomplete: {len(missing)} input(s) without a "
            f"row ({', '.join(missing[:5])}). Run it again with resume=true"
        )
    if extra:
        raise DataError(
            f"{outputs.folder} holds {len(extra)} row(s) of images that are not among the inputs "
            f"({', '.join(extra[:5])}): an earlier prediction of other images. Predict into "
            "another output_dir, or replace it with overwrite=true"
        )
    lines = ["img,rle_mask\n", *(csv_line([n, rows[n]]) for n in sorted(rows))]
    write_text(outputs.submission, "".join(lines))
    if failed:
        write_text(
            outputs.failed, "img,reason\n" + "".join(csv_line(r) for r in sorted(failed.items()))
        )
    else:
        outputs.failed.unlink(missing_ok=True)  # an earlier attempt's: those read this time
    return Merged(outputs.submission, len(rows), failed)


def clear(outputs: Outputs) -> None:
    """Remove an earlier prediction's files (``overwrite=true``), so none of it is merged."""
    for pattern in CLEARED:
        for path in outputs.folder.glob(pattern):
            path.unlink()
    for folder in OUTPUT_FOLDERS:  # their files, in subfolders too (recursive=true)
        for path in sorted((outputs.folder / folder).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()


def plan(
    paths: Sequence[Path],
    names: Sequence[str],
    outputs: Outputs,
    resume: bool,
    settings: dict[str, Any],
) -> tuple[list[Path], list[str], MaskWriter]:
    """The inputs left to predict, with their names (all, or with ``resume`` those an earlier run
    did not finish), and the writer for the Trainer's callbacks.

    ``settings`` (the model and how it predicts) are recorded in ``prediction.json``; a resume
    with other settings is refused, so that one submission never mixes two models' masks.

    Raises:
        ConfigError: a resume whose settings differ from the earlier run's.
    """
    record = outputs.folder / "prediction.json"
    settings = json.loads(json.dumps(settings))  # plain values, as they read back
    if resume and record.is_file():
        before = json.loads(record.read_text())
        differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if differ:
            shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in differ.items())
            raise ConfigError(
                f"resume=true with other settings than the run in {outputs.folder} ({shown}): "
                "one submission would mix two predictions. Resume with the same settings, or "
                "replace it with overwrite=true"
            )
    done = done_before(outputs) if resume else {}
    if done:
        log.info("Resuming: %d of %d inputs were predicted before", len(done), len(paths))
    if is_first_process():
        outputs.folder.mkdir(parents=True, exist_ok=True)
        write_json(record, settings)
    todo = [(p, n) for p, n in zip(paths, names, strict=True) if n not in done]
    return [p for p, _ in todo], [n for _, n in todo], MaskWriter(outputs, list(names))
