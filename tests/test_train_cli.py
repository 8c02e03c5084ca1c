"""``python src/train.py`` as a user runs it: a real subprocess, Hydra's command line and all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from carseg.runs.sweep_report import (
    CSV_FILE,
    PLOT_FILE,
    parse_overrides,
)
from carseg.training.segmentation_module import SegmentationModule
from support.entry import REPO, TINY_TRAIN, run_entry, run_script
from support.refusals import (
    Row,
    a_file,
    assert_refused,
    assert_refused_by_a_subprocess,
    checkpoint,
    data_folder,
    data_with,
    earlier_run,
    plain_state_dict,
)

TINY = TINY_TRAIN
pytestmark = pytest.mark.slow


def run_train(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_script(root, "train", *overrides)


def test_train_writes_checkpoint_and_tensorboard_logs(tmp_path):
    # trainer.gpus=0: Lightning 1's way of saying "the CPU" is taken as typed
    proc = run_train(tmp_path, *TINY, "trainer.gpus=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best val/dice:" in proc.stdout and "tensorboard --logdir" in proc.stdout
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    # the generated set landed in outputs/data, in Kaggle's layout
    (data,) = (tmp_path / "outputs" / "data").glob("synthetic-*")
    assert len(list((data / "train").glob("*.jpg"))) == 48
    # the config Hydra resolved is kept with the run
    assert (run / ".hydra" / "config.yaml").is_file()

    best = [p for p in (run / "checkpoints").glob("epoch_*.ckpt")]
    assert len(best) == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    assert str(best[0]) in proc.stdout
    saved = torch.load(best[0], map_location="cpu", weights_only=True)
    assert saved["datamodule_hyper_parameters"]["size"] == [32, 48]
    model = SegmentationModule.load_from_checkpoint(best[0], map_location="cpu")
    assert model.hparams.net["base_width"] == 4 and model.hparams.net["depth"] == 3
    logits = model.eval()(torch.zeros(1, 3, 32, 48))
    assert logits.shape == (1, 1, 32, 48)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"val/dice", "val/loss", "train/loss_epoch"} <= set(tags)
    assert any(t.startswith("lr-") for t in tags)
    dice = [e.value for e in events.Scalars("val/dice")]
    assert len(dice) == 2 and all(0.0 <= d <= 1.0 for d in dice)
    printed = float(proc.stdout.split("best val/dice:")[1].split()[0])
    assert printed == pytest.approx(max(dice), abs=1e-4)


def test_a_step_budget_below_one_epoch_validates_and_saves_what_it_has(tmp_path):
    """trainer.max_steps inside the first epoch: the run validates the weights it has and saves
    them (early stopping, on by default, does not trip over the short run)."""
    proc = run_train(tmp_path, *TINY, "trainer.max_steps=2", "trainer.max_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped by:    max_steps" in proc.stdout
    assert "(epoch 0, step 2)" in proc.stdout and "checkpoint:    none saved" not in proc.stdout


def test_sigterm_stops_after_the_batch_with_its_checkpoints_and_exit_143(tmp_path):
    """What a scheduler's SIGTERM (or a Ctrl-C) gets: the batch at hand ends, the run validates and
    saves, says how to go on, and exits as a process the signal ended."""
    proc = run_script(
        tmp_path, "train", *TINY, "data.batch_size=2",
        "+callbacks.signal._target_=support.lightning.signal_at", "+callbacks.signal.batch=3",
        "+callbacks.signal.signum=15",
        env={"PYTHONPATH": str(REPO / "tests")},
    )  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "SIGTERM: training stops after this batch" in proc.stdout + proc.stderr
    assert "stopped by:    SIGTERM" in proc.stdout and "resume=true" in proc.stdout
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["global_step"]) == ("interrupted", 4)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_missing_carvana_folder_explains_the_layout(tmp_path):
    proc = run_train(tmp_path, "data=carvana", f"data.root={tmp_path / 'kaggle'}", "debug=fast")
    assert proc.returncode == 2
    assert "Carvana data folder not found" in proc.stderr
    assert "train_masks" in proc.stderr and "kaggle competitions download" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_multirun_runs_each_job_in_its_own_folder(tmp_path):
    proc = run_train(tmp_path, "-m", *TINY, "trainer.max_epochs=1", "model.net.base_width=2,4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    widths = []
    for job in jobs:
        (ckpt,) = (job / "checkpoints").glob("epoch_*.ckpt")
        widths.append(torch.load(ckpt, weights_only=True)["hyper_parameters"]["net"]["base_width"])
    assert widths == [2, 4]


def test_ddp_with_two_cpu_processes(tmp_path):
    """Lightning's DDP (gloo) with 2 processes: both train, validation metrics agree across
    ranks, and one run folder with one set of checkpoints is written."""
    env_extra = {"PYTHONPATH": str(Path(__file__).parent)}
    proc = run_script(
        tmp_path,
        "train",
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "model.optimizer.lr=3e-3",
        "+callbacks.ranks._target_=support.lightning.rank_metrics_callback",
        f"+callbacks.ranks.folder={tmp_path}",
        env=env_extra,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in output and "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert proc.stdout.count("best val/dice:") == 1  # rank 0 reports, rank 1 stays quiet
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # each rank validated half of the 16 validation images, and the metrics were reduced over
    # both (the training loss, logged without a reduction, differs: each rank saw other images)
    assert [r["val_images_seen"] for r in ranks] == [8, 8]
    for key in ("val/dice", "val/loss"):
        assert ranks[0]["metrics"][key] == pytest.approx(ranks[1]["metrics"][key], abs=1e-6)
    assert 0.0 <= ranks[0]["metrics"]["val/dice"] <= 1.0
    assert ranks[0]["metrics"]["train/loss_epoch"] != ranks[1]["metrics"]["train/loss_epoch"]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert len(list((run / "checkpoints").glob("epoch_*.ckpt"))) == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()


# Measured (seeds 1 and 2, 2 CPU cores, 11 s of training): 0.874 and 0.932 at 1918x1280. A model
# that never learns scores about 0.36 (tests/test_real_sample.py).
CROP_TRAINED_DICE = 0.75


@pytest.mark.slow
def test_crop_training_on_the_real_sample_scores_at_native_resolution(sample_dir, tmp_path):
    """Crops to train, whole frames to validate, and eval.py on the held-out car at 1918x1280."""
    train = run_entry(
        tmp_path, "train", "experiment=carvana_sample_crop", f"data.root={sample_dir}",
        "data.size=[128,192]", "data.crop=[64,96]", "model.net.base_width=8", "model.net.depth=3",
        "trainer.max_epochs=10", "model/loss=bce_dice", "model.optimizer.lr=3e-3",
        "data.num_workers=0", "logger=none", "callbacks.early_stopping=null", "seed=1",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    (ckpt,) = (tmp_path / "outputs" / "train" / "runs").glob("*/checkpoints/epoch_*.ckpt")
    raw = torch.load(ckpt, weights_only=True)
    assert raw["datamodule_hyper_parameters"]["crop"] == [64, 96]
    assert raw["carseg"]["size"] == [128, 192]
    scored = run_entry(tmp_path, "eval", f"ckpt_path={ckpt}", "data=carvana",
                       f"data.root={sample_dir}")  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "eval" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        metrics["cars"] == raw["carseg"]["split"]["val_cars"] and len(metrics["per_image"]) == 16
    )  # the held-out car, all 16 views
    assert metrics["model_input_size"] == [128, 192]
    assert metrics["mean"] > CROP_TRAINED_DICE


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def test_optuna_search_space_and_direction():
    cfg = _compose("hparams_search=optuna", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {
        "model.optimizer.lr",
        "model.net.base_width",
        "model.loss.dice_weight",
    }
    assert cfg.model.loss._target_ == "carseg.models.losses.BCEDice"
    assert sweeper.storage is None  # SQLite storage fails with SQLAlchemy 2 (optuna 2.10)


def _job(sweep: Path, name: str, overrides: list[str], summary: dict | str | None) -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if isinstance(summary, dict):
        (job / "summary.json").write_text(json.dumps(summary))
    elif isinstance(summary, str):
        (job / "summary.json").write_text(summary)
    return job


def _summary(dice: float, epoch: int, ckpt: str = "") -> dict:
    return {
        "status": "completed",
        "best_val_dice": dice,
        "best_epoch": epoch,
        "epochs_run": 6,
        "wall_time_s": 61.5,
        "train_images_per_s": 12.25,
        "best_checkpoint": ckpt or f"/runs/{epoch}.ckpt",
        "git_commit": "abc123",
        "git_dirty": False,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A grid sweep over lr and width: two good jobs, one crashed, one with a corrupt summary,
    and job 10 (sorted as a number, after job 2), whose loss diverged after a good epoch 2."""
    sweep = tmp_path / "2026-01-31_12-00-00"
    shared = ["data.size=[32,48]", "trainer.max_epochs=6"]
    _job(
        sweep,
        "0",
        ["model.optimizer.lr=0.0001", "model.net.base_width=8", *shared],
        _summary(0.80, 5),
    )
    _job(
        sweep,
        "1",
        ["model.optimizer.lr=0.0003", "model.net.base_width=8", *shared],
        _summary(0.91, 4),
    )
    _job(sweep, "2", ["model.optimizer.lr=0.0001", "model.net.base_width=16", *shared], None)
    _job(sweep, "3", ["model.optimizer.lr=0.0003", "model.net.base_width=16", *shared], "{not json")
    diverged = {**_summary(0.85, 2), "status": "failed", "error": "TrainingDivergedError: nan"}
    _job(sweep, "10", ["model.optimizer.lr=0.001", "model.net.base_width=16", *shared], diverged)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file, not a job
    return sweep


