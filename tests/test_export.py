"""Export contract: the ONNX and TorchScript files compute what the eager model computes, at any
size, and the ONNX file carries what prediction needs."""

from __future__ import annotations

import pytest
import torch

from carseg.inference.export import export, load_torchscript, parity
from carseg.inference.loading import OnnxNet, load_onnx, onnx_metadata
from carseg.training.checkpoint_reader import CheckpointRecord
from carseg.utils.errors import DataError
from support.configs import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    module = build_model(base_width=4, depth=2, bilinear=False).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return module


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_matches_eager_at_any_size(model, tmp_path, fmt):
    record = CheckpointRecord(dict(model.hparams), (32, 48), 0.4, None, None)
    path, reported = export(model, record, tmp_path / f"m.{fmt}", fmt)
    exported = OnnxNet(path) if fmt == "onnx" else load_torchscript(path)
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in [(1, 32, 48), (3, 37, 53), (2, 64, 20)]:
        images = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected, got = model(images), exported(images)
        assert got.shape == expected.shape == (batch, 1, height, width)
        assert (got - expected).abs().max() < 1e-4
    assert reported < 1e-4  # and the parity export() prints is that same figure's kind
    if fmt == "onnx":
        meta = onnx_metadata(path)
        assert meta["size"] == [32, 48] and meta["threshold"] == 0.4
        assert meta["model"]["net"]["base_width"] == 4
        loaded = load_onnx(path)
        assert loaded.size == (32, 48) and loaded.threshold == 0.4


def test_an_exported_model_with_other_weights_is_caught(model, tmp_path):
    """The parity check is not vacuous: a model that differs from the eager one is reported."""
    record = CheckpointRecord(dict(model.hparams), (32, 48), 0.5, None, None)
    path, _ = export(model, record, tmp_path / "m.onnx", "onnx")
    other = build_model(base_width=4, depth=2, bilinear=False).eval()
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert (OnnxNet(path)(images) - other(images)).abs().max() > 1e-3


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_parity_with_non_finite_logits_is_refused_not_reported_as_0(model, value):
    class Broken(torch.nn.Module):
        def forward(self, images):
            return torch.full_like(images[:, :1], value)

    with pytest.raises(DataError, match="logits hold NaN or infinity"):
        parity(Broken(), Broken(), [(32, 48)])
    with pytest.raises(DataError, match="exported model's logits"):
        parity(model.net, Broken(), [(32, 48)])


@pytest.mark.parametrize(
    ("depth", "size", "traced"), [(2, (30, 45), (32, 48)), (4, None, (320, 480))]
)
def test_onnx_traces_at_the_size_the_net_pads_to_with_sides_up_to_max_side(
    monkeypatch, tmp_path, depth, size, traced
):
    """The example is the training size padded to the net's own multiple (4 for depth 2: 32x48,
    where a fixed 32 gave 32x64), and the dynamic sides go up to what the frame takes."""
    from carseg.utils.checks import MAX_SIDE

    seen = {}

    class TracedError(Exception):
        pass

    def fake_export(net, args, *, dynamic_shapes, **options):
        seen["size"] = tuple(args[0].shape[-2:])
        seen["dims"] = {axis: (dim.min, dim.max) for axis, dim in dynamic_shapes[0].items()}
        raise TracedError

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    net = build_model(base_width=2, depth=depth, bilinear=True)
    record = CheckpointRecord(dict(net.hparams), size, 0.5, None, None)
    with pytest.raises(TracedError):
        export(net, record, tmp_path / "m.onnx", "onnx")
    assert seen["size"] == traced
    assert seen["dims"] == {0: (1, 1024), 2: (8, MAX_SIDE), 3: (8, MAX_SIDE)}
