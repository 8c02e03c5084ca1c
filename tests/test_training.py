"""The Trainer built from the config: ``trainer.gpus`` translated, impossible devices refused, and
every key of a recipe reaching the real Trainer, model and data module."""

from __future__ import annotations

import pytest
import torch

from carseg.training.train import build, resolve_trainer_config
from carseg.utils.errors import ConfigError
from helpers import compose

NO_GPU = not torch.cuda.is_available()


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


RECIPES = {  # experiment: (size, crop, batch, precision, max_epochs, compile)
    "carvana_quarter": ((320, 480), None, 4, "32-true", 20, False),
    "carvana_half": ((640, 960), None, 4, "16-mixed", 20, True),
    "carvana_full": ((1280, 1918), (1024, 1024), 4, "16-mixed", 30, True),
    "carvana_sample": ((160, 240), None, 4, "32-true", 40, False),
    "carvana_sample_crop": ((320, 480), (160, 240), 4, "32-true", 40, False),
}


@pytest.mark.parametrize("experiment", RECIPES)
def test_recipes_reach_the_trainer_model_and_data(tiny_set, tmp_path, experiment):
    """Every key of a recipe lands in the real objects (built on the CPU: trainer=cpu)."""
    size, crop, batch, precision, max_epochs, compiled = RECIPES[experiment]
    cfg = compose(
        f"experiment={experiment}",
        f"data.root={tiny_set}",
        "trainer=cpu",
        f"trainer.precision={precision}",
        "logger=none",
        f"++paths.output_dir={tmp_path}",
    )
    run = build(cfg)
    model, data, trainer = run.model.hparams, run.datamodule, run.trainer
    assert data.size == size and data.crop == crop and data.batch_size == batch
    assert trainer.max_epochs == max_epochs and model.compile is compiled
    assert data.synthetic is None and run.ckpt_path is None
    if experiment in ("carvana_half", "carvana_full"):
        net, scheduler = model.net, model.scheduler
        assert (net["base_width"], net["depth"], net["bilinear"]) == (64, 4, True)
        assert model.loss == {"_target_": "carseg.models.losses.BCEDice", "dice_weight": 1.0}
        assert scheduler["_target_"] == "torch.optim.lr_scheduler.ReduceLROnPlateau"
        assert (scheduler["monitor"], scheduler["mode"]) == ("val/dice", "max")
        assert (scheduler["factor"], scheduler["patience"]) == (0.5, 2)
        gpu = compose(f"experiment={experiment}", "data.root=/data")
        assert gpu.trainer.accelerator == "gpu" and gpu.trainer.benchmark is True
        assert gpu.trainer.precision == precision and gpu.model.channels_last == "auto"


@pytest.mark.parametrize("experiment", ["carvana_half", "carvana_full"])
def test_gpu_recipes_train_a_step_on_the_cpu(tiny_set, tmp_path, experiment):
    """One training and one validation step of each GPU recipe, in bf16 on the CPU at a tiny size:
    the scheduler, accumulation and precision it sets all run."""
    cfg = compose(
        f"experiment={experiment}",
        f"data.root={tiny_set}",
        "trainer=cpu",
        "trainer.precision=bf16-mixed",
        "data.size=[32,48]",
        "data.crop=null",
        "data.num_workers=0",
        "model.net.base_width=4",
        "model.compile=false",
        "debug=fast",
        f"++paths.output_dir={tmp_path}",
    )
    run = build(cfg)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert run.trainer.global_step == 1 and run.trainer.precision == "bf16-mixed"
    assert 0.0 <= float(run.trainer.callback_metrics["val/dice"]) <= 1.0


def test_ddp_in_a_multirun_is_allowed_where_the_launcher_started_the_processes(monkeypatch):
    """A SLURM job of a sweep runs one task per GPU: Lightning's DDP starts nothing again."""
    monkeypatch.setenv("SLURM_NTASKS", "4")
    out = resolve_trainer_config({"strategy": "ddp", "accelerator": "cpu"}, multirun=True)
    assert out["strategy"] == "ddp"
