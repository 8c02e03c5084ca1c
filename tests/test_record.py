"""carseg.training.callbacks.record: the record every checkpoint of a run carries, written by the
callback from the module and its data module, and read back as it was written."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from carseg.training.callbacks.record import CheckpointRecorder
from carseg.training.checkpoint_reader import RECORD_KEY, CheckpointRecord
from carseg.training.train import build
from carseg.utils.errors import ConfigError
from support.configs import build_datamodule, build_model, compose, compose_train
from support.lightning import quiet_trainer

ONE_BATCH = {"limit_train_batches": 1, "limit_val_batches": 1}


def test_a_checkpoint_records_the_data_modules_size_and_split(tiny_set, tmp_path):
    data = build_datamodule(tiny_set, size=(32, 48), batch_size=8, num_workers=0, augment=False)
    module = build_model(base_width=2, depth=1, threshold=0.4)
    saver = ModelCheckpoint(dirpath=tmp_path, filename="m")
    trainer = quiet_trainer(1, callbacks=[saver, CheckpointRecorder(refine=None)], **ONE_BATCH)
    trainer.fit(module, datamodule=data)
    raw = torch.load(tmp_path / "m.ckpt", weights_only=True)
    record = CheckpointRecord.from_checkpoint(raw, tmp_path / "m.ckpt")
    assert record.size == (32, 48) and record.threshold == 0.4
    assert record.split == data.split and set(record.split.val_cars) == set(data.split.val_cars)
    assert record.model == dict(module.hparams)
    assert raw[RECORD_KEY] == CheckpointRecord.of(module, (32, 48), data.split, None).to_dict()


def test_the_module_alone_writes_no_record_and_a_fit_without_data_records_no_size(tmp_path):
    module = build_model(base_width=2, depth=1)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, 32, 48), torch.ones(2, 1, 32, 48)))
    for recorder in ([], [CheckpointRecorder(refine=None)]):
        trainer = quiet_trainer(1, callbacks=recorder, enable_checkpointing=False, **ONE_BATCH)
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
        trainer.save_checkpoint(tmp_path / "m.ckpt")
        raw = torch.load(tmp_path / "m.ckpt", weights_only=True)
        if not recorder:  # the LightningModule writes none of it
            assert RECORD_KEY not in raw
        else:
            assert raw[RECORD_KEY]["size"] is None and raw[RECORD_KEY]["split"] is None
            assert raw[RECORD_KEY]["model"] == dict(module.hparams)


def test_a_checkpoint_callback_saving_weights_only_is_refused(tmp_path):
    """Lightning leaves callbacks out of weights-only checkpoints: they would lack the record."""
    module = build_model(base_width=2, depth=1)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, 32, 48), torch.ones(2, 1, 32, 48)))
    saver = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    trainer = quiet_trainer(1, callbacks=[saver, CheckpointRecorder(refine=None)], **ONE_BATCH)
    with pytest.raises(ConfigError, match="save_weights_only=false"):
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert not list(tmp_path.glob("*.ckpt"))


def test_every_training_run_has_the_recorder(tmp_path):
    run = build(compose_train(tmp_path))
    assert sum(isinstance(c, CheckpointRecorder) for c in run.trainer.callbacks) == 1


def test_a_recipes_refine_is_recorded_and_read_back(tmp_path):
    """A recipe's edge option travels with its checkpoints; none recorded reads back as None."""
    module = build_model(base_width=2, depth=1)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, 32, 48), torch.ones(2, 1, 32, 48)))
    on = {"guided": True, "radius": 2, "eps": 1e-3}
    off = {"guided": False, "radius": 2, "eps": 1e-3}  # (conf/train.yaml's: off, nulls)
    for refine, expected in ((on, on), (None, None), (off, None)):
        trainer = quiet_trainer(
            1, callbacks=[CheckpointRecorder(refine)], enable_checkpointing=False, **ONE_BATCH
        )
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
        trainer.save_checkpoint(tmp_path / "m.ckpt")
        raw = torch.load(tmp_path / "m.ckpt", weights_only=True)
        assert CheckpointRecord.from_checkpoint(raw, tmp_path / "m.ckpt").refine == expected
    turn_on = ("refine.guided=true", "refine.radius=2", "refine.eps=1e-3")
    for overrides, expected in (((), None), (turn_on, on)):
        run = build(compose_train(tmp_path / str(len(overrides)), *overrides))
        (recorder,) = [c for c in run.trainer.callbacks if isinstance(c, CheckpointRecorder)]
        assert recorder.refine == expected
    # the CPU recipe records the guided filter it was measured best with
    assert compose("experiment=carvana_cpu").refine == on


@pytest.mark.parametrize(
    ("refine", "message"),
    [
        ({"guided": True, "radius": 2}, "a group of guided, radius and eps"),
        ({"guided": True, "radius": 0, "eps": 1e-3}, "refine.radius"),
        ({"guided": "on", "radius": 2, "eps": 1e-3}, "refine.guided"),
        ("true", "a group of guided, radius and eps"),
    ],
)
def test_a_bad_recipe_refine_is_refused_before_training(refine, message):
    with pytest.raises(ConfigError, match=message):
        CheckpointRecorder(refine)
