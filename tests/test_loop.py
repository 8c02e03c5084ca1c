"""carseg.inference.loop: the one way a model runs on images (eval, predict and serve alike)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import nn

from carseg.data.dataset import CarvanaDataset
from carseg.inference.loading import TrainedModel
from carseg.inference.loop import (
    InferenceModule,
    PredictionSet,
    ScoringSet,
    collate,
    model_size,
    postprocess_of,
    run_loop,
)
from carseg.inference.postprocess import PostProcess
from carseg.inference.predictor import Predictor, size_ceiling_dice
from carseg.models.metrics import dice_per_image
from carseg.utils.errors import ConfigError
from support.lightning import quiet_trainer

NO_POSTPROCESS = PostProcess(largest_component=False, fill_holes=False)


class Brightness(nn.Module):
    """A stand-in network: logits from the normalised red channel, so the car is where the photo is
    brighter than ImageNet's mean red (a fixed, known answer for any image)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))  # (a parameter: Lightning wants one)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, h, w) -> (B, 1, h, w)
        return self.scale * x[:, :1]


def predictor(sizes=((32, 48),), **options) -> Predictor:
    return Predictor(
        models=[Brightness() for _ in sizes],
        sizes=list(sizes),
        tta=options.get("tta", False),
        tile=None,
        tile_overlap=0,
        refine=options.get("refine"),
    )


def write_photos(folder, sizes) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


class Collect(BasePredictionWriter):
    """Every batch's outputs, as a writer callback receives them."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.batches: list[dict] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, *args) -> None:
        self.batches.append(prediction)


def run(dataset, module, batch_size=2) -> list[dict]:
    writer = Collect()
    trainer = quiet_trainer(1, callbacks=[writer], enable_checkpointing=False)
    run_loop(trainer, module, dataset, batch_size=batch_size, num_workers=0)
    return writer.batches


def test_items_hold_an_input_per_model_size_or_the_reason_they_cannot_be_read(tmp_path):
    (photo,) = write_photos(tmp_path, [(40, 60)])
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a JPEG")
    items = PredictionSet([photo, broken], predictor(sizes=[(32, 48), (16, 24)]))
    good, bad = items[0], items[1]
    assert good["name"] == "photo0.png" and tuple(good["size"]) == (40, 60)
    assert {k: tuple(v.shape) for k, v in good["inputs"].items()} == {
        "32x48": (3, 32, 48),
        "16x24": (3, 16, 24),
    }
    assert "guide" not in good
    assert bad["name"] == "broken.jpg" and bad["error"] and "inputs" not in bad


def test_the_guided_filter_gets_the_grey_photo_at_full_size(tmp_path):
    (photo,) = write_photos(tmp_path, [(40, 60)])
    refine = {"guided": True, "radius": 1, "eps": 1e-3}
    item = PredictionSet([photo], predictor(refine=refine))[0]
    assert tuple(item["guide"].shape) == (40, 60)


def test_a_batch_stacks_the_readable_items_and_lists_the_others(tmp_path):
    paths = write_photos(tmp_path, [(40, 60), (50, 70)])
    broken = tmp_path / "empty.png"
    broken.write_bytes(b"")
    items = PredictionSet([paths[0], broken, paths[1]], predictor())
    batch = collate([items[0], items[1], items[2]])
    assert batch["names"] == ["photo0.png", "photo1.png"]
    assert batch["sizes"] == [(40, 60), (50, 70)]
    assert tuple(batch["inputs"]["32x48"].shape) == (2, 3, 32, 48)
    assert [name for name, _ in batch["failed"]] == ["empty.png"]
    only_bad = collate([items[1]])
    assert only_bad["inputs"] is None and only_bad["names"] == [] and len(only_bad["failed"]) == 1


def test_the_loop_gives_each_image_the_predictors_masks_once(tmp_path):
    """Two ways to the same masks: the loop (loader, collate, predict_step on the device) and the
    predictor called directly on the decoded photos."""
    sizes = [(40, 60), (50, 70), (40, 60), (33, 47), (64, 96)]
    paths = write_photos(tmp_path, sizes)
    pred = predictor(sizes=[(32, 48), (16, 24)], tta=True)  # an ensemble of two sizes, mirrored
    module = InferenceModule(pred, threshold=0.5, postprocess=NO_POSTPROCESS, probabilities=True)
    batches = run(PredictionSet(paths, pred), module)
    names = [n for b in batches for n in b["names"]]
    assert sorted(names) == sorted(p.name for p in paths) and len(names) == len(set(names))
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    expected = dict(zip((p.name for p in paths), pred.probabilities(photos), strict=True))
    for batch in batches:
        assert batch["dice"] == [] and batch["failed"] == []
        for name, mask, probs, size in zip(
            batch["names"], batch["masks"], batch["probabilities"], batch["sizes"], strict=True
        ):
            assert mask.shape == size == expected[name].shape  # at each photo's own size
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
            np.testing.assert_array_equal(mask, (expected[name] > 0.5).astype(np.uint8))
            assert np.abs(probs / 255.0 - expected[name]).max() <= 0.5 / 255 + 1e-6
            assert 0 < mask.mean() < 1  # (the stand-in answers car and background)


def test_a_batch_of_unreadable_inputs_passes_through_without_masks(tmp_path):
    broken = tmp_path / "a.png"
    broken.write_bytes(b"\x89PNG\r\n")
    pred = predictor()
    (batch,) = run(PredictionSet([broken], pred), InferenceModule(pred, 0.5, NO_POSTPROCESS))
    assert batch["masks"] == [] and batch["names"] == [] and batch["failed"][0][0] == "a.png"


def test_scoring_gives_each_image_the_dice_of_its_mask_and_its_sizes_ceiling(tiny_set):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:5])
    pred = predictor(sizes=[(32, 48)])
    module = InferenceModule(pred, threshold=0.5, postprocess=NO_POSTPROCESS)
    scoring = ScoringSet(dataset, pred, ceiling_size=(32, 48), threshold=0.5)
    batches = run(scoring, module)
    scored = {}
    for batch in batches:
        for name, mask, dice, ceiling in zip(
            batch["names"], batch["masks"], batch["dice"], batch["ceiling"], strict=True
        ):
            scored[name] = (mask, dice, ceiling)
    assert sorted(scored) == sorted(dataset.ids)
    for image_id, (mask, dice, ceiling) in scored.items():
        truth = dataset.load_mask(image_id)
        expected = dice_per_image(torch.from_numpy(mask)[None], torch.from_numpy(truth)[None])
        assert dice == pytest.approx(float(expected[0]))
        assert ceiling == pytest.approx(size_ceiling_dice(truth, (32, 48), 0.5))
        assert 0.0 <= dice < ceiling <= 1.0  # a brightness rule is no car model


def test_postprocessing_applies_to_the_masks_the_loop_returns(tmp_path):
    paths = write_photos(tmp_path, [(40, 60)])
    pred = predictor()
    plain = run(PredictionSet(paths, pred), InferenceModule(pred, 0.5, NO_POSTPROCESS))
    largest = PostProcess(largest_component=True, fill_holes=False)
    kept = run(PredictionSet(paths, pred), InferenceModule(pred, 0.5, largest))
    before, after = plain[0]["masks"][0], kept[0]["masks"][0]
    np.testing.assert_array_equal(after, largest(before))
    assert after.sum() < before.sum()  # random pixels make many components: one is kept


def test_the_model_size_is_the_one_given_else_the_recorded_one(tmp_path):
    def trained(size):
        return TrainedModel(Brightness(), size, 0.5, None, tmp_path / "m.ckpt", None)

    assert model_size(trained((64, 96)), None) == (64, 96)
    assert model_size(trained((64, 96)), [32, 48]) == (32, 48)
    with pytest.raises(ConfigError, match=r"size=\[height,width\]"):
        model_size(trained(None), None)
    with pytest.raises(ConfigError, match="size"):
        model_size(trained((64, 96)), [0, 48])


def test_postprocess_must_be_the_group_of_switches():
    from omegaconf import OmegaConf

    switches = {"largest_component": True, "fill_holes": False}
    chosen = postprocess_of(OmegaConf.create({"postprocess": switches}))
    assert chosen == PostProcess(largest_component=True, fill_holes=False)
    with pytest.raises(ConfigError, match="postprocess is a group of switches"):
        postprocess_of(OmegaConf.create({"postprocess": None}))


def test_a_threshold_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match="threshold"):
        InferenceModule(predictor(), threshold=1.5, postprocess=NO_POSTPROCESS)


def test_the_predictor_takes_the_models_own_refine_unless_told(tmp_path, monkeypatch):
    """eval, predict and serve build their predictor here: refine left null is what the
    checkpoint's recipe recorded, and the command's refine.guided=false turns it off."""
    import carseg.inference.loop as loop
    from support.configs import compose

    recorded = {"guided": True, "radius": 2, "eps": 1e-3}
    for own, overrides, expected in (
        (recorded, (), recorded),
        (None, (), None),
        (recorded, ("refine.guided=false",), None),
        (None, ("refine.guided=true", "refine.radius=1"), {**recorded, "radius": 1}),
    ):
        model = TrainedModel(Brightness(), (32, 48), 0.5, None, tmp_path / "m.ckpt", own)
        monkeypatch.setattr(loop, "load_models", lambda *_, m=model: [m])
        cfg = compose("ckpt_path=m.ckpt", *overrides, config="eval")
        predictor, _, _ = loop.build_predictor(cfg)
        assert predictor.refine.record() == expected
