"""carseg.runs.entrypoint: keys that moved are refused with their new spelling, before Hydra
composes; a refused run leaves no empty run folder."""

from __future__ import annotations

import pytest

from carseg.runs.entrypoint import RENAMED, check_renamed
from carseg.utils.errors import ConfigError
from support.configs import compose


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("model.lr=0.1", "model.lr is now model.optimizer.lr (model.lr=0.1 -> "),
        ("+model.base_width=8", "model.base_width is now model.net.base_width"),
        ("model.scheduler=cosine", "model.scheduler is now model/scheduler"),
        ("device=cuda", "device is now trainer.accelerator"),
    ],
)  # fmt: skip
def test_an_old_spelling_is_refused_with_the_new_one(arg, message):
    with pytest.raises(ConfigError) as err:
        check_renamed([arg])
    assert message in str(err.value)


def test_the_new_spellings_are_the_configs_own_keys():
    cfg = compose("model/loss=bce_dice")
    for old, new in RENAMED.items():
        if new.startswith("model.") and "/" not in new:
            node = cfg
            for part in new.split("."):
                assert part in node, f"{old} -> {new}: not a key of conf/train.yaml"
                node = node[part]
    check_renamed(["model.optimizer.lr=1e-3", "model.net.base_width=8", "model/loss=bce_dice"])
