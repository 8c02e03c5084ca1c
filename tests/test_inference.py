import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from carseg.training.checkpoint_io import load_model as load_checkpoint
from carseg.utils.errors import ConfigError, DataError, DataNotFoundError
from carseg.data.image_io import list_images
from carseg.inference.predictor import Predictor, input_size, torch_forward
from carseg.inference.predict_loop import check_output_dir
from helpers import build_model


def ramp_forward(images: torch.Tensor) -> torch.Tensor:
    """Logits rising from -1 to 3 across the width: zero at a quarter of the way."""
    batch, _, height, width = images.shape
    return torch.linspace(-1.0, 3.0, width).expand(batch, 1, height, width).clone()


def test_probabilities_are_upsampled_before_thresholding():
    """Bilinear probabilities at full size put the edge between the model's coarse pixels."""
    predictor = Predictor(ramp_forward, size=(4, 8))
    (prob,) = predictor.probabilities([np.zeros((10, 100, 3), dtype=np.uint8)])
    assert prob.shape == (10, 100)
    edge = int(np.argmax(prob[0] > 0.5))
    # zero crossing at x = 1.75 of 8 model pixels -> (1.75 + 0.5) / 8 * 100 = 28.1 image pixels;
    # thresholding first and then resizing would put it on a model-pixel boundary (25)
    assert edge == 29 or edge == 28


def test_each_image_keeps_its_own_size():
    predictor = Predictor(ramp_forward, size=(16, 24))
    images = [np.zeros((30, 50, 3), np.uint8), np.zeros((17, 23, 3), np.uint8)]
    assert [p.shape for p in predictor.probabilities(images)] == [(30, 50), (17, 23)]


def test_tta_averages_the_mirror_prediction():
    torch.manual_seed(0)
    model = build_model(base_width=4, depth=2).eval()
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    plain = Predictor(torch_forward(model), (16, 24)).probabilities([image])[0]
    mirrored = Predictor(torch_forward(model), (16, 24)).probabilities([image[:, ::-1].copy()])[0]
    tta = Predictor(torch_forward(model), (16, 24), tta=True).probabilities([image])[0]
    assert np.allclose(tta, (plain + mirrored[:, ::-1]) / 2, atol=1e-5)
    assert not np.allclose(tta, plain, atol=1e-4)


def _save_checkpoint(module, path, datamodule_hparams=None):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    if datamodule_hparams is not None:
        raw = torch.load(path, weights_only=True)
        raw["datamodule_hyper_parameters"] = datamodule_hparams
        torch.save(raw, path)
    return path


def test_load_checkpoint_rebuilds_model_and_reads_training_size(tmp_path):
    module = build_model(base_width=4, depth=2, threshold=0.4)
    path = _save_checkpoint(module, tmp_path / "m.ckpt", {"size": [48, 64]})
    model, info = load_checkpoint(path)
    assert info.size == (48, 64) and info.threshold == 0.4 and not model.training
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():  # (loaded channels_last where that is faster: the same up to rounding)
        assert torch.allclose(model(x), module.eval()(x), atol=1e-5)


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_checkpoint_with_pickled_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": _Payload()}, path)
    with pytest.raises(DataError, match="refused: it holds Python objects"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_text("hello")
    with pytest.raises(DataError):
        load_checkpoint(tmp_path / "x.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "y.ckpt")
    with pytest.raises(DataError, match="not a carseg training checkpoint"):
        load_checkpoint(tmp_path / "y.ckpt")
    with pytest.raises(DataNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_input_size_needs_a_recorded_or_given_size():
    assert input_size((32, 48), None) == (32, 48)
    assert input_size((32, 48), [64, 96]) == (64, 96)
    with pytest.raises(ConfigError, match=r"size=\[height,width\]"):
        input_size(None, None)


def test_output_dir_never_inside_input_and_never_over_earlier_predictions(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_output_dir(inputs / "out", inputs, overwrite=True)
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_output_dir(inputs, inputs, overwrite=True)
    out = tmp_path / "out"
    check_output_dir(out, inputs, overwrite=False)  # new folder: fine
    (out / "masks").mkdir(parents=True)
    with pytest.raises(ConfigError, match="overwrite=true"):
        check_output_dir(out, inputs, overwrite=False)
    check_output_dir(out, inputs, overwrite=True)


def test_list_images(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "a.PNG").write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="No images"):
        list_images(tmp_path / "empty")
