"""The benchmarks' measuring harness: settings, RSS sampling, interleaved runs, rows, environment.

Every benchmark file (``bench_*.py``) measures through this one, so that every figure means the
same thing (see README.md, "How it measures"):

- every figure is the MEDIAN of several timed runs, after untimed warm-up runs, and the spread
  (min-max) of the runs is printed beside it;
- variants that are compared run side by side in one process, interleaved: round 1 runs each
  variant once, round 2 again, and so on, so that a slow minute slows all of them alike. A variant
  whose warm-up took more than 3x the median of its group's gets fewer timed runs (3);
- peak RSS of a row: a background thread reads VmRSS from /proc/self/status every 10 ms and keeps
  the peak of the row that is running (the whole process's resident memory, not the row's own).

The benchmark files are run as scripts from ``benchmarks/`` (not a package), so they import this
one as ``harness``; it imports nothing heavy at the top, so that ``bench.py`` can set torch's
compile cache folder before torch is loaded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
GIB_MIB = 1024  # MiB in a GiB
COMPILE_TIMEOUT_S = 300
SLOW_FACTOR = 3.0  # a variant this much slower than its group's median gets MIN_REPEATS runs
MIN_REPEATS = 3


# --- settings ------------------------------------------------------------------------------------


class Rounds(Protocol):
    """What ``interleaved`` needs of a settings object (the CPU's ``Settings``, the GPU's)."""

    repeats: int  # timed runs per variant, after `warmup` untimed ones
    warmup: int


@dataclass(frozen=True)
class Settings:
    """What the CPU run measures and how often (the default run, or ``--quick``)."""

    quick: bool
    repeats: int  # timed runs per row, after `warmup` untimed ones
    warmup: int
    data_items: int  # images per data-pipeline run
    scales: tuple[tuple[str, tuple[int, int]], ...]  # (name, (height, width))
    loader_batch: int
    loader_workers: int
    train_size: tuple[int, int]
    train_batch: int
    steps_per_run: int  # training steps per timed run
    compile: bool
    matmul_n: int
    matmuls_per_run: int
    predict_size: tuple[int, int]  # the model's input size in prediction
    predict_images: int  # full-size images per prediction run
    predict_batch: int
    # (id, what, height, width, batch, limit in MiB or None)
    memory_cases: tuple[tuple[str, str, int, int, int, int | None], ...]
    synthetic_cars: int  # cars generated at full size when the real sample is absent
    loop_steps: int  # section 6: timed steps per variant and round
    loop_rounds: int
    loop_size: tuple[int, int] | None  # None: the recipe's own size


def settings(quick: bool, compile_: bool | None) -> Settings:
    """The CPU run's settings; ``compile_`` None: compile except with ``quick``."""
    common = {
        "quick": quick,
        "warmup": 1,
        "scales": (("quarter", (320, 480)), ("half", (640, 960))),
        "loader_batch": 4,
        "loader_workers": 2,
        "matmul_n": 2048,
        "predict_batch": 4,
    }
    memory = (
        ("memory.make_train", "make train default: 128x192, batch 8", 128, 192, 8, 4 * GIB_MIB),
        ("memory.quarter_b8", "1/4 scale: 320x480, batch 8", 320, 480, 8, None),
        ("memory.half_b4", "1/2 scale: 640x960, batch 4", 640, 960, 4, 8 * GIB_MIB),
    )
    if quick:
        # Every code path of the default run, at sizes that take seconds. The memory cases run
        # at an eighth of their sides, so their limits are not checked.
        small = tuple(
            (i, f"{w.split(':')[0]} at 1/8 of its sides", h // 8, wd // 8, b, None)
            for i, w, h, wd, b, _ in memory
        )
        return Settings(
            repeats=2,
            data_items=8,
            train_size=(64, 96),
            train_batch=2,
            steps_per_run=1,
            compile=bool(compile_),
            matmuls_per_run=2,
            predict_size=(64, 96),
            predict_images=4,
            memory_cases=small,
            synthetic_cars=1,
            loop_steps=2,
            loop_rounds=1,
            loop_size=(64, 96),
            **common,
        )
    return Settings(
        repeats=5,
        data_items=32,
        train_size=(320, 480),
        train_batch=4,
        steps_per_run=1,
        compile=compile_ is not False,
        matmuls_per_run=3,
        predict_size=(320, 480),
        predict_images=8,
        memory_cases=memory,
        synthetic_cars=2,
        loop_steps=20,
        loop_rounds=2,
        loop_size=None,
        **common,
    )


# --- measuring -----------------------------------------------------------------------------------


def status_kib(path: str, key: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of a /proc/<pid>/status file; 0 if it is gone."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def rss_mib() -> float:
    return status_kib("/proc/self/status", "VmRSS") / 1024


def pids_rss_mib(pids: list[int]) -> float:
    """Resident memory of these processes (DataLoader workers), summed."""
    return sum(status_kib(f"/proc/{pid}/status", "VmRSS") for pid in pids) / 1024


def worker_pids(loader: Any) -> list[int]:
    """The pids of a DataLoader's worker processes (none before its first epoch)."""
    # A private attribute, stable since torch 1.x; the alternative (all children of this process)
    # would count the idle persistent workers of the other loaders too.
    return [w.pid for w in getattr(loader._iterator, "_workers", [])]


class RssSampler:
    """Peak VmRSS of this process per label, sampled every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self.child_peaks: dict[str, float] = {}
        self._label: str | None = None
        self._pids: Callable[[], list[int]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        label, pids = self._label, self._pids
        if label is None:
            return
        self.peaks[label] = max(self.peaks.get(label, 0.0), rss_mib())
        if pids is not None:
            self.child_peaks[label] = max(self.child_peaks.get(label, 0.0), pids_rss_mib(pids()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @contextlib.contextmanager
    def row(self, label: str, pids: Callable[[], list[int]] | None = None) -> Iterator[None]:
        """Attribute the samples taken inside the block to ``label``; ``pids()``: the processes
        (workers) whose summed RSS is sampled as well."""
        self._label, self._pids = label, pids
        self._sample()
        try:
            yield
        finally:
            self._sample()
            self._label = None


@dataclass
class Variant:
    """One compared thing: ``run()`` does the timed work and returns how many units it did.

    A run that must leave its start and end out of the figure (the GPU's first steps of a
    ``Trainer.fit``) times itself and returns ``(units, seconds)`` instead.
    """

    id: str
    what: str
    run: Callable[[], int | tuple[int, float]]
    prepare: Callable[[], None] | None = None  # untimed, before each run
    workers: Callable[[], list[int]] | None = None  # pids whose summed RSS is also sampled
    note: str = ""
    rates: list[float] = field(default_factory=list)  # units per second, one per timed run
    warmup_s: float = 0.0
    repeats: int = 0
    last_s: float = 0.0  # the latest run's seconds, for the progress lines


def interleaved(variants: list[Variant], s: Rounds, sampler: RssSampler, section: str) -> None:
    """Warm-up rounds, then timed rounds; each round runs every variant once, in order."""
    for v in variants:
        v.repeats = s.repeats
        v.last_s = 0.0
    rounds = s.warmup + s.repeats
    for r in range(rounds):
        timed = r >= s.warmup
        for v in variants:
            v.last_s = 0.0
            if timed and len(v.rates) >= v.repeats:
                continue
            if v.prepare is not None:
                v.prepare()
            with sampler.row(v.id, v.workers):
                start = time.perf_counter()
                done = v.run()
                seconds = time.perf_counter() - start
            units, seconds = done if isinstance(done, tuple) else (done, seconds)
            v.last_s = seconds
            if timed:
                v.rates.append(units / seconds)
            else:
                v.warmup_s += seconds
        if r == s.warmup - 1:  # after the warm-up: fewer runs for the very slow
            typical = statistics.median(v.warmup_s for v in variants)
            for v in variants:
                if v.warmup_s > SLOW_FACTOR * typical and s.repeats > MIN_REPEATS:
                    v.repeats = MIN_REPEATS
                    v.note = (v.note + "; " if v.note else "") + f"{MIN_REPEATS} runs (slow)"
        took = ", ".join(f"{v.id.split('.', 1)[1]} {v.last_s:.2f}" for v in variants if v.last_s)
        progress(f"{section}: round {r + 1}/{rounds} (s per run: {took})")


def row(v: Variant, unit: str, sampler: RssSampler, scale: float = 1.0, **extra: Any) -> dict:
    """The JSON row of a measured variant; ``scale`` converts its rate into ``unit``."""
    rates = [r * scale for r in v.rates]
    out = {
        "id": v.id,
        "what": v.what,
        "unit": unit,
        "status": "ok",
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": rates,
        "peak_rss_mib": sampler.peaks.get(v.id, 0.0),
        "note": v.note,
    }
    if v.workers is not None:
        out["workers_peak_rss_mib"] = sampler.child_peaks.get(v.id, 0.0)
    out.update(extra)
    return out


class CompileTimeoutError(Exception):
    pass


def _raise_timeout(signum: int, frame: object) -> None:
    raise CompileTimeoutError


def first_call(run: Callable[[], object], timeout_s: int = COMPILE_TIMEOUT_S) -> dict:
    """Run ``run`` once under a time limit; ``{"status": "ok", "seconds": ...}`` or a failure.

    The first call of a compiled model compiles it (minutes, and it may fail: no compiler, an
    unsupported op, out of memory). A benchmark reports such a variant as failed, with the
    reason, instead of stopping, so this catches every ``Exception`` on purpose.
    """
    old = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.alarm(timeout_s)
    start = time.perf_counter()
    try:
        run()
        return {"status": "ok", "seconds": time.perf_counter() - start}
    except CompileTimeoutError:
        return {"status": "failed", "reason": f"compiling took over {timeout_s} s"}
    except Exception as err:  # any backend failure (no compiler, an unsupported op ...)
        first = (str(err).strip().splitlines() or [""])[0][:200]
        return {"status": "failed", "reason": f"{type(err).__name__}: {first}"}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


_START = time.perf_counter()


def elapsed_s() -> float:
    """Seconds since the benchmark started (its wall time)."""
    return time.perf_counter() - _START


def progress(message: str) -> None:
    """Progress goes to stderr; stdout holds only the header and the table."""
    print(f"[{elapsed_s():6.1f} s] {message}", file=sys.stderr, flush=True)


# --- environment ---------------------------------------------------------------------------------


def environment(data_source: str) -> dict:
    """Versions, CPU, threads and load: what a reader needs to judge the figures."""
    import albumentations
    import cv2
    import PIL
    import pytorch_lightning as pl
    import torch
    from PIL import features

    cpu, flags = "unknown", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "lightning": pl.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "opencv": cv2.__version__,
        "albumentations": albumentations.__version__,
        "cpu": cpu,
        "cpu_isa": isa,
        "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg_start": os.getloadavg()[0],
        "data": data_source,
    }
