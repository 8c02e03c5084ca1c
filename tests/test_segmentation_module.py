"""carseg.training.segmentation_module: the LightningModule learns, rebuilds from its checkpoint,
refuses bad options, and its speed switches (channels_last, compile, fused Adam) change nothing
but speed."""

from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import inference_transforms
from carseg.inference.loading import load_model
from carseg.training.callbacks.record import CheckpointRecorder
from carseg.training.segmentation_module import (
    CPU_CHANNELS_LAST,
    SegmentationModule,
    channels_last_on,
)
from carseg.utils.errors import ConfigError
from support.configs import build_model
from support.lightning import quiet_trainer


def _batch(n: int = 2, size: tuple[int, int] = (37, 53)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, *size, generator=generator)
    masks = (torch.rand(n, 1, *size, generator=generator) > 0.6).float()
    return images, masks


def _loss_and_grads(module, images, masks):
    module.zero_grad()
    logits = module(images)
    loss = module.criterion(logits, masks)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}


def test_channels_last_gives_the_plain_logits_loss_and_gradients():
    torch.manual_seed(0)
    plain = build_model(base_width=4, depth=2, channels_last=False, loss="bce_dice").place_on("cpu")
    fast = build_model(base_width=4, depth=2, channels_last=True, loss="bce_dice").place_on("cpu")
    fast.load_state_dict(plain.state_dict())
    conv = fast.net.inc.block[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images, masks = _batch()
    a, b = _loss_and_grads(plain, images, masks), _loss_and_grads(fast, images, masks)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-6)
    for name in a[2]:
        assert torch.allclose(a[2][name], b[2][name], atol=1e-4, rtol=1e-4), name


def test_auto_means_nhwc_on_cuda_and_what_the_bench_measured_on_the_cpu():
    assert channels_last_on("auto", torch.device("cuda")) is True
    assert channels_last_on("auto", torch.device("cpu")) is CPU_CHANNELS_LAST
    assert channels_last_on(False, torch.device("cuda")) is False
    assert channels_last_on(True, torch.device("cpu")) is True


def test_fused_adam_on_cuda_and_the_default_elsewhere(monkeypatch):
    made = []

    class Spy(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            made.append(kwargs)
            super().__init__(params, **{k: v for k, v in kwargs.items() if k != "fused"})

    monkeypatch.setattr(torch.optim, "Adam", Spy)
    module = build_model(base_width=2, depth=1)
    module.trainer = pl.Trainer(max_epochs=1, logger=False)
    module.configure_optimizers()
    module._device = torch.device("cuda", 0)  # what Lightning sets after moving the model there
    module.configure_optimizers()
    assert "fused" not in made[-2] and made[-1]["fused"] is True


def _fit(module, tmp_path, epochs: int = 2) -> pl.Trainer:
    images, masks = _batch(n=4, size=(32, 48))
    loader = DataLoader(TensorDataset(images, masks), batch_size=2)
    recorder = CheckpointRecorder(refine=None)
    trainer = quiet_trainer(epochs, default_root_dir=tmp_path, callbacks=[recorder])
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return trainer


@pytest.mark.slow
def test_compile_trains_the_step_the_plain_model_trains(tmp_path):
    """SegmentationModule's own compile path (setup, forward, a real optimiser step): the weights
    after two steps equal the plain module's, and the compiled forward was the one used."""
    torch.manual_seed(0)
    plain = build_model(base_width=2, depth=1, channels_last=False, compile=False)
    fast = build_model(base_width=2, depth=1, channels_last=False, compile=True)
    fast.load_state_dict(plain.state_dict())
    for module in (plain, fast):
        _fit(module, tmp_path, epochs=1)
    assert fast._compiled is not None  # it ran compiled, it did not fall back
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name


def test_a_compile_that_fails_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch, caplog):
    def broken_compile(net, **kwargs):
        def run(images):
            raise RuntimeError("inductor: no C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = build_model(base_width=2, depth=1, compile=True)
    with caplog.at_level(logging.WARNING):
        trainer = _fit(module, tmp_path)
    assert trainer.global_step == 4 and module._compiled is None
    assert "torch.compile failed" in caplog.text and "no C++ compiler" in caplog.text


@pytest.mark.parametrize("compile_", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_checkpoint_trained_with_the_switches_predicts_without_them(tmp_path, compile_):
    torch.manual_seed(0)
    module = build_model(base_width=2, depth=1, channels_last=True, compile=compile_)
    trainer = _fit(module, tmp_path)
    path = tmp_path / "fast.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert all(t.is_contiguous() for t in raw["state_dict"].values())  # plain NCHW weights
    assert not any("_orig_mod" in k or "_compiled" in k for k in raw["state_dict"])
    raw["carseg"]["model"].update(channels_last=False, compile=False)
    torch.save(raw, path)
    plain, _ = load_model(path)
    images, _ = _batch(size=(32, 48))
    module.eval()
    with torch.no_grad():
        assert torch.allclose(plain(images), module(images), atol=1e-5)


def _dataset_batch(tiny_set, n=8, size=(48, 64)):
    ds = CarvanaDataset(
        tiny_set, transform=inference_transforms(size, resize=True), image_dir="train"
    )
    items = [ds[i] for i in range(0, 16 * 5, 10)][:n]
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])


@pytest.mark.parametrize("loss", ["bce", "bce_logdice"])
def test_overfits_a_tiny_batch(tiny_set, loss):
    """Lightning fits one batch for 60 steps: the loss falls, thresholded Dice rises well above."""
    pl.seed_everything(0)
    images, masks = _dataset_batch(tiny_set)
    module = build_model(base_width=8, depth=3, loss=loss, lr=3e-3)

    def evaluate() -> tuple[float, float]:
        module.eval()
        with torch.no_grad():
            logits = module(images)
            module.val_dice.reset()
            module.val_dice.update((torch.sigmoid(logits) > 0.5).long(), masks.long())
            scores = module.criterion(logits, masks).item(), module.val_dice.compute().item()
        module.train()
        return scores

    start_loss, start_dice = evaluate()
    trainer = pl.Trainer(
        max_epochs=60,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(images, masks), batch_size=8))
    end_loss, end_dice = evaluate()
    assert end_loss < 0.5 * start_loss
    assert end_dice > 0.85 and end_dice > start_dice + 0.2


def test_checkpoint_alone_rebuilds_the_model(tiny_set, tmp_path):
    """Hyperparameters are plain values: weights_only loading works and predictions match."""
    module = build_model(base_width=4, depth=2, bilinear=False, loss="bce_dice", dice_weight=0.3)
    trainer = pl.Trainer(
        max_epochs=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.strategy.connect(module)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["net"]["base_width"] == 4
    loaded = SegmentationModule.load_from_checkpoint(path, map_location="cpu")
    assert loaded.hparams.loss == {"_target_": "carseg.models.losses.BCEDice", "dice_weight": 0.3}
    assert loaded.hparams.net["bilinear"] is False
    images, _ = _dataset_batch(tiny_set, n=2)
    module.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(module(images), loaded(images))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheduler": "step"}, "scheduler"),
        ({"threshold": 1.5}, "threshold"),
        ({"loss": "dice"}, "loss"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    options = {**build_model(base_width=2, depth=1).hparams, **kwargs}
    with pytest.raises(ConfigError, match=message):
        SegmentationModule(**options)
