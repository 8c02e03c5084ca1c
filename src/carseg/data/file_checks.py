"""Check a Carvana folder before training or evaluation starts: every problem found at once, from
file headers.

Reading every pixel of Kaggle's 5,088 training images takes minutes; their headers take seconds. So
each image and mask is opened (Pillow reads the header only), its size compared, its end checked for
the format's closing marker (a truncated JPEG, GIF or PNG lacks it), and each RLE row checked
against its image's size without building the mask. What this cannot see (a corrupt middle of a
file with intact ends) still fails when decoded, with the file named (``CarvanaDataset``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carseg.data.image_io import read_header
from carseg.data.rle import rle_validate
from carseg.utils.errors import DataError, UnreadableFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one image of a data set."""

    image_id: str
    path: Path
    what: str  # a short sentence: "truncated JPEG (no end marker)"


def check_dataset(
    image_paths: dict[str, Path],
    mask_paths: dict[str, Path],
    rles: dict[str, str],
    rle_lines: dict[str, int] | None = None,
) -> list[Problem]:
    """Every problem of the images and their masks (GIF/PNG files, or RLE rows with their line
    numbers in ``train_masks.csv``), one per image."""
    problems: list[Problem] = []
    for image_id, path in image_paths.items():
        try:
            size, _ = read_header(path)
        except UnreadableFileError as err:
            problems.append(Problem(image_id, path, f"image {err.reason}"))
            continue
        if image_id in mask_paths:
            mask_path = mask_paths[image_id]
            try:
                mask_size, _ = read_header(mask_path)
            except UnreadableFileError as err:
                problems.append(Problem(image_id, mask_path, f"mask {err.reason}"))
                continue
            if mask_size != size:
                problems.append(
                    Problem(
                        image_id,
                        mask_path,
                        f"mask is {mask_size[1]}x{mask_size[0]} but its image is "
                        f"{size[1]}x{size[0]}",
                    )
                )
        elif image_id in rles:
            try:
                rle_validate(rles[image_id], size)
            except ValueError as err:
                line = (rle_lines or {}).get(image_id, "?")
                problems.append(
                    Problem(image_id, path, f"its train_masks.csv row, line {line}: {err}")
                )
    return problems


def describe(problems: list[Problem], total: int, shown: int = 20) -> str:
    """A message listing the problems (the first ``shown``), with the count."""
    lines = [f"{len(problems)} of {total} images have a problem:"]
    lines += [f"  {p.path}: {p.what}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)


def usable_ids(dataset: Any, skip: bool, skip_option: str) -> list[str]:
    """The ids of ``dataset`` (a ``CarvanaDataset``) whose files have no problem.

    With problems and not ``skip``, stop listing them all; with ``skip``, leave those images out
    with a warning that lists them.

    Raises:
        DataError: problems and not ``skip``, or no usable image left.
    """
    started = time.perf_counter()
    problems = dataset.problems()
    log.info(
        "Checked %d images and masks in %.1f s: %d problem(s)",
        len(dataset),
        time.perf_counter() - started,
        len(problems),
    )
    if not problems:
        return list(dataset.ids)
    message = describe(problems, len(dataset))
    if not skip:
        raise DataError(
            f"{message}\nFix or remove these files, or leave them out with {skip_option}"
        )
    log.warning("%s\nGoing on without them (%s)", message, skip_option)
    bad = {p.image_id for p in problems}
    ids = [i for i in dataset.ids if i not in bad]
    if not ids:
        raise DataError(f"No usable image left in {dataset.image_dir}")
    return ids
