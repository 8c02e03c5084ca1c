"""carseg.training.train: a run built from its config and trained; a NaN loss stops it with the
last good checkpoint kept, and last.ckpt follows every epoch."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from carseg.training.train import build, train
from carseg.utils.errors import TrainingDivergedError
from support.configs import build_datamodule, build_model, compose, compose_train


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = compose_train(tmp_path, "trainer.max_epochs=4")
    cfg.callbacks.poison = {
        "_target_": "support.lightning.poison_batch_callback",
        "epoch": 1,
        "batch": 1,
    }
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
    cfg.callbacks.poison = {
        "_target_": "support.lightning.poison_batch_callback",
        "epoch": 0,
        "batch": 0,
    }
    with pytest.raises(TrainingDivergedError, match="became nan at epoch 0, batch 0"):
        train(cfg)


# Measured (seeds 0, 1, 2; 2 CPU cores, about 10 s each): 10 epochs reach val/dice 0.858-0.869.
# A model that never learns (lr 1e-7, 10 epochs) stays at 0.36, calling every pixel car gives 0.34.
TRAINED_DICE = 0.75


def test_short_training_on_real_sample_learns_the_cars(sample_dir, tmp_path):
    """10 epochs on one real car must segment the other: Dice far above what no learning gives."""
    pl.seed_everything(0)
    dm = build_datamodule(sample_dir, size=(64, 96), batch_size=4, num_workers=0, val_fraction=0.5)
    model = build_model(base_width=8, depth=3, lr=3e-3, loss="bce_dice")
    trainer = pl.Trainer(
        max_epochs=10,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    untrained = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/dice"]
    trainer.fit(model, datamodule=dm)
    assert len(dm.train_set) == 16 and len(dm.val_set) == 16
    assert dm.split.train_cars != dm.split.val_cars
    dice = float(trainer.callback_metrics["val/dice"])
    assert untrained < 0.5
    assert dice > TRAINED_DICE, f"val/dice {dice:.4f} after 10 epochs (bar {TRAINED_DICE})"


RECIPES = {  # experiment: (size, crop, batch, precision, max_epochs, compile)
    "carvana_quarter": ((320, 480), None, 4, "32-true", 20, False),
    "carvana_half": ((640, 960), None, 4, "16-mixed", 20, True),
    "carvana_half_imagenet": ((640, 960), None, 4, "16-mixed", 15, True),
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
    if experiment == "carvana_half_imagenet":  # the Lite0 U-Net from ImageNet, annealed
        assert model.net["_target_"].endswith("EfficientNetLiteUNet")
        assert model.net["encoder_weights"] == "imagenet" and model.net["decoder_width"] == 16
        assert model.scheduler["_target_"] == "carseg.training.optim.WarmupCosine"
        assert model.optimizer["lr"] == 1.0e-3
        assert not any(isinstance(c, pl.callbacks.EarlyStopping) for c in run.trainer.callbacks)
    if experiment.startswith(("carvana_half", "carvana_full")):
        gpu = compose(f"experiment={experiment}", "data.root=/data")
        assert gpu.trainer.accelerator == "gpu" and gpu.trainer.benchmark is True
        assert gpu.trainer.precision == precision and gpu.model.channels_last == "auto"


def test_carvana_cpu_anneals_over_its_time_budget_without_an_early_stop(tiny_set, tmp_path):
    """The CPU recipe: a time budget (however long, the schedule's cosine ends at its end), no
    early stop, the frames cached, precision chosen by the CPU (trainer.precision=auto)."""
    from carseg.training.trainer import auto_precision

    cfg = compose(
        "experiment=carvana_cpu", f"data.root={tiny_set}", "trainer=cpu", "logger=none",
        "trainer.max_time=00:00:02:00", f"++paths.output_dir={tmp_path}",
    )  # fmt: skip
    run = build(cfg)
    model, data, trainer = run.model, run.datamodule, run.trainer
    assert (data.size, data.batch_size, data.cache) == ((160, 240), 8, True)
    assert model.hparams.loss["_target_"] == "carseg.models.losses.BCEDice"
    timers = [c for c in trainer.callbacks if isinstance(c, pl.callbacks.Timer)]
    assert trainer.max_epochs == -1 and [t._duration for t in timers] == [120.0]
    assert not any(isinstance(c, pl.callbacks.EarlyStopping) for c in trainer.callbacks)
    assert trainer.precision == auto_precision("cpu")  # bf16-mixed on AMX, 32-true on AVX2
    as_shipped = compose("experiment=carvana_cpu", "data.root=/d")
    trainer_cfg = as_shipped.trainer
    assert (trainer_cfg.precision, trainer_cfg.max_time) == ("auto", "00:00:10:00")
    # built for epochs longer than the budget: validation on the clock, nothing past the budget,
    # the cached frames loaded in the training process (make bench, section 6)
    assert trainer_cfg.val_check_interval == "00:00:02:30" and trainer_cfg.min_epochs is None
    assert as_shipped.data.num_workers == 0
    assert model.hparams.scheduler["_target_"] == "carseg.training.optim.WarmupCosine"
    assert model.hparams.optimizer["lr"] == 4.0e-3
    # the Lite0 U-Net from the ImageNet weights that install with carseg, its decoder at width 8
    net = model.hparams.net
    assert net["_target_"] == "carseg.models.efficientnet_unet.EfficientNetLiteUNet"
    assert (net["encoder_weights"], net["decoder_width"]) == ("imagenet", 8)
    # and the guided filter recorded for inference
    assert as_shipped.refine == {"guided": True, "radius": 2, "eps": 1.0e-3}


@pytest.mark.parametrize(
    ("experiment", "small"),
    [
        ("carvana_half", "model.net.base_width=4"),
        ("carvana_full", "model.net.base_width=4"),
        ("carvana_half_imagenet", "model.net.decoder_width=2"),
    ],
)
def test_gpu_recipes_train_a_step_on_the_cpu(tiny_set, tmp_path, experiment, small):
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
        small,
        "model.compile=false",
        "debug=fast",
        f"++paths.output_dir={tmp_path}",
    )
    run = build(cfg)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert run.trainer.global_step == 1 and run.trainer.precision == "bf16-mixed"
    assert 0.0 <= float(run.trainer.callback_metrics["val/dice"]) <= 1.0


@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_seed_gives_the_same_run(tmp_path, workers):
    """Same seed, same config, same machine: the same augmentations (albumentations' own
    generator is seeded, in the loader workers too), losses and weights; another seed, others."""

    def fit(name: str, seed: int) -> tuple[list[float], list[torch.Tensor]]:
        cfg = compose_train(tmp_path / name, "trainer.max_epochs=2", f"data.num_workers={workers}",
                            f"seed={seed}", "callbacks.early_stopping=null")  # fmt: skip
        run = build(cfg)
        losses = []
        run.trainer.callbacks.append(_LossRecorder(losses))
        run.trainer.fit(run.model, datamodule=run.datamodule)
        return losses, [p.detach().clone() for p in run.model.parameters()]

    (loss_a, weights_a), (loss_b, weights_b) = fit("a", 1), fit("b", 1)
    assert loss_a == loss_b and all(
        torch.equal(a, b) for a, b in zip(weights_a, weights_b, strict=True)
    )
    loss_c, _ = fit("c", 2)
    assert loss_c != loss_a


class _LossRecorder(pl.Callback):
    def __init__(self, losses: list[float]) -> None:
        self.losses = losses

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
