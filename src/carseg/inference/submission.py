"""Kaggle's ``submission.csv`` from every process's rows, and what a resumed run has left to do.

Every process appends its rows to a file of its own (``carseg.inference.mask_writer``); at the
end the first process merges them into one ``submission.csv``, sorted, and checks that every
input is in it exactly once. A run that is killed keeps what it wrote: the same command with
``resume=true`` predicts only the inputs without a row (``left_to_predict``), then merges all
rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carseg.inference.output_folder import FAILED, ROWS, Outputs, mask_name
from carseg.inference.rows import csv_line, read_rows
from carseg.utils.atomic import write_json, write_text
from carseg.utils.errors import ConfigError, DataError
from carseg.utils.processes import is_first_process

log = logging.getLogger(__name__)


@dataclass
class Merged:
    """What the merged prediction holds."""

    submission: Path
    written: int
    failed: dict[str, str] = field(default_factory=dict)  # input -> why it could not be read


def _rows(outputs: Outputs, pattern: str) -> dict[str, str]:
    """The ``name -> value`` rows of every process's file of ``pattern``."""
    return dict(read_rows(sorted(outputs.folder.glob(pattern)), width=2))


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


def done_before(outputs: Outputs) -> dict[str, str]:
    """The inputs a killed run finished: a row, and the mask it was written after."""
    return {
        name: rle
        for name, rle in _rows(outputs, ROWS).items()
        if (outputs.masks / mask_name(name)).is_file()
    }


def left_to_predict(
    paths: Sequence[Path],
    names: Sequence[str],
    outputs: Outputs,
    resume: bool,
    settings: dict[str, Any],
) -> tuple[list[Path], list[str]]:
    """The inputs left to predict, with their names: all, or with ``resume`` those an earlier
    run did not finish.

    ``settings`` (the model and how it predicts) are recorded in ``prediction.json``; a resume
    with other settings is refused, so that one submission never mixes two models' masks.

    Raises:
        ConfigError: a resume whose settings differ from the earlier run's.
    """
    record = outputs.record
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
    return [p for p, _ in todo], [n for _, n in todo]
