"""Predict masks at the original image size from a trained model or an exported ONNX model.

The model sees each image resized to its training size; its probabilities are upsampled
(bilinear) back to the image's own size *before* thresholding, as Kaggle scored masks at 1918x1280.
Test-time augmentation averages the probabilities of the image and of its mirror image.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from carseg import drawing
from carseg.checks import check_int, check_size
from carseg.errors import ConfigError, DataError, UnreadableFileError
from carseg.image_io import read_image, save_mask
from carseg.rle import rle_encode, write_rle_csv
from carseg.transforms import build_transforms

log = logging.getLogger(__name__)

# A forward pass: normalised images (B, 3, H, W) -> logits (B, 1, H, W), both float32 on the CPU.
Forward = Callable[[torch.Tensor], torch.Tensor]


def torch_forward(model: torch.nn.Module, device: str = "cpu") -> Forward:
    """A ``Forward`` over a PyTorch model, without gradients."""

    @torch.no_grad()
    def forward(images: torch.Tensor) -> torch.Tensor:
        return model(images.to(device)).float().cpu()

    return forward


def onnx_forward(path: str | Path) -> Forward:
    """A ``Forward`` over an exported ONNX model, run by ONNX Runtime on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "Running an ONNX model needs onnxruntime: pip install -e '.[onnx]'"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def forward(images: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {input_name: images.numpy()})
        return torch.from_numpy(logits)

    return forward


def input_size(recorded: Sequence[int] | None, override: Sequence[int] | None) -> tuple[int, int]:
    """The size to feed the model: ``override`` if given, else the one its checkpoint recorded.

    A model fed another size than it was trained at loses most of its Dice, so there is no guess.
    """
    if override:
        return check_size("size", list(override))
    if not recorded:
        raise ConfigError(
            "The checkpoint does not record the image size it was trained at: "
            "give it as size=[height,width]"
        )
    return check_size("size", list(recorded))


class Predictor:
    """Probabilities at each image's original size.

    Args:
        forward: the model (``torch_forward`` or ``onnx_forward``).
        size: (height, width) the model expects (its training size).
        tta: also predict the mirror image and average the probabilities.
    """

    def __init__(self, forward: Forward, size: Sequence[int], tta: bool = False) -> None:
        self.forward = forward
        self.size = (int(size[0]), int(size[1]))
        self.tta = tta
        self.transform = build_transforms(self.size, train=False)

    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Car probability maps, float32 ``(H_i, W_i)``, for uint8 RGB images ``(H_i, W_i, 3)``."""
        batch = torch.stack([self.transform(image=image)["image"] for image in images])
        probs = torch.sigmoid(self.forward(batch))  # (B, 1, h, w) at the model's size
        if self.tta:
            mirrored = torch.sigmoid(self.forward(batch.flip(-1))).flip(-1)
            probs = (probs + mirrored) / 2
        return [
            F.interpolate(p[None], size=image.shape[:2], mode="bilinear", align_corners=False)[
                0, 0
            ].numpy()
            for p, image in zip(probs, images, strict=True)
        ]


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    check_int("batch_size", size, 1)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_output_dir(output_dir: Path, inputs: Path, overwrite: bool) -> None:
    """Refuse to write into the input folder, or over an earlier prediction unless ``overwrite``.

    Raises:
        ConfigError: what would have been overwritten, and how to go on.
    """
    output_dir, inputs = output_dir.resolve(), inputs.resolve()
    source = inputs if inputs.is_dir() else inputs.parent
    if output_dir == source or source in output_dir.parents:
        raise ConfigError(
            f"output_dir={output_dir} is inside the input folder {source}: predictions never go "
            "into the input folder; give another output_dir"
        )
    earlier = [p for p in (output_dir / "masks", output_dir / "submission.csv") if p.exists()]
    if earlier and not overwrite:
        raise ConfigError(
            f"{output_dir} already holds predictions ({', '.join(p.name for p in earlier)}): "
            "give another output_dir, or overwrite=true to replace them"
        )


def mask_name(path: Path) -> str:
    """``photo.jpg`` -> ``photo_mask.png``: Kaggle's naming, as a PNG."""
    return f"{path.stem}_mask.png"


def check_unique_names(paths: Sequence[Path]) -> None:
    """Refuse inputs whose masks would share a file (``car.jpg`` and ``car.png``).

    Raises:
        DataError: the clashing inputs, listed.
    """
    by_mask: dict[str, list[Path]] = {}
    for path in paths:
        by_mask.setdefault(mask_name(path), []).append(path)
    clashes = {name: group for name, group in by_mask.items() if len(group) > 1}
    if clashes:
        lines = [
            f"  {', '.join(p.name for p in group)} -> masks/{name}"
            for name, group in sorted(clashes.items())[:10]
        ]
        raise DataError(
            f"{len(clashes)} group(s) of inputs share a file name up to the extension, so their "
            "masks would overwrite each other:\n"
            + "\n".join(lines)
            + "\nRename them, or predict them from separate folders"
        )


@dataclass
class PredictionRun:
    """What ``predict_files`` wrote and what it could not read."""

    submission: Path
    written: int
    failed: dict[str, str] = field(default_factory=dict)  # input file name -> why it failed
    failed_list: Path | None = None  # failed.csv, when some inputs failed


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    output_dir: Path,
    threshold: float,
    batch_size: int = 4,
    overlays: bool = False,
    progress: bool = True,
) -> PredictionRun:
    """Write ``masks/<stem>_mask.png`` at each image's original size, ``overlays/`` if asked, and
    ``submission.csv`` (Kaggle's ``img,rle_mask``, one row per image written, in input order).

    An input that cannot be read is listed in ``failed.csv`` (file, reason) and skipped; the others
    are written.
    """
    from tqdm.auto import tqdm

    check_unique_names(paths)
    (output_dir / "masks").mkdir(parents=True, exist_ok=True)
    if overlays:
        (output_dir / "overlays").mkdir(exist_ok=True)
    rows: list[tuple[str, str]] = []
    failed: dict[str, str] = {}
    for batch in tqdm(
        list(batched(paths, batch_size)), desc="predicting", unit="batch", disable=not progress
    ):
        readable, images = [], []
        for path in batch:
            try:
                images.append(read_image(path)[0])
                readable.append(path)
            except UnreadableFileError as err:
                failed[path.name] = err.reason
                log.warning("Skipped %s: %s", path, err.reason)
        if not images:
            continue
        for path, image, prob in zip(
            readable, images, predictor.probabilities(images), strict=True
        ):
            mask = (prob > threshold).astype(np.uint8)
            save_mask(mask, output_dir / "masks" / mask_name(path))
            if overlays:
                Image.fromarray(drawing.overlay(image, mask)).save(
                    output_dir / "overlays" / f"{path.stem}_overlay.jpg", quality=90
                )
            rows.append((path.name, rle_encode(mask)))
    submission = output_dir / "submission.csv"
    write_rle_csv(submission, rows)
    run = PredictionRun(submission, len(rows), failed)
    if failed:
        run.failed_list = output_dir / "failed.csv"
        with run.failed_list.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["img", "reason"])
            writer.writerows(failed.items())
    return run
