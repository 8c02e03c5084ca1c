"""The GPU benchmark (``make bench-gpu``, ``bench.py --device cuda``): what training costs on a GPU.

Measured the CPU benchmark's way (harness.py: medians of timed runs after warm-up, the compared
variants interleaved in one process), the issue's U-Net (gpu_config.py) in four sections:

1. matmul: the GPU's bf16 and fp16 TFLOP/s (8192^3, timed with CUDA events), the peak that
   training's achieved TFLOP/s are a fraction of;
2. grid: the plain PyTorch loop over fixed random GPU tensors in every precision x layout x
   compile: steady images/s, the TFLOP/s that is (FlopCounterMode's count of a step times
   images/s), peak GPU memory, and compile time apart;
3. Lightning: ``Trainer.fit`` of ``SegmentationModule`` against the plain loop with the same
   model, batch, precision, layout and compile, for the grid's fastest combination and the GPU
   recipe's default: what Lightning costs;
4. loader: the project's loader (``CarvanaDataModule``) at the training size and at full size,
   against the images/s that training consumes.

A variant that fails (a compile error, out of memory) becomes a failed row with its reason: one
broken combination must not cost the other figures of a long run.
"""

from __future__ import annotations

import gc
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import NamedTuple

from gpu_config import (
    MODEL_OVERRIDES,
    Combo,
    GpuSettings,
    gpu_model_config,
    grid,
    lightning_combos,
)
from gpu_runs import GpuPeaks, Make, Run, lightning_fit, loader_variant, matmul, plain_loop
from harness import RssSampler, Variant, first_call, interleaved, progress, row

from fixtures import fixed_batches, quiet_lightning, train_step_flops

BUILD_TIMEOUT_S = 600  # building a variant (no compiling: that is its first call's)


class Entry(NamedTuple):
    """A training variant to prepare; ``fresh`` False when ``make`` reuses a compiled loop."""

    id: str
    what: str
    combo: Combo
    make: Make
    fresh: bool = True


def prepared(entry: Entry, peaks: GpuPeaks) -> tuple[Variant | None, dict]:
    """Build a variant and run it once (compiling it, for a compiled one) under a time limit.

    Returns the variant and ``{"status": "ok", "seconds": <first call>}``, or None and the
    failed row (status, reason) when building or the first call raised.
    """
    import torch

    made: list = []
    info = first_call(lambda: made.append(entry.make()), timeout_s=BUILD_TIMEOUT_S)
    if info["status"] == "ok":
        prepare, run = made[0]

        def before() -> None:
            if prepare is not None:
                prepare()
            peaks.reset(entry.id)

        info = first_call(lambda: (before(), run()))
        if info["status"] == "ok":
            return Variant(entry.id, entry.what, run, before), info
    made.clear()
    gc.collect()
    torch.cuda.empty_cache()
    progress(f"{entry.id}: {info['reason']}")
    return None, {"id": entry.id, "what": entry.what, "unit": "images/s", **info}


def training_row(
    r: dict,
    combo: Combo,
    first_s: float | None,
    flop_per_image: float,
    peak_tflops: float | None,
    gpu_peak_mib: float,
    images_per_call: int,
) -> dict:
    """A measured training row with what it achieves: TFLOP/s, the fraction of the bf16 matmul
    peak, peak GPU memory, and for a freshly compiled variant (``first_s``: its first call's
    seconds, for ``images_per_call`` images) the compile time: the first call less the time of
    its images at the steady rate."""
    tflops = r["median"] * flop_per_image / 1e12
    r.update(
        precision=combo.precision, channels_last=combo.channels_last, compile=combo.compile,
        tflops=tflops, of_peak=tflops / peak_tflops if peak_tflops else None,
        gpu_peak_mib=gpu_peak_mib, first_call_s=first_s,
    )  # fmt: skip
    if combo.compile and first_s is not None:
        r["compile_s"] = max(0.0, first_s - images_per_call / r["median"])
        r["note"] = "; ".join(filter(None, [r["note"], f"compile {r['compile_s']:.0f} s"]))
    return r


def _fails(reason: str) -> tuple[None, Run]:
    raise RuntimeError(reason)


