"""The loader and a short training on the 32 real Carvana pairs (Kaggle's own files)."""

import numpy as np
import pytorch_lightning as pl

from carseg.dataset import CarvanaDataset
from carseg.split import car_id
from helpers import build_datamodule, build_model


def test_loader_reads_real_carvana_pairs(sample_dir):
    ds = CarvanaDataset(sample_dir)
    assert len(ds) == 32
    assert {car_id(i) for i in ds.ids} == {"00087a6bd4dc", "02159e548029"}
    for index in (0, 17, 31):
        image, mask = ds[index]
        assert image.shape == (1280, 1918, 3) and image.dtype == np.uint8
        assert mask.shape == (1280, 1918)
        assert set(np.unique(mask)) == {0, 1}
        assert 0.05 < mask.mean() < 0.5  # a car, not the background


def test_short_training_on_real_sample(sample_dir, tmp_path):
    pl.seed_everything(0)
    dm = build_datamodule(sample_dir, size=(64, 96), batch_size=8, num_workers=0)
    model = build_model(base_width=8, depth=3, lr=1e-3)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert len(dm.train_set) == 16 and len(dm.val_set) == 16
    dice = float(trainer.callback_metrics["val/dice"])
    loss = float(trainer.callback_metrics["train/loss_epoch"])
    assert 0.0 <= dice <= 1.0 and np.isfinite(loss)