@pytest.mark.slow
def test_optuna_sweep_end_to_end_then_report(tmp_path):
    tiny = [o for o in TINY_TRAIN if not o.startswith("model.net.base_width=")]
    proc = run_script(
        tmp_path,
        "train",
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        *tiny,
        "trainer.max_epochs=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]

    scores = []
    for job in jobs:
        overrides = parse_overrides(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        lr, width = float(overrides["model.optimizer.lr"]), int(overrides["model.net.base_width"])
        assert 1e-4 <= lr <= 3e-3 and width in (8, 16, 32)
        assert 0.1 <= float(overrides["model.loss.dice_weight"]) <= 2.0
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs_run"] == 1
        # the job trained what the sampler chose, with the Dice loss
        saved = torch.load(summary["best_checkpoint"], weights_only=True)["hyper_parameters"]
        assert saved["optimizer"]["lr"] == pytest.approx(lr)
        assert saved["net"]["base_width"] == width
        assert saved["loss"]["_target_"] == "carseg.models.losses.BCEDice"
        scores.append(summary["best_val_dice"])

    # Optuna maximised what train.py returned: the best val/dice of each job
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optuna["best_value"] == pytest.approx(max(scores))

    proc = run_script(tmp_path, "sweep_report", str(sweep))
    assert proc.returncode == 0, proc.stderr
    best_job = jobs[int(np.argmax(scores))].name
    assert f"best: job {best_job}, val/dice {max(scores):.4f}" in proc.stdout
    assert "model.optimizer.lr" in proc.stdout and "model.loss.dice_weight" in proc.stdout
    assert (sweep / CSV_FILE).is_file() and (sweep / PLOT_FILE).is_file()


# the tiny run on a data folder given as data.root
TINY_CARVANA = ["data=carvana", "data.size=[32,48]", "data.num_workers=0", "model/net=unet_small",
                "model.net.base_width=4", "trainer.max_epochs=2"]  # fmt: skip

# A user's mistake, one row each: one message, exit 2, nothing written (support.refusals).
REFUSED = [
    Row("unknown key", "train", lambda t: ["foo=1"], ["foo"]),
    Row("unknown group choice", "train", lambda t: ["model=unet_huge"], ["unet_huge", "unet"]),
    Row("trainer.gpus=1 without a GPU", "train", lambda t: [*TINY_TRAIN, "trainer.gpus=1"],
        ["1 GPU(s) asked for", "has none", "trainer.gpus=0"]),
    Row("data.batch_size=0", "train", lambda t: [*TINY_TRAIN, "data.batch_size=0"],
        ["data.batch_size must be an integer >= 1", "0"]),
    Row("model.optimizer.lr=-1", "train", lambda t: [*TINY_TRAIN, "model.optimizer.lr=-1"],
        ["model.optimizer.lr", "greater than 0"]),
    Row("data.num_workers=-1", "train", lambda t: [*TINY_TRAIN, "data.num_workers=-1"],
        ["data.num_workers", ">= 0", "auto"]),
    Row("data.val_fraction=0", "train", lambda t: [*TINY_TRAIN, "data.val_fraction=0"],
        ["data.val_fraction=0", "between 0 and 1"]),
    Row("data.size=[0,10]", "train", lambda t: [*TINY_TRAIN, "data.size=[0,10]"],
        ["data.size", "[height, width]"]),
    Row("data.split_seed=-1", "train", lambda t: [*TINY_TRAIN, "data.split_seed=-1"],
        ["data.split_seed", ">= 0"]),
    Row("model.net.depth=0", "train", lambda t: [*TINY_TRAIN, "model.net.depth=0"],
        ["model.net.depth", ">= 1"]),
    Row("model/loss=focal", "train", lambda t: [*TINY_TRAIN, "model/loss=focal"],
        ["model/loss/focal", "bce_dice", "boundary_bce_dice"]),
    Row("a key that moved, in its old spelling", "train", lambda t: [*TINY_TRAIN, "model.lr=1e-3"],
        ["model.lr is now model.optimizer.lr", "model.optimizer.lr=1e-3"]),
    Row("a config group set as a value", "train", lambda t: [*TINY_TRAIN, "model.loss=bce_dice"],
        ["model.loss is now model/loss"]),
    Row("trainer.precision=fp8", "train", lambda t: [*TINY_TRAIN, "trainer.precision=fp8"],
        ["trainer", "fp8"]),
    Row("trainer.accumulate_grad_batches=0", "train",
        lambda t: [*TINY_TRAIN, "trainer.accumulate_grad_batches=0"], ["accumulate_grad_batches"]),
    Row("resume with another model config", "train",
        lambda t: [*TINY_TRAIN, f"ckpt_path={checkpoint(t)}"],
        ["was trained with model.net.base_width=2", "model.net.base_width=4", "Resume with"]),
    Row("resume a run that has finished", "train",
        lambda t: [*TINY_TRAIN, "model.net.base_width=2", "model.net.depth=1",
                   f"ckpt_path={checkpoint(t, 1)}"],
        ["already trained 2 epoch(s)", "trainer.max_epochs=2", "Raise trainer.max_epochs"]),
    Row("ckpt_path=last without a run", "train", lambda t: [*TINY_TRAIN, "ckpt_path=last"],
        ["ckpt_path=last", "nothing to resume"]),
    Row("a new run in an earlier run's folder", "train",
        lambda t: [*TINY_TRAIN, f"hydra.run.dir={earlier_run(t)}"],
        ["old_run already holds a run", "summary.json", "it saved no checkpoint to resume from"]),
    Row("trainer.max_epochs=abc", "train", lambda t: [*TINY_TRAIN, "trainer.max_epochs=abc"],
        ["trainer.max_epochs must be an integer >= -1 or null, got 'abc'"]),
    Row("trainer.max_time in words", "train",
        lambda t: [*TINY_TRAIN, "trainer.max_time='ten minutes'"],
        ["trainer.max_time must be days:hours:minutes:seconds"]),
    Row("trainer.min_epochs above max_epochs", "train",
        lambda t: [*TINY_TRAIN, "trainer.min_epochs=3", "trainer.max_epochs=1"],
        ["trainer.min_epochs=3 is more than trainer.max_epochs=1"]),
    Row("trainer.min_epochs with a time budget", "train",
        lambda t: [*TINY_TRAIN, "trainer.min_epochs=1", "trainer.max_time=00:00:10:00"],
        ["trainer.min_epochs=1 would keep training past the time budget", "min_epochs=null"]),
    Row("resume=true and a checkpoint file", "train",
        lambda t: [*TINY_TRAIN, "resume=true", f"ckpt_path={t / 'x.ckpt'}"],
        ["resume=true continues the newest run", "ckpt_path="]),
    Row("seed=abc", "train", lambda t: [*TINY_TRAIN, "seed=abc"],
        ["seed must be an integer >= 0 (or null for a random run), got 'abc'"]),
    Row("data.crop_on_car=abc", "train", lambda t: [*TINY_TRAIN, "data.crop_on_car=abc"],
        ["data.crop_on_car must be a share from 0 to 1"]),
    Row("data.augment=sometimes", "train", lambda t: [*TINY_TRAIN, "data.augment=sometimes"],
        ["data.augment must be true or false"]),
    Row("an SGD momentum torch refuses", "train",
        lambda t: [*TINY_TRAIN, "model/optimizer=sgd", "model.optimizer.momentum=-1"],
        ["model.optimizer (torch.optim.sgd.SGD)", "momentum"]),
    Row("an option the optimiser does not take", "train",
        lambda t: [*TINY_TRAIN, "+model.optimizer.momentum=0.9"],
        ["torch.optim.adam.Adam takes no argument momentum"]),
    Row("resume from a file of weights alone", "train",
        lambda t: [*TINY_TRAIN, f"ckpt_path={plain_state_dict(t)}"],
        ["weights.pt is not a carseg training checkpoint"]),
    Row("data.root that is a file", "train",
        lambda t: [*TINY_CARVANA, f"data.root={a_file(t)}"],
        ["is a file, not a folder"]),
    Row("a colour photo as a mask", "train",
        lambda t: [*TINY_CARVANA, f"data.root={data_with(t, 'photo_mask')}"],
        ["not a black-and-white mask", "Is it a photo?"]),
    Row("a symbolic link in train/ that loops", "train",
        lambda t: [*TINY_CARVANA, f"data.root={data_with(t, 'loop')}"],
        ["_01.jpg", "a symbolic link that loops or points to nothing"]),
    Row("model.net.in_channels=1", "train", lambda t: [*TINY_TRAIN, "model.net.in_channels=1"],
        ["model.net.in_channels=1", "RGB images", "model.net.in_channels=3"]),
    Row("data.fold=1 without data.folds", "train", lambda t: [*TINY_TRAIN, "data.fold=1"],
        ["data.fold=1 without data.folds", "data.folds=5"]),
    Row("model.loss._target_=os.system", "train",
        lambda t: [*TINY_TRAIN, "model.loss._target_=os.system", "+model.loss.command=touch PWNED"],
        ["_target_ 'os.system' is a function, not a class"]),
    Row("the run folder inside the data folder", "train",
        lambda t: [*TINY_CARVANA, f"data.root={data_folder(t)}",
                   f"hydra.run.dir={data_folder(t) / 'run'}"],
        ["is inside what this command reads (data.root="]),
]  # fmt: skip


@pytest.mark.parametrize("row", REFUSED, ids=lambda r: r.name)
def test_a_mistake_gets_one_message_and_exit_2(row, tmp_path):
    assert_refused(row, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "row",
    [
        r
        for r in REFUSED
        if r.name
        in (
            "unknown key",
            "data.batch_size=0",
        )
    ],
    ids=lambda r: r.name,
)
def test_a_real_subprocess_agrees(row, tmp_path):
    assert_refused_by_a_subprocess(row, tmp_path)


def test_a_read_only_run_folder_is_refused_before_anything_is_written(tmp_path):
    from support.files import read_only

    mount = tmp_path / "mount"
    mount.mkdir()
    with read_only(mount):
        proc = run_entry(tmp_path, "train", *TINY_TRAIN, f"hydra.run.dir={mount / 'run'}")
        default = run_entry(tmp_path, "train", *TINY_TRAIN, f"paths.log_dir={mount}")
    for refused in (proc, default):
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
        assert "Read-only file system" in refused.stderr
    assert "hydra.run.dir=" in proc.stderr and "paths.log_dir=" in default.stderr
    assert list(mount.iterdir()) == []


def test_a_full_disk_while_tensorboard_writes_is_named_and_the_checkpoint_kept(
    tmp_path, monkeypatch
):
    import errno

    from pytorch_lightning.loggers import TensorBoardLogger

    log = TensorBoardLogger.log_metrics

    def full_at_epoch_1(self, metrics, step=None):
        if "val/dice" in metrics and step and step > 4:
            raise OSError(errno.ENOSPC, "No space left on device", "events.out.tfevents.1")
        return log(self, metrics, step)

    monkeypatch.setattr(TensorBoardLogger, "log_metrics", full_at_epoch_1)
    proc = run_entry(tmp_path, "train", *TINY_TRAIN, "trainer.max_epochs=3")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "No space left on the device while writing events.out.tfevents.1" in proc.stderr
    (last,) = (tmp_path / "outputs" / "train" / "runs").glob("*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the epoch before, whole
    summary = json.loads((last.parents[1] / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]


def test_a_refused_run_leaves_its_folder_free_for_the_fixed_command(tmp_path):
    """A mistake found once the run has started (here a data file that breaks in setup) does
    not block the folder: the fixed command runs there."""
    run = tmp_path / "my_run"
    bad = run_entry(tmp_path, "train", *TINY_TRAIN, f"hydra.run.dir={run}", "data.size=[0,10]")
    assert bad.returncode == 2 and not run.exists()
    root = tmp_path / "data"
    from carseg.data.synthetic import generate_dataset

    generate_dataset(root, n_cars=3, height=64, width=96, seed=0)
    broken = sorted((root / "train_masks").iterdir())[0]
    good = broken.read_bytes()
    broken.write_bytes(good[:40])  # truncated: found by the data check inside fit
    (root / "train_masks.csv").unlink()
    args = [*TINY_CARVANA, f"data.root={root}", f"hydra.run.dir={run}"]
    refused = run_entry(tmp_path, "train", *args)
    assert refused.returncode == 2 and "truncated" in refused.stderr, refused.stderr[-3000:]
    assert not run.exists()
    broken.write_bytes(good)
    fixed = run_entry(tmp_path, "train", *args)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