def fastest_combo(rows: list[dict]) -> Combo | None:
    """The combination of the fastest measured training row, or None if none ran."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["median"])
    return Combo(best["precision"], best["channels_last"], best["compile"])


class _Training:
    """Sections 2 and 3: one set of fixed GPU batches, the plain loops, the Lightning fits."""

    def __init__(self, gs: GpuSettings, sampler: RssSampler, flop_per_image: float,
                 peak_tflops: float | None) -> None:  # fmt: skip
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        self.gs, self.sampler = gs, sampler
        self.flop_per_image, self.peak_tflops = flop_per_image, peak_tflops
        images, masks = fixed_batches(gs.skip_steps + gs.steps, gs.batch, gs.size)
        data = TensorDataset(images.cuda(), masks.cuda())
        self.loader = DataLoader(data, batch_size=gs.batch, shuffle=False)
        self.peaks = GpuPeaks()
        self.plain_runs: dict[Combo, Run] = {}
        self.failed: dict[Combo, str] = {}  # the grid's failures, not tried again
        self.shape = f"{gs.size[0]}x{gs.size[1]} b{gs.batch}"
        torch.backends.cudnn.benchmark = False  # Lightning's default (benchmark=None): both sides

    def plain(self, combo: Combo) -> tuple[None, Run]:
        self.plain_runs[combo] = plain_loop(combo, self.gs, self.loader, self.peaks)
        return None, self.plain_runs[combo]

    def section(self, name: str, entries: list[Entry]) -> list[dict]:
        """Prepare every entry, interleave those that ran, and return every entry's row."""
        variants, firsts, out = [], {}, {}
        for e in entries:
            progress(f"{name}: preparing {e.id} (its first call compiles it, if it compiles)")
            v, info = prepared(e, self.peaks)
            if v is None:
                out[e.id] = info
                self.plain_runs.pop(e.combo, None)
                self.failed.setdefault(e.combo, info["reason"])
            else:
                variants.append(v)
                firsts[e.id] = info["seconds"] if e.fresh else None
        if variants:
            interleaved(variants, self.gs, self.sampler, name)
        combos = {e.id: e.combo for e in entries}
        for v in variants:
            out[v.id] = training_row(
                row(v, "images/s", self.sampler), combos[v.id], firsts[v.id],
                self.flop_per_image, self.peak_tflops, self.peaks.mib.get(v.id, 0.0),
                (self.gs.skip_steps + self.gs.steps) * self.gs.batch,
            )  # fmt: skip
        return [out[e.id] for e in entries]

    def grid_rows(self) -> list[dict]:
        return self.section("gpu grid", [
            Entry(f"gpu.grid.{c.name}", f"plain {self.shape}: {c.label}", c,
                  partial(self.plain, c))
            for c in grid(self.gs.compile)
        ])  # fmt: skip

    def lightning_rows(self, combos: list[Combo]) -> tuple[list[dict], list[dict]]:
        """Lightning and the plain loop, per combination, interleaved; rows and ratios."""
        import torch

        for c in [c for c in self.plain_runs if c not in combos]:
            del self.plain_runs[c]  # frees the other models' GPU memory
        gc.collect()
        torch.cuda.empty_cache()
        entries = []
        for c in combos:
            fit = partial(lightning_fit, c, self.gs, self.loader, self.peaks)
            entries.append(Entry(f"gpu.lightning.{c.name}", f"Lightning {self.shape}: {c.label}",
                                 c, fit))  # fmt: skip
            run = self.plain_runs.get(c)  # the grid's, compiled already: no compile time here
            make: Make = (lambda run=run: (None, run)) if run else partial(self.plain, c)
            if c in self.failed:  # a compile failure would only cost its time limit again
                make = partial(_fails, f"as in the grid: {self.failed[c]}")
            what = f"plain {self.shape}: {c.label}"
            entries.append(Entry(f"gpu.plain.{c.name}", what, c, make, fresh=run is None))
        rows = self.section("gpu lightning", entries)
        by_id = {r["id"]: r for r in rows if r["status"] == "ok"}
        ratios = []
        for c in combos:
            fit, loop = by_id.get(f"gpu.lightning.{c.name}"), by_id.get(f"gpu.plain.{c.name}")
            if fit and loop:
                ratios.append({
                    "id": f"ratio.gpu.lightning_plain.{c.name}", "section": "gpu.lightning",
                    "what": f"Lightning / plain loop, {c.label}",
                    "value": fit["median"] / loop["median"],
                })  # fmt: skip
        return rows, ratios

    def close(self) -> None:
        import torch

        self.plain_runs.clear()
        del self.loader
        gc.collect()
        torch.cuda.empty_cache()


