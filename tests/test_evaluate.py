"""carseg.inference.evaluate: which images are scored, and scoring through the predict loop (any
number of processes) with the worst predictions kept for the gallery."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from carseg.data.dataset import CarvanaDataset
from carseg.data.split import SplitRecord, car_id
from carseg.inference.evaluate import (
    ScoreWriter,
    images_to_score,
    refuse_training_keys,
    scoring_data,
)
from carseg.inference.loop import InferenceModule, ScoringSet, run_loop
from carseg.inference.postprocess import PostProcess
from carseg.utils.errors import ConfigError
from support.configs import compose, predictor
from support.lightning import quiet_trainer

IDS = [f"{car}_{view:02d}" for car in ("aaa", "bbb", "ccc", "ddd") for view in (1, 2)]
NO_POSTPROCESS = PostProcess(largest_component=False, fill_holes=False)
RECORD = SplitRecord(
    "/data",
    0.25,
    7,
    train_cars=["aaa", "bbb", "ccc"],
    val_cars=["ddd"],
    car_id_pattern=None,
    fold=None,
)


def test_val_scores_the_checkpoints_validation_cars_whatever_this_config_splits(caplog):
    # this config's own split would have validated on aaa: the record wins
    assert images_to_score(IDS, "val", [RECORD], val_cars=["aaa"]) == ["ddd_01", "ddd_02"]
    with caplog.at_level(logging.WARNING):
        train = images_to_score(IDS, "train", [RECORD], val_cars=["aaa"])
    assert {car_id(i) for i in train} == {"aaa", "bbb", "ccc"} and "trained on" in caplog.text


def test_all_warns_naming_the_training_cars_it_scores(caplog):
    with caplog.at_level(logging.WARNING):
        assert images_to_score(IDS, "all", [RECORD], val_cars=[]) == IDS
    assert "3 car(s) a model trained on" in caplog.text and "aaa" in caplog.text


def test_a_data_folder_without_the_validation_cars_is_refused():
    other = [i for i in IDS if not i.startswith("ddd")]
    with pytest.raises(ConfigError) as err:
        images_to_score(other, "val", [RECORD], val_cars=[])
    assert "ddd" in str(err.value) and "data.root" in str(err.value) and "/data" in str(err.value)


def test_unknown_split_is_refused():
    with pytest.raises(ConfigError, match="split='test'"):
        images_to_score(IDS, "test", [RECORD], val_cars=[])


def test_old_checkpoints_use_this_configs_split_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        ids = images_to_score(IDS, "val", [None], val_cars=["bbb"])
    assert ids == ["bbb_01", "bbb_02"] and "does not record its split" in caplog.text


def test_an_ensemble_scores_the_cars_none_of_its_models_trained_on():
    fold_a = SplitRecord(
        "/data",
        0.5,
        1,
        train_cars=["aaa", "bbb"],
        val_cars=["ccc", "ddd"],
        car_id_pattern=None,
        fold=None,
    )
    fold_b = SplitRecord(
        "/data",
        0.5,
        2,
        train_cars=["aaa", "ccc"],
        val_cars=["bbb", "ddd"],
        car_id_pattern=None,
        fold=None,
    )
    assert images_to_score(IDS, "val", [fold_a, fold_b], val_cars=[]) == ["ddd_01", "ddd_02"]
    fold_c = SplitRecord(
        "/data",
        0.5,
        3,
        train_cars=["ddd", "bbb"],
        val_cars=["aaa", "ccc"],
        car_id_pattern=None,
        fold=None,
    )
    with pytest.raises(ConfigError, match="no car is held out by all of them.*split=all"):
        images_to_score(IDS, "val", [fold_a, fold_b, fold_c], val_cars=[])


class Constant(nn.Module):
    """Every pixel car (logit 5) or none."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0], 1, *images.shape[2:]), self.logit)


