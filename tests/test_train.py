"""carseg.training.train: a run built from its config and trained; a NaN loss stops it with the
last good checkpoint kept, and last.ckpt follows every epoch."""

from __future__ import annotations

import pytest
import torch

from carseg.training.train import train
from carseg.utils.errors import TrainingDivergedError
from helpers import compose_train


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = compose_train(tmp_path, "trainer.max_epochs=4")
    cfg.callbacks.poison = {"_target_": "helpers.poison_batch_callback", "epoch": 1, "batch": 1}
    with pytest.raises(TrainingDivergedError) as err:
        train(cfg)
    message = str(err.value)
    assert "became nan at epoch 1, batch 1" in message and "model.optimizer.lr" in message
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"last good checkpoint is kept: {last}" in message
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0  # from before the bad step
    assert all(
        torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point()
    )


def test_last_checkpoint_is_the_newest_epoch_even_when_dice_did_not_improve(tmp_path):
    """checkpoints/last.ckpt follows every epoch (Lightning 2.6's save_last would keep only the
    epochs that improved val/dice, and a resume would train the others again)."""
    # a threshold no untrained pixel reaches: val/dice stays 0, so epoch 0 stays the best
    cfg = compose_train(tmp_path, "trainer.max_epochs=3", "model.threshold=0.999")
    result = train(cfg)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert result.best_epoch == 0 and last["epoch"] == 2


def test_nan_in_an_accumulated_batch_names_that_batch(tmp_path):
    cfg = compose_train(tmp_path, "trainer.max_epochs=2", "+trainer.accumulate_grad_batches=2")
    cfg.callbacks.poison = {"_target_": "helpers.poison_batch_callback", "epoch": 0, "batch": 0}
    with pytest.raises(TrainingDivergedError, match="became nan at epoch 0, batch 0"):
        train(cfg)
