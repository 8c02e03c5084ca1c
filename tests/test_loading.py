"""carseg.inference.loading: a checkpoint or an ONNX file as a model for inference, refusing
files that are missing, foreign or booby-trapped."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from carseg.inference.loading import load_model, load_models
from carseg.inference.loop import model_size
from carseg.models.registry import trusting
from carseg.utils.errors import ConfigError, DataError, DataNotFoundError
from support.configs import build_model

FIXTURES = Path(__file__).parent / "fixtures"


def _save_checkpoint(module, path, size=None):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    if size is not None:  # what a fit on a data module of that size records
        raw = torch.load(path, weights_only=True)
        raw["carseg"]["size"] = list(size)
        torch.save(raw, path)
    return path


def test_a_checkpoint_rebuilds_its_model_and_records_its_training_size(tmp_path):
    module = build_model(base_width=4, depth=2, threshold=0.4)
    path = _save_checkpoint(module, tmp_path / "m.ckpt", size=(48, 64))
    model, record = load_model(path)
    assert record.size == (48, 64) and record.threshold == 0.4 and not model.training
    assert record.model["net"] == module.hparams.net and record.model["net"]["base_width"] == 4
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():  # (loaded channels_last where that is faster: the same up to rounding)
        assert torch.allclose(model(x), module.eval()(x), atol=1e-5)


def test_a_checkpoint_written_before_the_record_still_loads_and_predicts_as_it_did():
    """A checkpoint of carseg 7cf3056 (flat U-Net hyperparameters, the size and split where
    Lightning kept them): the same logits that commit's code computed for the same input."""
    model, record = load_model(FIXTURES / "checkpoint_7cf3056.ckpt")
    expected = json.loads((FIXTURES / "checkpoint_7cf3056.json").read_text())
    assert record.size == tuple(expected["size"]) and record.threshold == expected["threshold"]
    assert record.split.val_cars == expected["val_cars"]
    assert record.split.train_cars == expected["train_cars"]
    assert record.model["net"]["base_width"] == expected["hparams"]["base_width"]
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x).numpy()
    assert np.allclose(logits, np.load(FIXTURES / "checkpoint_7cf3056_logits.npy"), atol=1e-5)


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_checkpoint_with_pickled_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": _Payload()}, path)
    with pytest.raises(DataError, match="refused: it holds Python objects"):
        load_model(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "target", ["os.system", "subprocess.Popen", "builtins.exec", "torch.optim.Adam"]
)
def test_a_checkpoint_naming_another_class_is_refused_and_nothing_is_imported(tmp_path, target):
    """A crafted record whose network names any callable: refused by name, never built."""
    module = build_model(base_width=2, depth=1)
    path = _save_checkpoint(module, tmp_path / "crafted.ckpt")
    raw = torch.load(path, weights_only=True)
    raw["carseg"]["model"]["net"] = {"_target_": target, "command": "touch PWNED"}
    torch.save(raw, path)
    with pytest.raises(ConfigError, match=f"_target_ '{target}' is not one carseg builds"):
        load_model(path)
    assert not Path("PWNED").exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_text("hello")
    with pytest.raises(DataError, match="not a PyTorch checkpoint"):
        load_model(tmp_path / "x.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "y.ckpt")
    with pytest.raises(DataError, match="not a carseg training checkpoint"):
        load_model(tmp_path / "y.ckpt")
    with pytest.raises(DataNotFoundError, match="Checkpoint not found"):
        load_model(tmp_path / "missing.ckpt")


def test_a_command_names_one_kind_of_model(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path=<checkpoint> or onnx_path"):
        load_models(None, None)
    with pytest.raises(ConfigError, match="ckpt_path=<checkpoint> or onnx_path"):
        load_models("a.ckpt", "a.onnx")
    with pytest.raises(ConfigError, match="a file or a list of files"):
        load_models([1, 2], None)
    with pytest.raises(ConfigError, match="lists ./a.ckpt twice \\(a.ckpt\\)"):
        load_models(["a.ckpt", "./a.ckpt"], None)  # the same file, however it is written


def test_the_size_fed_is_the_recorded_one_or_the_one_given(tmp_path):
    module = build_model(base_width=2, depth=1)
    recorded = load_models(str(_save_checkpoint(module, tmp_path / "a.ckpt", (32, 48))), None)[0]
    assert model_size(recorded, None) == (32, 48)
    assert model_size(recorded, [64, 96]) == (64, 96)
    unrecorded = load_models(str(_save_checkpoint(module, tmp_path / "b.ckpt")), None)[0]
    with pytest.raises(ConfigError, match=r"give it as size=\[height,width\]"):
        model_size(unrecorded, None)


@pytest.mark.parametrize("node", ["loss", "optimizer", "scheduler"])
def test_inference_builds_the_network_alone_whatever_the_other_nodes_name(tmp_path, node):
    """A crafted checkpoint whose loss, optimiser or schedule names a function: inference builds
    none of them, and the command cannot be told to trust the function either."""
    module = build_model(base_width=2, depth=1)
    path = _save_checkpoint(module, tmp_path / "crafted.ckpt")
    raw = torch.load(path, weights_only=True)
    marker = tmp_path / "PWNED"
    raw["carseg"]["model"][node] = {"_target_": "os.system", "command": f"touch {marker}"}
    torch.save(raw, path)
    model, _ = load_model(path)
    assert model.criterion is None and not marker.exists()
    with pytest.raises(ConfigError, match="is a function, not a class"), trusting("os.system"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_holding_nan_or_inf_weights_is_refused(tmp_path, value):
    module = build_model(base_width=2, depth=1)
    path = _save_checkpoint(module, tmp_path / "m.ckpt")
    raw = torch.load(path, weights_only=True)
    key = next(k for k in raw["state_dict"] if k.endswith("weight"))
    raw["state_dict"][key].view(-1)[0] = value
    torch.save(raw, path)
    with pytest.raises(DataError, match=f"NaN or infinite weights \\({re.escape(key)}\\)"):
        load_model(path)
