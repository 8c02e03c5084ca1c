"""carseg.training.optim: the optimiser and the learning-rate schedules from their config nodes,
checked epoch by epoch in real fits."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import inference_transforms
from support.configs import build_model
from support.lightning import quiet_trainer


def _dataset_batch(tiny_set, n=8, size=(48, 64)):
    ds = CarvanaDataset(
        tiny_set, transform=inference_transforms(size, resize=True), image_dir="train"
    )
    items = [ds[i] for i in range(0, 16 * 5, 10)][:n]
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])


def _rates_by_epoch(tiny_set, scheduler: str, epochs: int, **options) -> list[float]:
    """The learning rate Lightning's trainer applied in each epoch of a real fit."""
    rates: list[float] = []

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    images, masks = _dataset_batch(tiny_set, n=4, size=(16, 24))
    loader = DataLoader(TensorDataset(images, masks), batch_size=4)
    module = build_model(base_width=2, depth=1, lr=1e-3, scheduler=scheduler, **options)
    trainer = quiet_trainer(epochs, callbacks=[Record()], enable_checkpointing=False)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return rates


def test_cosine_schedule_lowers_the_rate_to_zero_over_the_run(tiny_set):
    rates = _rates_by_epoch(tiny_set, "cosine", epochs=4)
    expected = [1e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-6)  # 1e-3, 8.5e-4, 5e-4, 1.5e-4


def test_plateau_schedule_halves_the_rate_when_val_dice_stalls(tiny_set):
    """A run whose val/dice cannot move (threshold 0.99 on an untrained net: all background,
    Dice 0 every epoch) has its rate halved after 3 epochs without improvement (patience 2)."""
    rates = _rates_by_epoch(tiny_set, "plateau", epochs=7, threshold=0.99)
    assert rates[:4] == pytest.approx([1e-3] * 4)
    assert rates[4:] == pytest.approx([5e-4, 5e-4, 5e-4])


def test_no_schedule_keeps_the_rate(tiny_set):
    assert _rates_by_epoch(tiny_set, "none", epochs=3) == pytest.approx([1e-3] * 3)
