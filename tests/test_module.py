import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from carseg.data.dataset import CarvanaDataset
from carseg.data.transforms import inference_transforms
from carseg.training.segmentation_module import SegmentationModule
from carseg.utils.errors import ConfigError
from helpers import build_model, quiet_trainer


def _batch(tiny_set, n=8, size=(48, 64)):
    ds = CarvanaDataset(
        tiny_set, transform=inference_transforms(size, resize=True), image_dir="train"
    )
    items = [ds[i] for i in range(0, 16 * 5, 10)][:n]
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])


@pytest.mark.parametrize("loss", ["bce", "bce_logdice"])
def test_overfits_a_tiny_batch(tiny_set, loss):
    """Lightning fits one batch for 60 steps: the loss falls, thresholded Dice rises well above."""
    pl.seed_everything(0)
    images, masks = _batch(tiny_set)
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
    images, _ = _batch(tiny_set, n=2)
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


def _rates_by_epoch(tiny_set, scheduler: str, epochs: int, **options) -> list[float]:
    """The learning rate Lightning's trainer applied in each epoch of a real fit."""
    rates: list[float] = []

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    images, masks = _batch(tiny_set, n=4, size=(16, 24))
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
