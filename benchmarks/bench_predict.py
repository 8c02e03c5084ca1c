"""Benchmark 4, prediction: images/s at full resolution, as ``src/predict.py`` runs it.

``carseg.inference.predictor.Predictor`` on 1918x1280 images: normalise and resize, forward,
sigmoid, and the bilinear upsampling of the probabilities back to full size (decoding is
benchmark 1's).
"""

from __future__ import annotations

from pathlib import Path

from harness import RssSampler, Settings, Variant, interleaved, row

from fixtures import default_model_config


def bench_predict(s: Settings, root: Path, sampler: RssSampler) -> list:
    """Row ``predict.full``: images/s of ``carseg.inference.predictor.Predictor`` on full-size
    images."""
    import torch

    from carseg.data.dataset import CarvanaDataset
    from carseg.inference.predictor import Predictor
    from carseg.training.segmentation_module import SegmentationModule

    dataset = CarvanaDataset(root, image_dir="train")
    images = [dataset.load_image(i) for i in dataset.ids[: s.predict_images]]
    torch.manual_seed(0)
    model = SegmentationModule(**default_model_config()).eval()
    predictor = Predictor(
        models=[model], sizes=[s.predict_size], tta=False, tile=None, tile_overlap=0
    )

    def run() -> int:
        for start in range(0, len(images), s.predict_batch):
            predictor.probabilities(images[start : start + s.predict_batch])
        return len(images)

    h, w = s.predict_size
    full = "x".join(str(x) for x in images[0].shape[1::-1])
    v = Variant(
        "predict.full",
        f"predict {full}: model at {h}x{w} b{s.predict_batch}, fp32, upsampled",
        run,
        note="images decoded beforehand",
    )
    interleaved([v], s, sampler, "predict")
    return [row(v, "images/s", sampler)]
