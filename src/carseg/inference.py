"""Predict masks at the original image size from a checkpoint or an exported ONNX model.

The model sees each image resized to its training size; its probabilities are upsampled
(bilinear) back to the image's own size *before* thresholding, as Kaggle scored masks at 1918x1280.
Test-time augmentation averages the probabilities of the image and of its mirror image.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from carseg.data import IMAGE_EXTENSIONS, build_transforms  # noqa: E402
from carseg.errors import ConfigError, DataError, DataNotFoundError  # noqa: E402
from carseg.module import SegmentationModule  # noqa: E402

# A forward pass: normalised images (B, 3, H, W) -> logits (B, 1, H, W), both float32 on the CPU.
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ModelInfo:
    """What inference needs to know of a trained model, read from its checkpoint."""

    size: tuple[int, int] | None  # (height, width) it was trained at; None if not recorded
    threshold: float
    hparams: dict


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[SegmentationModule, ModelInfo]:
    """The trained model in eval mode, and its training size and threshold.

    Loading uses ``weights_only=True``: a checkpoint carrying pickled code is refused.

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: the file is not a carseg checkpoint.
    """
    path = Path(path).expanduser()
    raw = read_checkpoint(path)
    if "state_dict" not in raw or "hyper_parameters" not in raw:
        raise DataError(
            f"{path} is not a carseg training checkpoint (no state_dict/hyper_parameters)"
        )
    try:
        model = SegmentationModule(**raw["hyper_parameters"])
        model.load_state_dict(raw["state_dict"])
    except (TypeError, RuntimeError) as err:
        raise DataError(
            f"{path} does not fit this version's SegmentationModule (another model config?): {err}"
        ) from None
    model.eval().to(device)
    size = raw.get("datamodule_hyper_parameters", {}).get("size")
    size = (int(size[0]), int(size[1])) if size else None
    return model, ModelInfo(
        size=size, threshold=model.hparams.threshold, hparams=dict(model.hparams)
    )


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's content, loaded with ``weights_only=True`` (tensors and plain values only).

    Raises:
        DataNotFoundError: no file at ``path``.
        DataError: not a PyTorch checkpoint, or one carrying pickled objects (refused unread).
    """
    if not path.is_file():
        raise DataNotFoundError(f"Checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise DataError(
            f"{path} was refused: it holds Python objects other than tensors and plain values, "
            "and unpickling them could run code. carseg's checkpoints never do; load only "
            "checkpoints you trust."
        ) from None
    except Exception as err:  # not a zip, truncated, another format ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path} is not a PyTorch checkpoint ({first_line})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a training checkpoint (it holds a {type(raw).__name__})")
    return raw


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
    size = override if override else recorded
    if not size:
        raise ConfigError(
            "The checkpoint does not record the image size it was trained at: "
            "give it as size=[height,width]"
        )
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"size must be [height, width], got {list(size)}")
    return int(size[0]), int(size[1])


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


def list_images(path: str | Path) -> list[Path]:
    """The image files at ``path`` (a file, or the images directly in a folder), sorted by name.

    Raises:
        DataNotFoundError: nothing there, or no image in the folder.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataNotFoundError(
            f"Input not found: {path} (give an image file or a folder of images)"
        )
    images = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise DataNotFoundError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {path}: nothing to predict"
        )
    return images


def load_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 RGB ``(H, W, 3)``."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    if size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {size}")
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


def save_mask(mask: np.ndarray, path: Path) -> None:
    """A {0, 1} mask as a palette PNG (black and white, values {0, 1} like Kaggle's GIFs)."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(path)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the predicted car tinted green and its background dimmed."""
    out = image.astype(np.float32) * np.where(mask[..., None] > 0, 1.0, 0.55)
    tint = np.array([40, 220, 90], dtype=np.float32)
    car = mask > 0
    out[car] = (1 - alpha) * out[car] + alpha * tint
    return out.clip(0, 255).astype(np.uint8)


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    output_dir: Path,
    threshold: float,
    batch_size: int = 4,
    overlays: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``masks/<stem>_mask.png`` at each image's original size, ``overlays/`` if asked, and
    ``submission.csv`` (Kaggle's ``img,rle_mask``, one row per image in the order of ``paths``).

    Returns the path of ``submission.csv``.
    """
    from tqdm.auto import tqdm

    from carseg.rle import rle_encode, write_rle_csv

    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise DataError(
            "Two input images share a file name: their masks would overwrite each other"
        )
    (output_dir / "masks").mkdir(parents=True, exist_ok=True)
    if overlays:
        (output_dir / "overlays").mkdir(exist_ok=True)
    rows: list[tuple[str, str]] = []
    for batch in tqdm(
        list(batched(paths, batch_size)), desc="predicting", unit="batch", disable=not progress
    ):
        images = [load_rgb(p) for p in batch]
        for path, image, prob in zip(batch, images, predictor.probabilities(images), strict=True):
            mask = (prob > threshold).astype(np.uint8)
            save_mask(mask, output_dir / "masks" / f"{path.stem}_mask.png")
            if overlays:
                Image.fromarray(overlay(image, mask)).save(
                    output_dir / "overlays" / f"{path.stem}_overlay.jpg", quality=90
                )
            rows.append((path.name, rle_encode(mask)))
    submission = output_dir / "submission.csv"
    write_rle_csv(submission, rows)
    return submission
