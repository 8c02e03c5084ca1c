"""carseg.training.optim: the optimiser and the learning-rate schedules from their config nodes,
checked epoch by epoch in real fits."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from torch.utils.data import DataLoader, TensorDataset

from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import inference_transforms
from carseg.training.optim import training_progress
from support.configs import build_model
from support.lightning import quiet_trainer


def _dataset_batch(tiny_set, n=8, size=(48, 64)):
    ds = CarvanaDataset(
        tiny_set, transform=inference_transforms(size, resize=True), image_dir="train"
    )
    items = [ds[i] for i in range(0, 16 * 5, 10)][:n]
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])


def _rates_by_epoch(tiny_set, scheduler: str, epochs: int, trainer_options=None, **options):
    """The learning rate Lightning's trainer applied in each epoch of a real fit."""
    rates: list[float] = []

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    images, masks = _dataset_batch(tiny_set, n=4, size=(16, 24))
    loader = DataLoader(TensorDataset(images, masks), batch_size=4)
    module = build_model(base_width=2, depth=1, lr=1e-3, scheduler=scheduler, **options)
    trainer = quiet_trainer(
        epochs, callbacks=[Record()], enable_checkpointing=False, **(trainer_options or {})
    )
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


def test_warmup_cosine_rises_over_its_warmup_then_falls_to_its_floor(tiny_set):
    """conf/model/scheduler/warmup_cosine.yaml (warm-up 5% from 1% of the rate, cosine down to 1%
    of it), one step an epoch for 20 epochs: the rate at each epoch's start, from its formula."""
    rates = _rates_by_epoch(tiny_set, "warmup_cosine", epochs=20)

    def factor(share):  # written out again here, not taken from the class under test
        if share < 0.05:
            return 0.01 + 0.99 * share / 0.05
        return 0.01 + 0.99 * (1 + math.cos(math.pi * (share - 0.05) / 0.95)) / 2

    assert rates == pytest.approx([1e-3 * factor(e / 20) for e in range(20)], rel=1e-6)
    # 1% of the rate at the start, all of it once warmed up (epoch 1 = 5%), falling from there
    assert rates[0] == pytest.approx(1e-5) and rates[1] == pytest.approx(1e-3) == max(rates)


def test_progress_is_the_larger_of_the_steps_and_the_time_budget_spent(monkeypatch):
    timer = Timer(duration="00:00:10:00")  # trainer.max_time=00:00:10:00
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 150.0)
    run = SimpleNamespace(estimated_stepping_batches=float("inf"), global_step=7, callbacks=[timer])
    assert training_progress(run) == pytest.approx(0.25)  # no step limit: 150 of 600 s
    run.estimated_stepping_batches = 20
    assert training_progress(run) == pytest.approx(0.35)  # 7 of 20 steps is further on
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 900.0)
    assert training_progress(run) == 1.0  # past the budget: the schedule's end, not beyond
    unlimited = SimpleNamespace(
        estimated_stepping_batches=float("inf"), global_step=3, callbacks=[]
    )
    assert training_progress(unlimited) == 0.0


def test_a_time_budget_alone_anneals_the_rate_to_its_end(tiny_set):
    """trainer.max_time with max_epochs=-1 (carvana_cpu's way): the cosine follows the clock, so
    the epochs' rates fall and the last ones are near the floor, however many epochs fit."""
    rates = _rates_by_epoch(
        tiny_set, "cosine", epochs=-1, trainer_options={"max_time": "00:00:00:03"}
    )
    assert len(rates) >= 4
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:], strict=False))
    assert rates[0] == pytest.approx(1e-3, rel=0.05) and rates[-1] < 0.5e-3
