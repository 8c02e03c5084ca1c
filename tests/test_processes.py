"""carseg.utils.processes: which process this is, and the loader workers it gets."""

from __future__ import annotations

import pytest

from carseg.utils.errors import ConfigError
from carseg.utils.processes import (
    is_first_process,
    launched_rank,
    loader_workers,
    started_by_launcher,
    usable_cores,
)

RANK_KEYS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS")


@pytest.fixture(autouse=True)
def _alone(monkeypatch):
    for key in RANK_KEYS:
        monkeypatch.delenv(key, raising=False)


def test_the_rank_a_launcher_set_rank_first(monkeypatch):
    assert launched_rank() is None and is_first_process()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "3")  # the second machine's first process under torchrun
    assert launched_rank() == 3 and not is_first_process()


def test_a_launcher_that_started_several_processes(monkeypatch):
    assert not started_by_launcher()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert started_by_launcher()


def test_auto_workers_share_the_cores_less_one_per_process(monkeypatch):
    monkeypatch.setattr("carseg.utils.processes.usable_cores", lambda: 16)
    assert loader_workers("auto") == 15 and loader_workers("auto", processes=4) == 3
    monkeypatch.setattr("carseg.utils.processes.usable_cores", lambda: 1)
    assert loader_workers("auto") == 0
    assert loader_workers(2) == 2 and usable_cores.__name__ == "usable_cores"
    with pytest.raises(ConfigError, match="data.num_workers must be an integer >= 0 \\(or auto\\)"):
        loader_workers(-1, key="data.num_workers")
