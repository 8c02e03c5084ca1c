"""carseg's benchmark (``make bench``): data pipeline, training step, FLOP/s, prediction, memory.

Prints an environment header and a table, and writes the same figures as JSON
(``benchmarks/results.json``, or ``--out``). ``--quick`` is a smoke run (fewer images and repeats,
smaller training sizes, no ``torch.compile``) that the tests use; its figures are not comparable.

How it measures (the machine is shared and noisy, so no single timing is trusted):

- every figure is the MEDIAN of several timed runs, after one untimed warm-up run, and the spread
  (min-max) of the runs is printed beside it;
- variants that are compared (plain vs JPEG draft vs cache; Lightning vs a plain loop; fp32 vs
  channels_last vs bf16 vs compile; the training step vs a matmul) run side by side in one
  process, interleaved: round 1 runs each variant once, round 2 again, and so on, so that a slow
  minute slows all of them alike. A variant whose warm-up run took more than 3x the median of its
  group's (bf16 on a CPU without native bf16, say) gets fewer timed runs (3);
- peak RSS of a row: a background thread reads VmRSS from /proc/self/status every 10 ms and keeps
  the peak of the row that is running. It is the whole process's resident memory (what is already
  loaded included), not the row's increment;
- the memory checks (issue 4, item 5) run in a child process, so that earlier rows' memory
  (which the allocator keeps, and ru_maxrss never forgets) does not count against them.

Run from anywhere: ``.venv/bin/python benchmarks/bench.py [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime as dt
import gc
import json
import logging
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(
    os.environ.get("CARSEG_SAMPLE_DIR", REPO.parent / "shared" / "carvana_sample")
).resolve()
GIB_MIB = 1024  # MiB in a GiB
COMPILE_TIMEOUT_S = 300
SLOW_FACTOR = 3.0  # a variant this much slower than its group's median gets MIN_REPEATS runs
MIN_REPEATS = 3


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What a run measures and how often (the default run, or ``--quick``)."""

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


def settings(quick: bool, compile_: bool | None) -> Settings:
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
        **common,
    )


# --- measuring -----------------------------------------------------------------------------------


def _status_kib(path: str, key: str) -> int:
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
    return _status_kib("/proc/self/status", "VmRSS") / 1024


def pids_rss_mib(pids: list[int]) -> float:
    """Resident memory of these processes (DataLoader workers), summed."""
    return sum(_status_kib(f"/proc/{pid}/status", "VmRSS") for pid in pids) / 1024


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
    """One compared thing: ``run()`` does the timed work and returns how many units it did."""

    id: str
    what: str
    run: Callable[[], int]
    prepare: Callable[[], None] | None = None  # untimed, before each run
    workers: Callable[[], list[int]] | None = None  # pids whose summed RSS is also sampled
    note: str = ""
    rates: list[float] = field(default_factory=list)  # units per second, one per timed run
    warmup_s: float = 0.0
    repeats: int = 0
    last_s: float = 0.0  # the latest run's seconds, for the progress lines


def interleaved(variants: list[Variant], s: Settings, sampler: RssSampler, section: str) -> None:
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
                units = v.run()
                seconds = time.perf_counter() - start
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


def row(v: Variant, unit: str, sampler: RssSampler, scale: float = 1.0, **extra) -> dict:
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


_START = time.perf_counter()


