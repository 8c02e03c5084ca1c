"""carseg.inference.loading: a checkpoint or an ONNX file as a model for inference, refusing
files that are missing, foreign or booby-trapped."""

import json
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from carseg.data.split import SplitRecord
from carseg.inference.loading import load_model, load_models, onnx_record
from carseg.inference.loop import model_size
from carseg.models.registry import trusting
from carseg.training.callbacks.record import CheckpointRecorder
from carseg.training.checkpoint_reader import CheckpointRecord
from carseg.utils.errors import ConfigError, DataError, DataNotFoundError
from support.configs import build_model


def _save_checkpoint(module, path, size=None, recorder=True):
    """``module`` saved as a training run saves it (with carseg's record), or without the
    recorder as a Trainer of one's own would."""
    trainer = pl.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[CheckpointRecorder(refine=None)] if recorder else [],
    )
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


def test_a_checkpoint_saved_without_the_recorder_loads_its_model_without_size_or_split(tmp_path):
    """Lightning's own hyper_parameters rebuild the model (a Trainer of one's own, or
    save_checkpoint(weights_only=True), which leaves callbacks out); no size nor split."""
    module = build_model(base_width=4, depth=2, threshold=0.3)
    path = _save_checkpoint(module, tmp_path / "m.ckpt", recorder=False)
    assert "carseg" not in torch.load(path, weights_only=True)
    model, record = load_model(path)
    assert record.model["net"] == module.hparams.net and record.threshold == 0.3
    assert record.size is None and record.split is None
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), module.eval()(x), atol=1e-5)


def test_a_checkpoint_of_flat_hyperparameters_is_refused_naming_what_it_lacks(tmp_path):
    """Flat U-Net hyperparameters (no net node, no carseg record): not this version's model."""
    module = build_model(base_width=2, depth=1)
    path = tmp_path / "flat.ckpt"
    flat = {"in_channels": 3, "base_width": 2, "depth": 1, "lr": 1e-4, "threshold": 0.5}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": flat}, path)
    with pytest.raises(DataError, match="does not fit this version's .* no 'net' in its hyper"):
        load_model(path)


def test_a_damaged_record_is_refused_naming_the_file(tmp_path):
    path = _save_checkpoint(build_model(base_width=2, depth=1), tmp_path / "m.ckpt")
    raw = torch.load(path, weights_only=True)
    raw["carseg"]["size"] = "large"
    torch.save(raw, path)
    with pytest.raises(DataError, match=r"m.ckpt: its carseg record is damaged"):
        load_model(path)


def _onnx_file(path: Path, metadata: str | None) -> Path:
    """The smallest ONNX file (one Identity node) with ``metadata`` under carseg's key."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph)
    if metadata is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "carseg", metadata
    onnx.save(model, str(path))
    return path


def test_an_onnx_file_holds_the_checkpoints_record_read_the_same_way(tmp_path):
    """What export.py stores (the record's to_dict as JSON) reads back as the record itself."""
    module = build_model(base_width=2, depth=1, threshold=0.4)
    split = SplitRecord("/d", 0.5, 1, ["a"], ["b"], None, None)
    record = CheckpointRecord.of(module, (32, 48), split, None)
    path = _onnx_file(tmp_path / "m.onnx", json.dumps(record.to_dict()))
    assert onnx_record(path) == record
    _onnx_file(path, json.dumps({**record.to_dict(), "size": "large"}))
    with pytest.raises(DataError, match="m.onnx: its carseg record is damaged"):
        onnx_record(path)
    _onnx_file(path, None)
    with pytest.raises(ConfigError, match="has no carseg metadata: was it exported by"):
        onnx_record(path)


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


@pytest.mark.parametrize("where", ["carseg", "hyper_parameters"])
@pytest.mark.parametrize(
    "target", ["os.system", "subprocess.Popen", "builtins.exec", "torch.optim.Adam"]
)
def test_a_checkpoint_naming_another_class_is_refused_and_nothing_is_imported(
    tmp_path, target, where
):
    """A crafted record (or, without one, Lightning's hyper_parameters) whose network names any
    callable: refused by name, never built."""
    module = build_model(base_width=2, depth=1)
    path = _save_checkpoint(module, tmp_path / "crafted.ckpt", recorder=where == "carseg")
    raw = torch.load(path, weights_only=True)
    hparams = raw["carseg"]["model"] if where == "carseg" else raw["hyper_parameters"]
    hparams["net"] = {"_target_": target, "command": "touch PWNED"}
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
