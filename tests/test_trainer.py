"""carseg.training.trainer: the Trainer from the trainer group: Lightning 1's gpus key, the devices
that exist, and DDP's limits."""

from __future__ import annotations

import pytest
import torch

from carseg.training.train import resolve_trainer_config
from carseg.utils.errors import ConfigError


@pytest.mark.parametrize(
    ("gpus", "accelerator", "devices"),
    [(0, "cpu", 1), ([], "cpu", 1)],
)
def test_gpus_zero_means_the_cpu(gpus, accelerator, devices):
    out = resolve_trainer_config({"gpus": gpus, "accelerator": "auto", "devices": 1})
    assert out["accelerator"] == accelerator and out["devices"] == devices and "gpus" not in out


def test_without_gpus_the_lightning_2_keys_pass_through():
    given = {"gpus": None, "accelerator": "cpu", "devices": 2, "precision": "32-true"}
    assert resolve_trainer_config(given) == {
        "accelerator": "cpu",
        "devices": 2,
        "precision": "32-true",
    }


NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize(
    "trainer",
    [{"gpus": 1}, {"gpus": [0, 1]}, {"accelerator": "gpu", "devices": 1}, {"accelerator": "cuda"}],
)
def test_gpus_that_are_not_there_are_refused_with_the_cpu_way(trainer):
    with pytest.raises(ConfigError) as err:
        resolve_trainer_config(trainer)
    assert "GPU" in str(err.value) and "trainer=cpu" in str(err.value)


@pytest.mark.parametrize("gpus", [True, -1, "two", [0, "a"], 1.5])
def test_a_malformed_gpus_is_refused(gpus):
    with pytest.raises(ConfigError, match="trainer.gpus"):
        resolve_trainer_config({"gpus": gpus})


def test_ddp_is_refused_in_a_multirun_but_ddp_spawn_is_not():
    with pytest.raises(ConfigError, match="ddp_spawn"):
        resolve_trainer_config({"strategy": "ddp", "accelerator": "cpu"}, multirun=True)
    out = resolve_trainer_config({"strategy": "ddp_spawn", "accelerator": "cpu"}, multirun=True)
    assert out["strategy"] == "ddp_spawn"
    assert resolve_trainer_config({"strategy": "ddp", "accelerator": "cpu"})["strategy"] == "ddp"


@pytest.mark.skipif(not NO_GPU, reason="SyncBatchNorm is allowed where CUDA is")
def test_sync_batchnorm_needs_cuda():
    with pytest.raises(ConfigError, match="sync_batchnorm"):
        resolve_trainer_config({"sync_batchnorm": True, "accelerator": "cpu"})


def test_ddp_in_a_multirun_is_allowed_where_the_launcher_started_the_processes(monkeypatch):
    """A SLURM job of a sweep runs one task per GPU: Lightning's DDP starts nothing again."""
    monkeypatch.setenv("SLURM_NTASKS", "4")
    out = resolve_trainer_config({"strategy": "ddp", "accelerator": "cpu"}, multirun=True)
    assert out["strategy"] == "ddp"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"min_epochs": 3, "max_epochs": 1}, "min_epochs=3 is more than trainer.max_epochs=1"),
        ({"min_epochs": 1, "max_time": "00:00:10:00"}, "trainer.min_epochs=1 would keep training"),
        ({"min_steps": 50, "max_time": "00:00:10:00"}, "trainer.min_steps=50 would keep training"),
        ({"val_check_interval": "two minutes"}, "trainer.val_check_interval must be a share"),
        ({"val_check_interval": 1.5}, "trainer.val_check_interval must be a share"),
    ],
    ids=["min over max epochs", "min_epochs with a budget", "min_steps with a budget",
         "a time in words", "a share over 1"],
)  # fmt: skip
def test_limits_that_contradict_each_other_or_a_budget_are_refused(options, words):
    with pytest.raises(ConfigError, match=words):
        resolve_trainer_config({"accelerator": "cpu", "max_epochs": 6, **options})


@pytest.mark.parametrize("interval", ["00:00:02:30", 0.25, 1.0, 50, None])
def test_validation_every_few_minutes_batches_or_a_share_of_an_epoch(interval):
    cfg = resolve_trainer_config({"accelerator": "cpu", "val_check_interval": interval})
    assert cfg["val_check_interval"] == interval