def progress(message: str) -> None:
    """Progress goes to stderr; stdout holds only the header and the table."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {message}", file=sys.stderr, flush=True)


# --- environment ---------------------------------------------------------------------------------


def environment(data_source: str) -> dict:
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


# --- 1. data pipeline ----------------------------------------------------------------------------


def find_data(s: Settings, tmp: Path, override: str | None) -> tuple[Path, str]:
    """The folder of full-size pairs: ``--data``, the real sample, or a generated set."""
    if override:
        return Path(override).expanduser().resolve(), f"{override} (--data)"
    if (SAMPLE_DIR / "train").is_dir():
        return SAMPLE_DIR, f"real Carvana sample {SAMPLE_DIR}"
    from carseg.synthetic import generate_dataset

    progress(f"real sample not found at {SAMPLE_DIR}: generating {s.synthetic_cars} car(s)")
    root = generate_dataset(tmp / "synthetic", n_cars=s.synthetic_cars, height=1280, width=1918)
    return root, f"generated: {s.synthetic_cars} synthetic car(s) x 16 views at 1918x1280"


def bench_data(s: Settings, root: Path, tmp: Path, sampler: RssSampler) -> tuple[list, list]:
    from torch.utils.data import DataLoader

    from carseg.cache import ResizedCache
    from carseg.dataset import CarvanaDataset
    from carseg.transforms import build_transforms

    ids = CarvanaDataset(root).ids[: s.data_items]
    source_size = list(CarvanaDataset(root, ids[:1]).load_image(ids[0]).shape[:2])  # (H, W)
    variants, loaders = [], []

    def items(dataset: CarvanaDataset, seed: list[int]) -> Callable[[], int]:
        def run() -> int:
            # The same augmentation draws for every variant of a round.
            dataset.transform.set_random_seed(seed[0])
            seed[0] += 1
            for i in range(len(dataset)):
                dataset[i]
            return len(dataset)

        return run

    for name, size in s.scales:
        h, w = size
        label = f"{'1/4' if name == 'quarter' else '1/2'} {h}x{w}"
        loading = f"DataLoader, {s.loader_workers} workers, batch {s.loader_batch}, draft"
        progress(f"data: building the {h}x{w} cache of {len(ids)} images (not timed)")
        cache = ResizedCache.build(CarvanaDataset(root, ids, decode_size=size), size, tmp / "cache")

        def dataset(size: tuple[int, int] = size, **kw) -> CarvanaDataset:
            return CarvanaDataset(root, ids, build_transforms(size, train=True), **kw)

        loader = DataLoader(
            dataset(decode_size=size),
            batch_size=s.loader_batch,
            shuffle=True,
            num_workers=s.loader_workers,
            persistent_workers=True,
        )
        loaders.append(loader)

        def epoch(loader: DataLoader = loader) -> int:
            return sum(len(images) for images, _ in loader)

        variants += [
            Variant(f"data.{name}.plain", f"{label} plain: full decode + resize",
                    items(dataset(), [0])),
            Variant(f"data.{name}.draft", f"{label} JPEG draft decode + resize",
                    items(dataset(decode_size=size), [0])),
            Variant(f"data.{name}.cache", f"{label} from the resized cache",
                    items(dataset(decode_size=size, cache=cache), [0])),
            Variant(f"data.{name}.loader",
                    f"{label} {loading}",
                    epoch, workers=partial(worker_pids, loader)),
        ]  # fmt: skip
    interleaved(variants, s, sampler, "data")
    rows = [row(v, "images/s", sampler) for v in variants]
    for r in rows:
        r["source_size"] = source_size
    comparisons = []
    by_id = {r["id"]: r for r in rows}
    for name, (h, w) in s.scales:
        plain = by_id[f"data.{name}.plain"]["median"]
        for kind in ("draft", "cache"):
            ratio = by_id[f"data.{name}.{kind}"]["median"] / plain
            comparisons.append({
                "id": f"speedup.{name}.{kind}", "section": "data",
                "what": f"{h}x{w}: {kind} / plain",
                "value": ratio,
                "target": 3.0 if name == "quarter" else None,
                "pass": ratio >= 3.0 if name == "quarter" else None,
            })  # fmt: skip
        ratio = by_id[f"data.{name}.loader"]["median"] / by_id[f"data.{name}.draft"]["median"]
        comparisons.append({
            "id": f"speedup.{name}.loader", "section": "data",
            "what": f"{h}x{w}: DataLoader ({s.loader_workers} workers) / draft in-process",
            "value": ratio, "target": None, "pass": None,
        })  # fmt: skip
    del variants, loaders  # shuts the persistent workers down
    gc.collect()
    return rows, comparisons


def worker_pids(loader) -> list[int]:
    """The pids of a DataLoader's worker processes (none before its first epoch)."""
    # A private attribute, stable since torch 1.x; the alternative (all children of this process)
    # would count the idle persistent workers of the other loaders too.
    return [w.pid for w in getattr(loader._iterator, "_workers", [])]


# --- 2. and 3. training --------------------------------------------------------------------------


