"""Benchmark 5, memory: peak RSS of one training step, each case in a fresh child process.

The child (this file run as a script, ``python bench_memory.py CASES_JSON``) has imported carseg
and Lightning, as a training run has, and nothing else of the benchmark: earlier rows' memory,
which the allocator keeps and ``ru_maxrss`` never forgets, does not count against its cases.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import RssSampler, Settings, progress, rss_mib, status_kib

from fixtures import default_model_config, fixed_batches


def memory_child(cases: list[dict]) -> None:
    """In a fresh process: one training step per case, smallest first; print peaks as JSON.

    A tiny step first creates Adam's state and loads the kernels, so the measured step has
    everything a later step of a real run has. Between cases, freed memory is handed back to the
    system (malloc_trim), so each case's peak is its own.
    """
    import torch
    import torch.nn.functional as F

    from carseg.training.segmentation_module import SegmentationModule

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
                    "hwm_mib": status_kib("/proc/self/status", "VmHWM") / 1024,
                    "step_s": seconds,
                }
            )
            del model, optimizer, x, y
            gc.collect()
            if trim:
                trim(0)
    print(json.dumps(results))


def bench_memory(s: Settings) -> list:
    """The ``memory.*`` results: peak RSS of one training step per case, limits checked."""
    cases = [
        {"id": i, "what": what, "height": h, "width": w, "batch": b, "limit_mib": limit}
        for i, what, h, w, b, limit in sorted(s.memory_cases, key=lambda c: c[2] * c[3] * c[4])
    ]
    progress(f"memory: {len(cases)} training steps in a child process")
    proc = subprocess.run(
        [sys.executable, __file__, json.dumps(cases)],
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


if __name__ == "__main__":
    memory_child(json.loads(sys.argv[1]))
