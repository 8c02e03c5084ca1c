"""carseg.training.best: a run's best score and its epoch, from the checkpoint callback that
monitors the metric (which also knows the epochs before a resume) or from what this fit saw."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from carseg.training.best import BestTracker, best_of, tracker_of
from carseg.training.callbacks import HyperparameterLogger, RunSummary
from carseg.utils.errors import ConfigError


def _trainer(epoch: int, value: float | None, callbacks=(), step: int | None = None):
    metrics = {} if value is None else {"val/dice": torch.tensor(value)}
    return SimpleNamespace(
        callback_metrics=metrics,
        current_epoch=epoch,
        global_step=10 * epoch if step is None else step,
        checkpoint_callbacks=list(callbacks),
        checkpoint_callback=next(iter(callbacks), None),
    )


@pytest.mark.parametrize(
    ("mode", "values", "best", "epoch"),
    [("max", [0.2, 0.7, 0.5], 0.7, 1), ("min", [0.9, 0.4, 0.6], 0.4, 1)],
)
def test_the_tracker_keeps_the_best_value_and_its_epoch(mode, values, best, epoch):
    tracker = BestTracker("val/dice", mode)
    improved = [tracker.update(_trainer(e, v)) for e, v in enumerate(values)]
    assert (tracker.best, tracker.best_epoch) == (pytest.approx(best), epoch)
    assert tracker.best_step == 10 * epoch
    assert improved == [True, True, False]


def test_a_validation_is_counted_once_however_many_callbacks_read_it():
    tracker = BestTracker("val/dice", "max")
    assert tracker.update(_trainer(0, 0.5))
    assert not tracker.update(_trainer(0, 0.5))  # the same validation, read by another hook
    assert tracker.update(_trainer(0, 0.6, step=5))  # a second validation in epoch 0
    assert (tracker.best, tracker.best_epoch, tracker.best_step) == (pytest.approx(0.6), 0, 5)
    tracker.reset()
    assert tracker.update(_trainer(0, 0.5)) and tracker.best == pytest.approx(0.5)


def test_the_reporting_callbacks_read_the_runs_one_tracker(tmp_path):
    """summary.json and HPARAMS report the tracker the run holds (``training.train`` adds it);
    a Trainer without one gets a tracker of their own."""
    run = BestTracker("val/dice", "max")
    other = BestTracker("val/loss", "min")
    trainer = SimpleNamespace(callbacks=[other, run], fast_dev_run=True)
    assert tracker_of(trainer, "val/dice", "max") is run
    assert tracker_of(trainer, "val/loss", "min") is other
    own = tracker_of(trainer, "val/dice", "min")
    assert own not in (run, other) and (own.monitor, own.mode) == ("val/dice", "min")
    summary = RunSummary(output_dir=tmp_path, monitor="val/dice", mode="max")
    hparams = HyperparameterLogger(monitor="val/dice", mode="max", exclude=[])
    for callback in (summary, hparams):
        callback.on_fit_start(trainer, None)
        assert callback.tracker is run
    bare = SimpleNamespace(callbacks=[], fast_dev_run=True)
    summary.on_fit_start(bare, None)
    assert summary.tracker is not run and summary.tracker.monitor == "val/dice"


def test_nan_and_missing_values_are_not_a_best():
    tracker = BestTracker("val/dice", "max")
    assert not tracker.update(_trainer(0, float("nan")))
    assert not tracker.update(_trainer(1, None))
    assert tracker.best is None and tracker.best_epoch is None


def test_an_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="mode='largest'"):
        BestTracker("val/dice", "largest")


def test_the_checkpoint_callback_knows_the_best_before_a_resume(tmp_path):
    """A resumed run saw only its own epochs; its monitoring checkpoint callback kept the best of
    the whole run, whose epoch and step are read from the best checkpoint."""
    best_path = tmp_path / "epoch_003-step_000120-dice_0.9100.ckpt"
    torch.save({"epoch": 3, "global_step": 120}, best_path)
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val/dice", mode="max")
    callback.best_model_path, callback.best_model_score = str(best_path), torch.tensor(0.91)
    tracker = BestTracker("val/dice", "max")
    tracker.update(_trainer(5, 0.80))  # the only epoch this process validated
    best = best_of(_trainer(5, 0.80, [callback]), tracker)
    assert (best.score, best.epoch, best.step) == (pytest.approx(0.91), 3, 120)
    assert best.checkpoint == str(best_path.resolve())
    without = best_of(_trainer(5, 0.80), tracker)  # no checkpoint callback: what this fit saw
    assert (without.score, without.epoch, without.checkpoint) == (pytest.approx(0.80), 5, None)