def default_model_config() -> dict:
    """``conf/model/unet.yaml`` as keyword arguments of ``SegmentationModule``."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "unet.yaml"))
    cfg.pop("_target_", None)
    return cfg


def fixed_batches(n: int, batch: int, size: tuple[int, int]):
    """``n`` random batches (images ``(B, 3, H, W)``, masks ``(B, 1, H, W)`` in {0, 1})."""
    import torch

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n * batch, 3, *size, generator=gen)
    masks = (torch.rand(n * batch, 1, *size, generator=gen) > 0.5).float()
    return images, masks


class CompileTimeoutError(Exception):
    pass


def _raise_timeout(signum: int, frame: object) -> None:
    raise CompileTimeoutError


def bench_train(s: Settings, sampler: RssSampler, native_bf16: bool) -> tuple[list, list, dict]:
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.flop_counter import FlopCounterMode

    from carseg.module import SegmentationModule

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")

    cfg = default_model_config()
    torch.manual_seed(0)
    base = SegmentationModule(**cfg)
    h, w = s.train_size
    b = s.train_batch
    images, masks = fixed_batches(s.steps_per_run, b, s.train_size)
    loader = DataLoader(TensorDataset(images, masks), batch_size=b, shuffle=False)
    images_per_run = s.steps_per_run * b
    channels_last = torch.channels_last

    # (a) Lightning: a new Trainer per run (built untimed), only fit() timed.
    lightning_model = copy.deepcopy(base)
    trainer: list[pl.Trainer] = []

    def build_trainer() -> None:
        trainer[:] = [
            pl.Trainer(
                accelerator="cpu",
                devices=1,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                limit_train_batches=s.steps_per_run,
                max_epochs=1,
                num_sanity_val_steps=0,
            )
        ]

    def fit() -> int:
        trainer[0].fit(lightning_model, train_dataloaders=loader)
        return images_per_run

    # (b) and the step-speed variants: a plain loop over the same batches.
    def plain_loop(cl: bool = False, bf16: bool = False, compiled: bool = False):
        model = copy.deepcopy(base).train()
        if cl:
            model = model.to(memory_format=channels_last)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"]
        )
        net = torch.compile(model) if compiled else model

        def run() -> int:
            for x, y in loader:
                if cl:
                    x = x.to(memory_format=channels_last)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = net(x)
                loss = F.binary_cross_entropy_with_logits(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return images_per_run

        return run

    n = s.matmul_n
    ma, mb = torch.randn(n, n), torch.randn(n, n)

    def matmuls() -> int:
        for _ in range(s.matmuls_per_run):
            torch.mm(ma, mb)
        return s.matmuls_per_run

    shape = f"{h}x{w} b{b}"
    variants = [
        Variant("train.lightning", f"train {shape}: Lightning Trainer.fit", fit, build_trainer),
        Variant("train.plain_fp32", f"train {shape}: plain loop, fp32", plain_loop()),
        Variant("train.channels_last", f"train {shape}: plain, channels_last",
                plain_loop(cl=True)),
        Variant("train.bf16", f"train {shape}: plain, bf16 autocast", plain_loop(bf16=True)),
        Variant("train.bf16_channels_last", f"train {shape}: plain, bf16 + channels_last",
                plain_loop(cl=True, bf16=True)),
    ]  # fmt: skip

    # torch.compile: compiled (and its first step timed) before the rounds, under a time limit.
    skipped = "--quick skips it (a cold compile takes minutes); add --compile to measure it"
    if not s.quick:
        skipped = "--no-compile"
    compile_info: dict = {"status": "skipped", "reason": skipped}
    if s.compile:
        progress("train: torch.compile (cold cache), first step")
        compiled_run = plain_loop(compiled=True)
        old = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.alarm(COMPILE_TIMEOUT_S)
        start = time.perf_counter()
        try:
            with sampler.row("train.compile"):
                compiled_run()
            compile_info = {"status": "ok", "first_step_s": time.perf_counter() - start}
        except CompileTimeoutError:
            compile_info = {
                "status": "failed",
                "reason": f"compiling took over {COMPILE_TIMEOUT_S} s",
            }
        except Exception as err:  # any backend failure (no compiler, an unsupported op ...)
            first = (str(err).strip().splitlines() or [""])[0][:200]
            compile_info = {"status": "failed", "reason": f"{type(err).__name__}: {first}"}
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        if compile_info["status"] == "ok":
            variants.append(
                Variant("train.compile", f"train {shape}: plain, torch.compile", compiled_run)
            )
        else:
            torch._dynamo.reset()
        progress(f"train: torch.compile {compile_info}")
    variants.append(
        Variant("flops.matmul", f"fp32 matmul {n}x{n} @ {n}x{n}", matmuls,
                note=f"2*{n}^3 FLOP each")
    )  # fmt: skip

    # FLOPs of one forward + backward (convolutions and matmuls: what FlopCounterMode counts).
    counter = copy.deepcopy(base).train()
    with FlopCounterMode(display=False) as flop_mode:
        loss = F.binary_cross_entropy_with_logits(counter(images[:b]), masks[:b])
        loss.backward()
    flop_per_image = flop_mode.get_total_flops() / b
    del counter, loss

    interleaved(variants, s, sampler, "train")

    rows = []
    by_id = {}
    for v in variants:
        if v.id == "flops.matmul":
            r = row(v, "GFLOP/s", sampler, scale=2 * n**3 / 1e9)
        else:
            gflops = [rate * flop_per_image / 1e9 for rate in v.rates]
            r = row(v, "images/s", sampler, gflops=statistics.median(gflops))
            if v.id == "train.compile":
                r["compile_s"] = max(0.0, compile_info["first_step_s"] - b / r["median"])
                r["first_step_s"] = compile_info["first_step_s"]
                r["note"] = f"compile {r['compile_s']:.0f} s (cold cache), not in images/s"
            if v.id.startswith("train.bf16") and not native_bf16:
                r["note"] = "; ".join(filter(None, [r["note"], "no native bf16 on this CPU"]))
        rows.append(r)
        by_id[v.id] = r
    if compile_info["status"] != "ok":
        rows.append(
            {
                "id": "train.compile",
                "what": f"train {shape}: plain, torch.compile",
                "unit": "images/s",
                **compile_info,
            }
        )
    plain = by_id["train.plain_fp32"]
    achieved = Variant("flops.train_step", f"train step fp32 {shape}: achieved", lambda: 0)
    plain_rates = next(v for v in variants if v.id == "train.plain_fp32").rates
    achieved.rates = [rate * flop_per_image / 1e9 for rate in plain_rates]
    sampler.peaks["flops.train_step"] = plain["peak_rss_mib"]
    rows.append(row(achieved, "GFLOP/s", sampler, note="FLOPs / plain fp32 step time"))
    by_id["flops.train_step"] = rows[-1]

    comparisons = [
        {
            "id": "ratio.lightning_plain",
            "section": "train",
            "what": "training images/s: Lightning / plain loop",
            "value": by_id["train.lightning"]["median"] / plain["median"],
        }
    ]
    for vid in ("train.channels_last", "train.bf16", "train.bf16_channels_last", "train.compile"):
        if vid in by_id and by_id[vid].get("status") == "ok":
            comparisons.append(
                {
                    "id": f"ratio.{vid.split('.', 1)[1]}_fp32",
                    "section": "train",
                    "what": f"training images/s: {vid.split('.', 1)[1]} / fp32",
                    "value": by_id[vid]["median"] / plain["median"],
                }
            )
    comparisons.append(
        {
            "id": "ratio.achieved_matmul",
            "section": "flops",
            "what": "training step GFLOP/s / fp32 matmul GFLOP/s",
            "value": by_id["flops.train_step"]["median"] / by_id["flops.matmul"]["median"],
        }
    )
    flops = {
        "train_step_gflop": flop_per_image * b / 1e9,
        "gflop_per_image": flop_per_image / 1e9,
        "batch": b,
        "size": [h, w],
        "counted": "FlopCounterMode: convolutions and matmuls of one forward + backward",
    }
    return rows, comparisons, flops


# --- 4. prediction -------------------------------------------------------------------------------


def bench_predict(s: Settings, root: Path, sampler: RssSampler) -> list:
    import torch

    from carseg.dataset import CarvanaDataset
    from carseg.inference import Predictor, batched, torch_forward
    from carseg.module import SegmentationModule

    dataset = CarvanaDataset(root)
    images = [dataset.load_image(i) for i in dataset.ids[: s.predict_images]]
    torch.manual_seed(0)
    model = SegmentationModule(**default_model_config()).eval()
    predictor = Predictor(torch_forward(model), s.predict_size)

    def run() -> int:
        for batch in batched(images, s.predict_batch):
            predictor.probabilities(batch)
        return len(images)

    h, w = s.predict_size
    full = "x".join(str(x) for x in images[0].shape[1::-1])
    v = Variant(
        "predict.full",
        f"predict {full}: model at {h}x{w} b{s.predict_batch}, fp32, upsampled",
        run,
        note="images decoded beforehand",
    )
    interleaved([v], s, sampler, "predict")
    return [row(v, "images/s", sampler)]


# --- 5. memory -----------------------------------------------------------------------------------


def memory_child(cases: list[dict]) -> None:
    """In a fresh process: one training step per case, smallest first; print peaks as JSON.

    A tiny step first creates Adam's state and loads the kernels, so the measured step has
    everything a later step of a real run has. Between cases, freed memory is handed back to the
    system (malloc_trim), so each case's peak is its own.
    """
    import torch
    import torch.nn.functional as F

    from carseg.module import SegmentationModule

    trim = getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    results = []
    with RssSampler() as sampler:
        for case in cases:
            torch.manual_seed(0)
            model = SegmentationModule(**default_model_config()).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step(x, y, model=model, optimizer=optimizer) -> None:
                loss = F.binary_cross_entropy_with_logits(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            b = case["batch"]
            step(*fixed_batches(1, b, (32, 48)))
            x, y = fixed_batches(1, b, (case["height"], case["width"]))
            gc.collect()
            if trim:
                trim(0)
            baseline = rss_mib()
            with contextlib.suppress(OSError):  # reset VmHWM to the current RSS (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            start = time.perf_counter()
            with sampler.row(case["id"]):
                step(x, y)
            seconds = time.perf_counter() - start
            results.append(
                {
                    **case,
                    "baseline_rss_mib": baseline,
                    "peak_rss_mib": sampler.peaks[case["id"]],
                    "hwm_mib": _status_kib("/proc/self/status", "VmHWM") / 1024,
                    "step_s": seconds,
                }
            )
            del model, optimizer, x, y
            gc.collect()
            if trim:
                trim(0)
    print(json.dumps(results))


def bench_memory(s: Settings) -> list:
    cases = [
        {"id": i, "what": what, "height": h, "width": w, "batch": b, "limit_mib": limit}
        for i, what, h, w, b, limit in sorted(s.memory_cases, key=lambda c: c[2] * c[3] * c[4])
    ]
    progress(f"memory: {len(cases)} training steps in a child process")
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the memory child process failed:\n{proc.stderr[-3000:]}")
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in results:
        # The exact high-water mark when the kernel gave one, else the 10 ms samples' peak.
        peak = max(r["peak_rss_mib"], r["hwm_mib"])
        r["peak_mib"] = peak
        r["pass"] = None if r["limit_mib"] is None else peak < r["limit_mib"]
    order = [c[0] for c in s.memory_cases]
    return sorted(results, key=lambda r: order.index(r["id"]))


# --- the table -----------------------------------------------------------------------------------


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def table(result: dict) -> str:
    env = result["env"]
    lines = [
        "carseg benchmark" + (" (--quick: smoke run, figures not comparable)" if result["quick"]
                              else ""),
        f"date {env['date']}  commit {env['commit']}  python {env['python']}",
        f"torch {env['torch']} ({env['torch_threads']} threads, {env['torch_interop_threads']} "
        f"interop, {env['torch_cpu_capability']})  lightning {env['lightning']}  "
        f"pillow {env['pillow']} (libjpeg-turbo {env['libjpeg_turbo']})  opencv {env['opencv']}",
        f"cpu {env['cpu']}  usable cpus {env['cpus_usable']}  isa {' '.join(env['cpu_isa'])}  "
        f"native bf16 {env['native_bf16']}",
        f"load average {env['loadavg_start']:.2f} at start, {env['loadavg_end']:.2f} at end  "
        f"data: {env['data']}",
        f"medians of {result['repeats']} timed runs after {result['warmup']} warm-up run "
        "(3 for variants over 3x slower than their group's median); variants of a section "
        "interleaved",
        "",
    ]  # fmt: skip
    header = f"{'row':<28} {'what':<58} {'median':>9} {'min-max':>15} {'unit':<9} {'peak RSS':>9}"
    sections = [
        ("1. data pipeline (items through __getitem__, main process, unless DataLoader)", "data."),
        ("2. training step (same fixed random batches)", "train."),
        ("3. achieved FLOP/s", "flops."),
        ("4. prediction at full resolution", "predict."),
    ]
    for title, prefix in sections:
        lines += [title, header]
        for r in result["rows"]:
            if not r["id"].startswith(prefix):
                continue
            if r.get("status", "ok") != "ok":
                lines.append(f"{r['id']:<28} {r['what']:<58} {r['status'].upper()}: {r['reason']}")
                continue
            spread = f"{fmt(r['min'])}-{fmt(r['max'])}"
            note = r.get("note", "")
            if "gflops" in r:
                note = "; ".join(filter(None, [f"{fmt(r['gflops'])} GFLOP/s", note]))
            if "workers_peak_rss_mib" in r:
                note = f"+ workers {r['workers_peak_rss_mib']:.0f} MiB (RSS sum)"
            lines.append(
                f"{r['id']:<28} {r['what']:<58} {fmt(r['median']):>9} {spread:>15} "
                f"{r['unit']:<9} {r['peak_rss_mib']:>5.0f} MiB" + (f"  {note}" if note else "")
            )
        if prefix == "flops.":
            f = result["flops"]
            lines.append(
                f"  one training step: {f['train_step_gflop']:.1f} GFLOP "
                f"({f['gflop_per_image']:.1f} per image; {f['counted']})"
            )
        for c in result["comparisons"]:
            if c["section"] + "." == prefix:
                lines.append(f"  {c['what']}: {c['value']:.2f}x" + _target(c))
        lines.append("")
    lines += [
        "5. memory (one training step of the default model, in a fresh child process)",
        f"{'row':<28} {'what':<58} {'baseline':>9} {'peak RSS':>9} {'limit':>9}  check",
    ]
    for m in result["memory"]:
        limit = "-" if m["limit_mib"] is None else f"{m['limit_mib'] / GIB_MIB:.0f} GiB"
        check = {True: "PASS", False: "FAIL", None: "-"}[m["pass"]]
        lines.append(
            f"{m['id']:<28} {m['what']:<58} {m['baseline_rss_mib']:>5.0f} MiB "
            f"{m['peak_mib']:>5.0f} MiB {limit:>9}  {check}"
        )
    lines += [
        "",
        f"process ru_maxrss: {result['ru_maxrss_mib']:.0f} MiB (this process), "
        f"{result['ru_maxrss_children_mib']:.0f} MiB (largest child)",
        f"wall time: {result['wall_s']:.0f} s",
    ]
    return "\n".join(lines)


def _target(c: dict) -> str:
    if c.get("target") is None:
        return ""
    return f"  (target >= {c['target']:.0f}x: {'PASS' if c['pass'] else 'FAIL'})"


def markdown(result: dict) -> str:
    """The figures of a results file as markdown tables, for the project's README."""
    rows = {r["id"]: r for r in result["rows"]}
    ratio = {c["id"]: c["value"] for c in result["comparisons"]}
    env = result["env"]

    def cell(rid: str) -> str:
        r = rows.get(rid)
        if r is None or r.get("status", "ok") != "ok":
            return "-" if r is None else r["status"]
        return f"{fmt(r['median'])} ({fmt(r['min'])}-{fmt(r['max'])})"

    lines = [
        f"Measured {env['date'][:10]} ({env['commit']}): {env['cpu']}, {env['cpus_usable']} "
        f"cores ({'native bf16' if env['native_bf16'] else 'no native bf16'}), torch "
        f"{env['torch']}, {env['torch_threads']} threads; load average {env['loadavg_start']:.1f}"
        f" at the start. Medians of {result['repeats']} runs (min-max).",
        "",
        "| data, images/s (1 process) | plain | JPEG draft | cache | DataLoader, 2 workers "
        "| draft / plain | cache / plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("quarter", "1/4 scale, 320x480"), ("half", "1/2 scale, 640x960")):
        lines.append(
            f"| {label} | {cell(f'data.{name}.plain')} | {cell(f'data.{name}.draft')} "
            f"| {cell(f'data.{name}.cache')} | {cell(f'data.{name}.loader')} "
            f"| {ratio[f'speedup.{name}.draft']:.2f}x | {ratio[f'speedup.{name}.cache']:.2f}x |"
        )
    h, w = result["flops"]["size"]
    lines += [
        "",
        f"| training, {h}x{w}, batch {result['flops']['batch']} | images/s | vs plain fp32 "
        "| GFLOP/s | peak RSS |",
        "|---|---|---|---|---|",
    ]
    plain = rows["train.plain_fp32"]["median"]
    for rid, label in (
        ("train.lightning", "Lightning `Trainer.fit`"),
        ("train.plain_fp32", "plain PyTorch loop, fp32"),
        ("train.channels_last", "channels_last"),
        ("train.bf16", "bf16 autocast"),
        ("train.bf16_channels_last", "bf16 + channels_last"),
        ("train.compile", "`torch.compile`"),
    ):
        r = rows[rid]
        if r.get("status", "ok") != "ok":
            lines.append(f"| {label} | {r['status']}: {r['reason']} | | | |")
            continue
        if rid == "train.compile":
            label += f" (compile {r['compile_s']:.0f} s)"
        lines.append(
            f"| {label} | {cell(rid)} | {r['median'] / plain:.2f}x | {fmt(r['gflops'])} "
            f"| {r['peak_rss_mib']:.0f} MiB |"
        )
    mm = rows["flops.matmul"]
    lines += [
        "",
        f"One training step is {fmt(result['flops']['train_step_gflop'])} GFLOP "
        f"(`FlopCounterMode`, forward + backward): {fmt(rows['flops.train_step']['median'])} "
        f"GFLOP/s achieved, {ratio['ratio.achieved_matmul']:.2f} of the machine's fp32 matmul "
        f"({fmt(mm['median'])} GFLOP/s, 2048^3). Prediction at 1918x1280 (model at "
        f"{rows['predict.full']['what'].split('model at ')[1].split(' ')[0]}, batch 4, "
        f"upsampling included): {cell('predict.full')} images/s.",
        "",
        "| memory: one training step | peak RSS | limit | |",
        "|---|---|---|---|",
    ]
    for m in result["memory"]:
        limit = "-" if m["limit_mib"] is None else f"{m['limit_mib'] / GIB_MIB:.0f} GiB"
        check = {True: "PASS", False: "FAIL", None: ""}[m["pass"]]
        lines.append(f"| {m['what']} | {m['peak_mib']:.0f} MiB | {limit} | {check} |")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or less")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results.json", help="the JSON file"
    )
    parser.add_argument("--data", help="a Carvana folder of full-size pairs (default: the sample)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure torch.compile (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="measure nothing: print the results file (--out) as markdown tables for a README",
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return 0
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return 0

    s = settings(args.quick, args.compile)
    with tempfile.TemporaryDirectory(prefix="carseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # A cold torch.compile every run, so the compile time means the same thing each time.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")
        import torch  # noqa: F401  (after the cache folder is set)

        root, source = find_data(s, tmp, args.data)
        env = environment(source)
        progress(f"data from {source}")
        with RssSampler() as sampler:
            data_rows, data_cmp = bench_data(s, root, tmp, sampler)
            train_rows, train_cmp, flops = bench_train(s, sampler, env["native_bf16"])
            predict_rows = bench_predict(s, root, sampler)
        memory = bench_memory(s)
    env["loadavg_end"] = os.getloadavg()[0]
    result = {
        "quick": s.quick,
        "repeats": s.repeats,
        "warmup": s.warmup,
        "env": env,
        "rows": data_rows + train_rows + predict_rows,
        "comparisons": data_cmp + train_cmp,
        "flops": flops,
        "memory": memory,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ru_maxrss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "wall_s": time.perf_counter() - _START,
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
