"""carseg's benchmark (``make bench``, ``make bench-gpu``): speed and memory, as a table and JSON.

The CPU run (the default) measures the data pipeline, the training step, its FLOP/s, prediction
and memory; ``--device cuda`` measures training on a GPU (bench_gpu.py). Both print an environment
header and a table, and write the same figures as JSON (``benchmarks/results.json``, or
``benchmarks/results_gpu.json`` for the GPU; ``--out``). ``--quick`` is a smoke run (fewer images
and repeats, tiny sizes, no ``torch.compile``) that the tests use; its figures are not comparable.

This file is the command line only; how it measures is harness.py's, and each benchmark has its
own file (README.md lists them). Run from anywhere:
``.venv/bin/python benchmarks/bench.py [--quick] [--device cuda] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

from bench_data import bench_data
from bench_gpu import bench_gpu
from bench_loop import bench_loop, loop_data
from bench_memory import bench_memory
from bench_predict import bench_predict
from bench_train import bench_train
from gpu_config import GpuSettings, cuda_missing, gpu_settings
from harness import REPO, RssSampler, Settings, elapsed_s, environment, progress, settings
from report import gpu_markdown, gpu_table, markdown, table

from fixtures import find_data

DEFAULT_OUT = {
    "cpu": REPO / "benchmarks" / "results.json",
    "cuda": REPO / "benchmarks" / "results_gpu.json",
}
MIN_SIDE = 16  # the U-Net halves a side 4 times


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; ``--out`` defaults by device, and GPU options need ``--device cuda``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or less")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: the CPU benchmark (default); cuda: the GPU benchmark (make bench-gpu)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the JSON file (default: benchmarks/results.json, or results_gpu.json with cuda)",
    )
    parser.add_argument("--data", help="a Carvana folder of full-size pairs (default: the sample)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure torch.compile (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--gpu-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="GPU training height and width (default 640 960; --quick: 64 96)",
    )
    parser.add_argument(
        "--gpu-batch", type=int, metavar="N", help="GPU training batch (default 4; --quick: 2)"
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="measure nothing: print the results file (--out) as markdown tables for a README",
    )
    args = parser.parse_args(argv)
    if args.device != "cuda" and (args.gpu_size or args.gpu_batch):
        parser.error("--gpu-size and --gpu-batch are options of --device cuda")
    if args.gpu_size and min(args.gpu_size) < MIN_SIDE:
        parser.error(f"--gpu-size: height and width must be at least {MIN_SIDE} pixels")
    if args.gpu_batch is not None and args.gpu_batch < 1:
        parser.error("--gpu-batch must be at least 1")
    args.out = args.out or DEFAULT_OUT[args.device]
    return args


def measure_cpu(s: Settings, tmp: Path, data: str | None) -> dict:
    """The six CPU benchmarks; the memory checks and the training loop's variants in child
    processes, after the others."""
    root, source = find_data(s.synthetic_cars, tmp, data)
    env = environment(source)
    progress(f"data from {source}")
    with RssSampler() as sampler:
        data_rows, data_cmp = bench_data(s, root, tmp, sampler)
        train_rows, train_cmp, flops = bench_train(s, sampler, env["native_bf16"])
        predict_rows = bench_predict(s, root, sampler)
    memory = bench_memory(s)
    loop_root, loop_source = loop_data(data, tmp) if not s.quick else (root, source)
    progress(f"loop: data from {loop_source}")
    loop_rows, loop_cmp = bench_loop(
        "carvana_cpu", loop_root, tmp, s.loop_steps, s.loop_rounds, s.loop_size
    )
    env["loop_data"] = loop_source
    return {
        "quick": s.quick,
        "repeats": s.repeats,
        "warmup": s.warmup,
        "env": env,
        "rows": data_rows + train_rows + predict_rows + loop_rows,
        "comparisons": data_cmp + train_cmp + loop_cmp,
        "flops": flops,
        "memory": memory,
    }


def measure_gpu(gs: GpuSettings, tmp: Path, data: str | None) -> dict:
    """The GPU benchmark's four sections."""
    root, source = find_data(gs.synthetic_cars, tmp, data)
    env = environment(source)
    progress(f"data from {source}")
    with RssSampler() as sampler:
        measured = bench_gpu(gs, root, tmp, sampler)
    env.update(measured.pop("gpu"))
    return {
        "device": "cuda",
        "quick": gs.quick,
        "repeats": gs.repeats,
        "warmup": gs.warmup,
        "env": env,
        **measured,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.markdown:
        result = json.loads(args.out.read_text())
        print(gpu_markdown(result) if result.get("device") == "cuda" else markdown(result))
        return 0
    if args.device == "cuda":
        missing = cuda_missing()
        if missing:  # before anything slow, and without a traceback: it is not a bug
            print(f"bench.py: {missing}", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="carseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # A cold torch.compile every run, so the compile time means the same thing each time
        # (inductor reads the folder when it first compiles, not when torch is imported).
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")
        if args.device == "cuda":
            gs = gpu_settings(args.quick, args.compile, args.gpu_size, args.gpu_batch)
            result = measure_gpu(gs, tmp, args.data)
        else:
            result = measure_cpu(settings(args.quick, args.compile), tmp, args.data)
    result["env"]["loadavg_end"] = os.getloadavg()[0]
    result["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["ru_maxrss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["wall_s"] = elapsed_s()
    print(gpu_table(result) if args.device == "cuda" else table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
