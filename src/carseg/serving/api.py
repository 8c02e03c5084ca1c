"""The model's side of the server: a LitServe ``LitAPI`` run in each inference worker process.

It loads the model(s) once (``setup``) through predict's own path (``build_predictor``,
``postprocess_of``) and runs each batch of requests through predict's ``InferenceModule`` (the
probabilities at each photo's size, the threshold, the post-processing); masks, cut-outs and
composites are encoded by predict's writers' functions, so a served mask is byte for byte the
file ``predict.py`` writes for the same photo and settings.

LitServe answers every request of a batch with the same error when a step raises, so a photo that
cannot be read does not raise: it becomes an ``Answer`` with a 4xx status, and the batch's other
photos are predicted.
"""

from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import litserve as ls
import numpy as np
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities import move_data_to_device
from starlette.responses import Response

from carseg.data.image_io import TooManyPixelsError, decode_image, save_mask
from carseg.data.rle import rle_encode
from carseg.inference.cutouts import alpha_of, composite, save_composite, save_cutout
from carseg.inference.loop import InferenceModule, build_predictor, collate, postprocess_of
from carseg.utils.errors import UnreadableFileError


@dataclass
class Answer:
    """A request's outcome: an error (``status`` >= 400, ``message``) or a prediction."""

    status: int = 200
    message: str = ""
    photo: np.ndarray | None = None  # uint8 (H, W, 3)
    uploaded_background: np.ndarray | None = None  # uint8 (h, w, 3)
    request: dict[str, Any] | None = None
    mask: np.ndarray | None = None  # uint8 (H, W) {0, 1}
    probabilities: np.ndarray | None = None  # uint8 (H, W), 0-255


def json_response(content: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(content), status_code=status, media_type="application/json")


class SegmentationAPI(ls.LitAPI):
    """Photos to masks, cut-outs and composites, in batches.

    Args:
        settings: ``inference`` (the predict options of ``conf/inference``), ``max_pixels``,
            ``model`` (the models' names, for the answers), ``cpu_workers`` (model processes
            sharing the CPU's cores).
        max_batch_size: requests predicted together at most.
        batch_timeout: seconds a worker waits for a batch to fill.
    """

    def __init__(self, settings: dict[str, Any], max_batch_size: int, batch_timeout: float):
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict"
        )
        self.settings = settings

    def setup(self, device: str) -> None:
        cfg = OmegaConf.create(self.settings["inference"])
        predictor, threshold, _ = build_predictor(cfg)
        self.module = InferenceModule(predictor, threshold, postprocess_of(cfg))
        self.module.eval()
        self.device = torch.device(device)
        workers = self.settings.get("cpu_workers", 1)
        if self.device.type == "cpu" and workers > 1:  # the cores shared, not oversubscribed
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        predictor.to(self.device)
        for model in predictor.models:  # as InferenceModule.setup places them in predict
            if hasattr(model, "place_on"):
                model.place_on(self.device)

    def decode_request(self, request: dict[str, Any]) -> Answer:
        try:
            photo = self._decode(request["image"], "the photo")
            background = request["background"]
            if background is not None:
                background = self._decode(background, "the background")
        except TooManyPixelsError as err:
            return Answer(413, f"{err} (max_pixels in the server's config)")
        except UnreadableFileError as err:
            return Answer(400, str(err))
        return Answer(photo=photo, uploaded_background=background, request=request)

    def _decode(self, data: bytes, what: str) -> np.ndarray:
        return decode_image(data, what, self.settings["max_pixels"])[0]

    def predict(self, x: Answer | list[Answer]) -> Answer | list[Answer]:
        answers = x if isinstance(x, list) else [x]
        good = [a for a in answers if a.status < 400]
        if good:
            self.predict_batch(good)
        return answers if isinstance(x, list) else answers[0]

    @torch.inference_mode()
    def predict_batch(self, answers: list[Answer]) -> None:
        """Masks (and, for soft edges, probabilities) of ``answers``' photos, in place: the
        items predict's loader makes, collated and run through ``InferenceModule``."""
        predictor = self.module.predictor
        items = []
        for i, answer in enumerate(answers):  # as PredictionSet.item, from the decoded photo
            item = {"name": str(i), "path": None, "size": answer.photo.shape[:2]}
            item["inputs"] = predictor.inputs(answer.photo)
            guide = predictor.guide(answer.photo)  # (refine.guided: the grey photo)
            if guide is not None:
                item["guide"] = guide
            items.append(item)
        batch = move_data_to_device(collate(items), self.device)  # as Lightning moves a batch
        self.module.probabilities = any(a.request["feather"] > 0 for a in answers)
        out = self.module.predict_step(batch, 0)
        probabilities = out.get("probabilities", [None] * len(answers))
        for answer, mask, probs in zip(answers, out["masks"], probabilities, strict=True):
            answer.mask, answer.probabilities = mask, probs

    def encode_response(self, output: Answer) -> Response:
        if output.status >= 400:
            return json_response({"detail": output.message}, output.status)
        kind = output.request["output"]
        if kind == "mask":
            return Response(self.mask_png(output), media_type="image/png")
        if kind == "cutout":
            return Response(self.cutout_png(output), media_type="image/png")
        if kind == "composite":
            return Response(self.composite_jpeg(output), media_type="image/jpeg")
        summary = self.summary(output)
        if kind == "all":
            for key, data, media in (
                ("mask", self.mask_png(output), "image/png"),
                ("cutout", self.cutout_png(output), "image/png"),
                ("composite", self.composite_jpeg(output), "image/jpeg"),
            ):
                summary[key] = f"data:{media};base64,{base64.b64encode(data).decode()}"
        return json_response(summary)

    def summary(self, output: Answer) -> dict[str, Any]:
        """The JSON answer: the RLE in Kaggle's form (row-major, 1-based), the car's share of
        the frame, the size and the model."""
        height, width = output.mask.shape
        return {
            "model": self.settings["model"],
            "width": width,
            "height": height,
            "threshold": self.module.threshold,
            "car_share": round(float(output.mask.mean()), 6),
            "rle": rle_encode(output.mask),
        }

    @staticmethod
    def mask_png(output: Answer) -> bytes:
        buffer = io.BytesIO()
        save_mask(output.mask, buffer, format="PNG")
        return buffer.getvalue()

    def alpha(self, output: Answer) -> np.ndarray:
        return alpha_of(
            output.mask, output.probabilities, output.request["feather"], self.module.threshold
        )

    def cutout_png(self, output: Answer) -> bytes:
        buffer = io.BytesIO()
        save_cutout(output.photo, self.alpha(output), buffer)
        return buffer.getvalue()

    def composite_jpeg(self, output: Answer) -> bytes:
        ground = output.uploaded_background
        ground = ground if ground is not None else output.request["colour"]
        buffer = io.BytesIO()
        save_composite(composite(output.photo, self.alpha(output), ground), buffer)
        return buffer.getvalue()