def test_scores_go_through_the_predict_loop_and_the_worst_masks_are_kept(tiny_set, tmp_path):
    """A model that calls every pixel car scores each image 2|T| / (|T| + |image|); the writer
    keeps the masks of the lowest-scored images, as predicted."""
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:5])
    one = predictor(Constant(5.0), (32, 48))
    writer = ScoreWriter(tmp_path, worst=2)
    trainer = quiet_trainer(1, callbacks=[writer], enable_checkpointing=False)
    run_loop(
        trainer,
        InferenceModule(one, 0.5, NO_POSTPROCESS),
        ScoringSet(dataset, one, None, 0.5),
        2,
        0,
    )
    scores, ceilings, worst = writer.collect()
    assert set(scores) == set(dataset.ids) and ceilings == {}
    for image_id, dice in scores.items():
        truth = dataset.load_mask(image_id)
        assert dice == pytest.approx(2 * truth.sum() / (truth.sum() + truth.size))
    lowest = sorted(scores, key=scores.get)[:2]
    assert sorted(worst) == sorted(lowest)
    for mask in worst.values():
        assert mask.shape == (80, 120) and mask.all()  # every pixel car, at the image's size
    assert not list(tmp_path.glob("scores-rank*.csv")) and not list(tmp_path.glob(".worst-*"))


def test_the_ceiling_is_scored_beside_the_model(tiny_set, tmp_path):
    listed = CarvanaDataset(tiny_set, image_dir="train")
    dataset = listed.subset(listed.ids[:3])
    one = predictor(Constant(-5.0), (20, 30))
    writer = ScoreWriter(tmp_path, worst=0)
    trainer = quiet_trainer(1, callbacks=[writer], enable_checkpointing=False)
    scoring = ScoringSet(dataset, one, (20, 30), 0.5)
    run_loop(trainer, InferenceModule(one, 0.5, NO_POSTPROCESS), scoring, 2, 0)
    scores, ceilings, worst = writer.collect()
    assert all(v == 0.0 for v in scores.values()) and worst == {}  # no car predicted
    assert set(ceilings) == set(scores) and all(0.8 < v < 1.0 for v in ceilings.values())
    assert np.mean(list(ceilings.values())) < 1.0


@pytest.mark.parametrize(
    ("override", "instead"),
    [
        ("data.size=[64,96]", "eval.py's own key is size=[height,width]"),
        ("data.batch_size=2", "eval.py's own key is batch_size="),
        ("data.num_workers=0", "eval.py's own key is num_workers="),
        ("data.augmentation.hflip=0", "Of the data group, eval.py reads data.root"),
        ("+data.crop=[8,8]", "data.crop is a training setting"),
    ],
)
def test_a_data_key_only_training_reads_is_refused_in_eval(override, instead):
    with pytest.raises(ConfigError, match="is a training setting and eval.py does nothing") as e:
        refuse_training_keys(["ckpt_path=m.ckpt", override])
    assert instead in str(e.value) and override in str(e.value)


def test_the_data_keys_eval_reads_pass():
    refuse_training_keys(
        ["data=carvana", "data.root=/d", "data.synthetic.n_cars=3", "data.on_bad_file=skip",
         "data.car_id_pattern=null", "data.split_seed=7", "size=[64,96]", "batch_size=2"]
    )  # fmt: skip


def test_eval_builds_the_data_module_training_builds_and_checks_its_keys_alike(tmp_path):
    """data.on_bad_file is checked in eval as in training (a typo is not quietly "error")."""
    paths = f"paths.root_dir={tmp_path}"
    data = scoring_data(compose(paths, "data.on_bad_file=skip", config="eval").data)
    assert data.on_bad_file == "skip" and data.synthetic is not None
    for config in ("eval", "train"):
        with pytest.raises(Exception, match=r"data.on_bad_file='skipp'.*error, skip"):
            scoring_data(compose(paths, "data.on_bad_file=skipp", config=config).data)
