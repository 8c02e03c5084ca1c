"""carseg.training.callbacks.stop: whatever ends a run (a time budget or a step budget inside the
first epoch, SIGTERM, Ctrl-C, the last epoch with validation on a clock), it validates the weights
it has and saves them, the summary says what stopped it, and a resume goes on from there."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from carseg.training.callbacks.stop import StopCleanly
from carseg.training.train import train
from support.configs import compose_train

# 3 cars of 16 views, one of them held out: 32 training images, batch 2: 16 batches an epoch
SMALL_BATCHES = "data.batch_size=2"
EPOCH_BATCHES = 16


def _callback(cfg, name: str, target: str, **options) -> None:
    cfg.callbacks[name] = {"_target_": f"support.lightning.{target}", **options}


def _summary(tmp_path) -> dict:
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def _saved(path) -> dict:
    return torch.load(path, weights_only=True)


def test_a_time_budget_inside_the_first_epoch_ends_there_validated_and_saved(tmp_path):
    """trainer.max_time shorter than an epoch (254 cars on a slow CPU): the run stops at the
    budget, not at the epoch's end (no min_epochs keeps it going), and validates and saves."""
    cfg = compose_train(
        tmp_path, SMALL_BATCHES, "trainer.max_epochs=-1", "trainer.max_time=00:00:00:01"
    )
    _callback(cfg, "slow", "slow_batches", seconds=0.25)
    result = train(cfg)
    summary = _summary(tmp_path)
    assert summary["status"] == "completed" and summary["stopped_by"] == "max_time"
    assert 1 <= summary["global_step"] < EPOCH_BATCHES  # inside the first epoch
    assert summary["epochs_run"] == round(summary["global_step"] / EPOCH_BATCHES, 2)
    assert summary["validations"] == 1 and summary["best_step"] == summary["global_step"]
    last = _saved(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == summary["global_step"]
    assert (
        result.best_checkpoint
        and _saved(result.best_checkpoint)["global_step"] == (summary["global_step"])
    )
    assert result.stopped_by == "max_time"


def test_a_step_budget_inside_the_first_epoch_validates_and_saves(tmp_path):
    cfg = compose_train(tmp_path, SMALL_BATCHES, "trainer.max_epochs=3", "trainer.max_steps=5")
    result = train(cfg)
    summary = _summary(tmp_path)
    assert (summary["stopped_by"], summary["global_step"], summary["validations"]) == (
        "max_steps", 5, 1)  # fmt: skip
    assert result.best_checkpoint is not None and result.best_step == 5
    assert _saved(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 5


def test_validation_on_a_clock_still_validates_the_last_epoch(tmp_path):
    """trainer.val_check_interval as a time longer than the run: the only validation is the one
    the end of the last epoch asks for, and its weights are saved."""
    cfg = compose_train(tmp_path, "trainer.max_epochs=2", "trainer.val_check_interval=00:01:00:00")
    train(cfg)
    summary = _summary(tmp_path)
    assert (summary["stopped_by"], summary["validations"]) == ("max_epochs", 1)
    assert summary["val_check_interval"] == "3600 s"
    last = _saved(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == summary["global_step"] > 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_mid_epoch_validates_saves_and_resume_goes_on_from_there(tmp_path, signum):
    runs = tmp_path / "outputs" / "train" / "runs"  # where resume=true looks for the newest run
    first = compose_train(tmp_path, SMALL_BATCHES, "trainer.max_epochs=2")
    first.paths.output_dir = str(runs / "first")
    _callback(first, "signal", "signal_at", batch=3, signum=int(signum))
    result = train(first)
    name = signal.Signals(signum).name
    summary = json.loads((runs / "first" / "summary.json").read_text())
    assert (summary["status"], summary["stopped_by"], result.stopped_by) == (
        "interrupted", name, name)  # fmt: skip
    # the batch the signal came in finished; nothing after it ran
    assert summary["global_step"] == 4 and summary["validations"] == 1
    last = runs / "first" / "checkpoints" / "last.ckpt"
    assert _saved(last)["global_step"] == 4 and result.best_checkpoint is not None
    # the handlers the run took over are given back
    assert not isinstance(getattr(signal.getsignal(signum), "__self__", None), StopCleanly)

    again = compose_train(tmp_path, SMALL_BATCHES, "trainer.max_epochs=2", "resume=true")
    again.paths.output_dir = str(runs / "again")
    train(again)
    resumed = json.loads((runs / "again" / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["stopped_by"] == "max_epochs"
    assert resumed["global_step"] == 2 * EPOCH_BATCHES  # the rest of the two epochs, no more
    assert resumed["epochs_run"] == 2


def test_a_second_signal_stops_at_once(tmp_path):
    cfg = compose_train(tmp_path, SMALL_BATCHES, "trainer.max_epochs=2")
    _callback(cfg, "signal", "signal_at", batch=3, signum=int(signal.SIGTERM), times=2)
    with pytest.raises(SystemExit):  # Lightning's end of an interrupted fit: exit status 1
        train(cfg)
    assert _summary(tmp_path)["status"] == "interrupted"
    assert _summary(tmp_path)["global_step"] == 3  # the batch the signals came in never ended


def test_resume_with_nothing_left_of_the_budget_is_refused(tmp_path):
    from carseg.utils.errors import ConfigError

    cfg = compose_train(tmp_path, SMALL_BATCHES, "trainer.max_epochs=3", "trainer.max_steps=5")
    train(cfg)
    again = compose_train(tmp_path / "again", SMALL_BATCHES, "trainer.max_epochs=3",
                          "trainer.max_steps=5")  # fmt: skip
    again.ckpt_path = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match="already trained 5 step.*Raise trainer.max_steps"):
        train(again)


def test_resume_and_a_checkpoint_file_together_are_refused(tmp_path):
    from carseg.utils.errors import ConfigError

    cfg = compose_train(tmp_path, "resume=true", "ckpt_path=/some/run/last.ckpt")
    with pytest.raises(ConfigError, match="resume=true continues the newest run"):
        train(cfg)


def test_a_loss_monitored_is_reported_as_the_loss_not_as_dice(tmp_path):
    """monitor.metric=val/loss: the best score is the lowest loss, and nothing calls it Dice."""
    cfg = compose_train(tmp_path, "trainer.max_epochs=2", "monitor.metric=val/loss",
                        "monitor.mode=min")  # fmt: skip
    result = train(cfg)
    summary = _summary(tmp_path)
    assert (result.monitor, summary["monitor"]) == ("val/loss", "val/loss")
    assert summary["best_val_dice"] is None and summary["best_score"] == result.best_score
    best = _saved(result.best_checkpoint)
    assert best["global_step"] == summary["best_step"]
