"""Every network of conf/model/net/ keeps the contract the generic paths rely on: built from its
file through the LightningModule, logits of the input's size at an odd size, trained by
Lightning, the same logits again from its checkpoint, and exported to ONNX with parity."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from support.configs import compose, instantiate
from support.entry import REPO
from support.lightning import quiet_trainer

NETS = sorted(p.stem for p in (REPO / "conf" / "model" / "net").glob("*.yaml"))
ODD = (37, 53)  # not multiples of 32: exercises every net's padding
# The training size the checkpoint records: export() traces at it padded to the net's multiple
# (torch.export fails to trace a net's padding at a size it pads) and checks the parity at an odd
# size too.
TRAIN = (64, 96)


def _needs(name: str) -> list:
    """Marks for a net whose file needs an optional extra that does not import here."""
    if not name.startswith("timm"):
        return []
    try:
        importlib.import_module("timm")
    except Exception as err:  # not installed, or its torchvision does not fit this torch
        reason = f"model/net={name} needs timm, which does not import here ({type(err).__name__})"
        return [pytest.mark.skip(reason=reason)]
    return []


PARAMS = [pytest.param(name, marks=_needs(name), id=name) for name in NETS]


def build(name: str):
    """The SegmentationModule of ``model/net=<name>``, narrowed where the file has a width key
    (the depth and the encoder stay the file's)."""
    net = compose(f"model/net={name}").model.net
    small = [f"model.net.{key}=4" for key in ("base_width", "decoder_width") if key in net]
    torch.manual_seed(0)
    return instantiate(compose(f"model/net={name}", *small).model)


def test_every_file_is_covered():
    assert {"unet", "unet_paper", "unet_small", "resnet18_unet", "resnet34_unet"} <= set(NETS)
    assert "efficientnet_lite0_unet" in NETS
    assert "timm_unet" in NETS


@pytest.mark.parametrize("name", PARAMS)
def test_forward_train_checkpoint(name, tmp_path):
    from carseg.inference.loading import load_model

    model = build(name)
    images = torch.randn(2, 3, *ODD)
    with torch.no_grad():
        assert model.eval()(images).shape == (2, 1, *ODD)

    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(4, 3, *TRAIN, generator=generator),
        (torch.rand(4, 1, *TRAIN, generator=generator) > 0.5).float(),
    )
    model.train()  # (Lightning keeps the modes it is given)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Two steps: timm's ResNets start each block's last BatchNorm scale at zero, so the weights
    # behind it move from the second step on.
    trainer = quiet_trainer(1, max_steps=2, limit_val_batches=0, default_root_dir=tmp_path,
                            enable_checkpointing=False)  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=2))
    assert trainer.global_step == 2
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    loaded, record = load_model(path)
    assert record.model["net"] == dict(model.hparams.net)
    model.eval()
    with torch.no_grad():
        assert (loaded(images) - model(images)).abs().max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAMS)
def test_onnx_export_matches_eager(name, tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra")
    from carseg.inference.export import export
    from carseg.training.checkpoint_reader import CheckpointRecord

    model = build(name).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    record = CheckpointRecord(dict(model.hparams), TRAIN, 0.5, None, None)
    _, diff = export(model, record, tmp_path / "model.onnx", "onnx")
    assert diff < 1e-4


def test_a_checkpoint_started_from_imagenet_weights_loads_without_the_weights_file(tmp_path):
    from carseg.inference.loading import load_model
    from test_resnet_unet import weights_file

    path = tmp_path / "resnet18-f37072fd.pth"
    weights_file(path, 18)
    small = ["model.net.decoder_width=4", f"model.net.encoder_weights={path}"]
    model = instantiate(compose("model/net=resnet18_unet", *small).model)
    trainer = quiet_trainer(1, max_steps=1, limit_val_batches=0, default_root_dir=tmp_path,
                            enable_checkpointing=False)  # fmt: skip
    data = TensorDataset(torch.randn(2, 3, *TRAIN), torch.ones(2, 1, *TRAIN))
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=2))
    trainer.save_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    path.unlink()  # predicting on another machine, where only the checkpoint was copied
    loaded, _ = load_model(tmp_path / "model.ckpt")
    images = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model.eval()(images), atol=1e-5)