def loader_section(
    gs: GpuSettings, root: Path, tmp: Path, sampler: RssSampler, fastest: dict | None
) -> tuple[list[dict], list[dict]]:
    """Section 4: the loader's images/s at each size, and each over the fastest training's."""
    progress("gpu loader: setting up the data modules (not timed)")
    loaders = [loader_variant(gs, size, root, tmp) for size in gs.loader_sizes]
    interleaved(loaders, gs, sampler, "gpu loader")
    rows, ratios = [], []
    h, w = gs.size
    for v in loaders:
        rows.append(row(v, "images/s", sampler))
        if fastest is not None:
            ratios.append({
                "id": f"ratio.gpu.loader_train.{v.id.rsplit('.', 1)[1]}", "section": "gpu.loader",
                "what": f"{v.what.split(' b')[0]} / fastest training at {h}x{w} ({fastest['id']})",
                "value": rows[-1]["median"] / fastest["median"],
            })  # fmt: skip
    del loaders  # shuts the persistent workers down
    gc.collect()
    return rows, ratios


def bench_gpu(gs: GpuSettings, root: Path, tmp: Path, sampler: RssSampler) -> dict:
    """All four sections: the result's rows, comparisons, FLOP count and GPU description."""
    import torch

    from carseg.training.segmentation_module import SegmentationModule

    quiet_lightning()
    # Every compiled variant adds a set of guards on UNet.forward: keep them all compiled.
    torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
    base = SegmentationModule(**gpu_model_config())
    params_m = sum(p.numel() for p in base.parameters()) / 1e6
    flop_per_image = train_step_flops(base, gs.batch, gs.size) / gs.batch
    del base

    n, k = gs.matmul_n, gs.matmuls_per_run
    mm = [
        Variant(f"gpu.matmul.{d}", f"{d} matmul {n}x{n} @ {n}x{n}", matmul(d, n, k),
                note=f"2*{n}^3 FLOP each, CUDA events")
        for d in ("bfloat16", "float16")
    ]  # fmt: skip
    interleaved(mm, gs, sampler, "gpu matmul")
    rows = [row(v, "TFLOP/s", sampler, scale=2 * n**3 / 1e12) for v in mm]
    peak_tflops = rows[0]["median"]  # bf16's
    del mm

    training = _Training(gs, sampler, flop_per_image, peak_tflops)
    grid_rows = training.grid_rows()
    fit_rows, comparisons = training.lightning_rows(
        lightning_combos(fastest_combo(grid_rows), gs.compile)
    )
    training.close()
    rows += grid_rows + fit_rows

    trained = [r for r in grid_rows + fit_rows if r["status"] == "ok"]
    fastest = max(trained, key=lambda r: r["median"]) if trained else None
    loader_rows, loader_ratios = loader_section(gs, root, tmp, sampler, fastest)
    h, w = gs.size
    return {
        "settings": {**asdict(gs), "model_overrides": MODEL_OVERRIDES, "params_m": params_m},
        "rows": rows + loader_rows,
        "comparisons": comparisons + loader_ratios,
        "flops": {
            "tflop_per_image": flop_per_image / 1e12,
            "train_step_tflop": flop_per_image * gs.batch / 1e12,
            "batch": gs.batch,
            "size": [h, w],
            "counted": "FlopCounterMode: convolutions and matmuls of one forward + backward",
        },
        "fastest": None if fastest is None else fastest["id"],
        "gpu": gpu_environment(),
    }


def gpu_environment() -> dict:
    """The GPU, its software, and the switches that change its figures (TF32, cuDNN autotune)."""
    import torch

    p = torch.cuda.get_device_properties(0)
    return {
        "gpu": p.name,
        "gpu_capability": f"{p.major}.{p.minor}",
        "gpu_memory_gib": p.total_memory / 2**30,
        "gpu_count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
