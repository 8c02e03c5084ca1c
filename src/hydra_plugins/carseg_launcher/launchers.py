"""Hydra launchers for sweeps past one process: hydra-submitit-launcher's, made safe for sweeps.

``hydra/launcher=local`` runs each job of a sweep in a process of its own on this machine
(submitit's local executor), ``hydra/launcher=slurm`` submits each as a SLURM job (a job array).
Two things are added to the plugin's launchers (hydra-submitit-launcher 1.2.0):

- a job that dies without returning (killed, out of memory, a lost node) is recorded as a failed
  job and the sweep goes on, where the plugin would stop the whole sweep at the first one;
- the local launcher runs at most ``max_parallel`` jobs at once, where the plugin starts them all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from carseg.utils.errors import first_line

log = logging.getLogger(__name__)


class JobDiedError(RuntimeError):
    """A job of a sweep that ended without returning a result."""


class _Launcher(submitit_launcher.BaseSubmititLauncher):
    """The plugin's launcher, submitting in batches and collecting every job's result."""

    max_parallel: int | None = None  # jobs at once; None: the whole batch the sweeper gives

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        step = self.max_parallel or len(job_overrides)
        returns: list[JobReturn] = []
        for start in range(0, len(job_overrides), step):
            jobs = self._submit(job_overrides[start : start + step], initial_job_idx + start)
            returns += [_result(job) for job in jobs]
        return returns

    def _submit(self, job_overrides: Sequence[Sequence[str]], first: int) -> list[Any]:
        """Submit the jobs, as the plugin's ``launch`` does (its executor set-up, unchanged)."""
        import submitit

        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in base else f"{self._EXECUTOR}_{key}": value
                for key, value in self.params.items()
                if key not in ("submitit_folder", "max_num_timeout")
            }
        )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        params = []
        for index, overrides in enumerate(job_overrides, start=first):
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
            params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    index,
                    f"job_id_for_{index}",
                    Singleton.get_state(),
                )
            )
        return executor.map_array(self, *zip(*params, strict=True))


def _result(job: Any) -> JobReturn:
    """The job's result; for a job that died, a failed one (the sweep goes on)."""
    try:
        return job.results()[0]
    except Exception as err:  # submitit's UncompletedJobError, FailedJobError ...
        first = first_line(err)
        log.error("Job %s died without a result: %s", job.job_id, first)
        dead = JobReturn()
        dead.status = JobStatus.FAILED
        dead.return_value = JobDiedError(f"job {job.job_id} died: {first}")
        return dead


class LocalLauncher(_Launcher, submitit_launcher.LocalLauncher):
    """Each job a process of its own on this machine, at most ``max_parallel`` at once, each on
    its own share of the machine's cores.

    Without the shares, every job would start as many threads and loader workers as the machine
    has cores, and ``max_parallel`` jobs would fight over them: on 2 cores, 2 jobs side by side
    took twice as long as the same jobs one after the other.

    Args:
        max_parallel: how many jobs run at the same time.
        params: the plugin's ``submitit_local`` keys (``timeout_min``, ``cpus_per_task`` ...).
    """

    def __init__(self, max_parallel: int, **params: Any) -> None:
        super().__init__(**params)
        self.max_parallel = max(1, int(max_parallel))

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state):
        """In the job's process: keep to this job's share of the cores, then run it."""
        _keep_to_share(job_num % self.max_parallel, self.max_parallel)
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)


def _keep_to_share(slot: int, shares: int) -> None:
    """Pin this process (and the loader workers it starts) to its ``slot`` of ``shares`` equal
    shares of the cores it may use, and size torch's thread pool to it."""
    import os

    import torch

    if not hasattr(os, "sched_setaffinity"):  # not Linux: the jobs share every core
        return
    cores = sorted(os.sched_getaffinity(0))
    size = len(cores) // shares
    if size == 0:  # more jobs than cores: they share them
        return
    mine = cores[slot * size : (slot + 1) * size]
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))


class SlurmLauncher(_Launcher, submitit_launcher.SlurmLauncher):
    """Each job a SLURM job: one job array per batch, ``array_parallelism`` running at once."""
