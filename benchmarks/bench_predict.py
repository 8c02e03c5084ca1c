"""Benchmark 4, prediction: images/s at full resolution, as ``src/predict.py`` runs it.

``carseg.inference.predictor.Predictor`` on 1918x1280 images: normalise and resize, forward, sigmoid, and
the bilinear upsampling of the probabilities back to full size (decoding is benchmark 1's).
"""

from __future__ import annotations

from pathlib import Path

from fixtures import default_model_config
from harness import RssSampler, Settings, Variant, interleaved, row


def bench_predict(s: Settings, root: Path, sampler: RssSampler) -> list:
    """Row ``predict.full``: images/s of ``carseg.inference.predictor.Predictor`` on full-size images."""
    import torch

    from carseg.data.dataset import CarvanaDataset
    from carseg.inference.predictor import Predictor, batched, torch_forward
    from carseg.training.segmentation_module import SegmentationModule

    dataset = CarvanaDataset(root)
    images = [dataset.load_image(i) for i in dataset.ids[: s.predict_images]]
    torch.manual_seed(0)
    model = SegmentationModule(**default_model_config()).eval()
    predictor = Predictor(torch_forward(model), s.predict_size)

    def run() -> int:
        for batch in batched(images, s.predict_batch):
            predictor.probabilities(batch)
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
