"""Which process this is, when a launcher started several (Lightning's DDP, torchrun, SLURM), and
how many loader workers it gets."""

from __future__ import annotations

import os
from pathlib import Path

from carseg.utils.checks import check_int


def launched_rank() -> int | None:
    """This process's global rank when a launcher set one in the environment, else None.

    ``RANK`` first: on a second machine under torchrun, ``LOCAL_RANK`` is 0 but ``RANK`` is not.
    """
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return None


def is_first_process() -> bool:
    """Whether this is the process that checks and prepares a run's folder (rank 0, or alone)."""
    return (launched_rank() or 0) == 0


def started_by_launcher() -> bool:
    """Whether a launcher started this job's processes itself (torchrun, srun with several tasks),
    so that Lightning's DDP does not start them again."""
    world = os.environ.get("WORLD_SIZE", "1")
    tasks = os.environ.get("SLURM_NTASKS", "1")
    return (world.isdigit() and int(world) > 1) or (tasks.isdigit() and int(tasks) > 1)


def loader_workers(num_workers: int | str, processes: int = 1, key: str = "num_workers") -> int:
    """Loader workers per process: ``"auto"`` is the CPU cores this process may use, shared by
    ``processes`` (DDP ranks on the machine), less one for the process itself.

    Raises:
        ConfigError: neither ``"auto"`` nor an integer >= 0.
    """
    if num_workers == "auto":
        return max(0, usable_cores() // max(1, processes) - 1)
    return check_int(key, num_workers, 0, hint="or auto")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AMX or AVX-512 BF16, from
    ``/proc/cpuinfo``): there bf16 autocast trains about 1.8x as fast as fp32 (``make bench``);
    on a CPU without, it is emulated and many times slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags
