"""Benchmark 7 (CPU): each network's training speed at each size, with this CPU's own kernels
and with AVX2 kernels only, so a time budget can be turned into a number of training images on a
CPU without AMX or AVX-512 BF16.

A figure is benchmark 6's "model alone": the recipe's network, loss and Adam step on random
tensors at its batch, layout and precision (bf16 where the CPU computes it natively, fp32
elsewhere and always under ``--isa avx2``), in a fresh child process. The nets and sizes
alternate over the rounds, so a noisy minute slows all of them alike; a figure is the median of
every timed step of every round.

    python benchmarks/bench_nets.py [--recipe carvana_cpu] [--isa native avx2] [--steps 8]
        [--rounds 2] [--out benchmarks/results_nets.json]
    python benchmarks/bench_nets.py --markdown      # print the saved result
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_loop import CHILD_TIMEOUT_S, ISAS, compose, loop_data
from harness import REPO, environment, progress

# (id, overrides of the recipe): the nets a CPU recipe chooses between
NETS = (
    ("unet16", ["model/net=unet"]),
    ("lite0_w8", ["model/net=efficientnet_lite0_unet_cpu"]),
    ("lite0_w16", ["model/net=efficientnet_lite0_unet"]),
)
SIZES = ((160, 240), (256, 384), (320, 480))
WARMUP = 3


def measure(recipe: str, root: Path, tmp: Path, isas: list[str], steps: int, rounds: int):
    per_step: dict[tuple, list[float]] = {}
    for r in range(rounds):
        for isa in isas:
            for net, overrides in NETS:
                for h, w in SIZES:
                    key = (isa, net, h, w)
                    progress(f"nets: round {r + 1}/{rounds}, {isa} {net} {h}x{w}")
                    spec = {
                        "recipe": recipe, "root": str(root), "cache_dir": str(tmp / "cache"),
                        "overrides": [*overrides, *(
                            ["trainer.precision=32-true"] if isa != "native" else [])],
                        "kind": "model", "warmup": WARMUP, "steps": steps, "size": [h, w],
                        "run_dir": str(tmp / "runs" / f"{isa}-{net}-{h}-{r}"),
                    }  # fmt: skip
                    env = {**os.environ, **ISAS.get(isa, {})}
                    proc = subprocess.run(
                        [sys.executable, str(REPO / "benchmarks" / "bench_loop.py"), "--child",
                         json.dumps(spec)],
                        capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=REPO,
                        env=env,
                    )  # fmt: skip
                    if proc.returncode != 0:
                        raise RuntimeError(f"bench_nets child {key} failed:\n{proc.stderr[-3000:]}")
                    times = json.loads(proc.stdout.strip().splitlines()[-1])["step_s"][WARMUP:]
                    per_step.setdefault(key, []).extend(times)
    return per_step


def markdown(result: dict) -> str:
    env = result["env"]
    lines = [
        f"{env['cpu']} ({' '.join(env['cpu_isa'])}), {env['cpus_usable']} cores; training "
        f"images/s of the model alone, batch {result['batch']}; native: "
        f"{'bf16' if env['native_bf16'] else 'fp32'}, avx2: fp32 with AVX2 kernels only",
        "",
        "| kernels | net | size | images/s | images in 10 min |",
        "|---|---|---|---:|---:|",
    ]
    for row in result["rows"]:
        h, w = row["size"]
        lines.append(
            f"| {row['isa']} | {row['net']} | {h}x{w} | {row['images_per_s']:.2f} | "
            f"{row['images_per_s'] * 600:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="carvana_cpu")
    parser.add_argument("--isa", nargs="+", default=["native", "avx2"], choices=["native", *ISAS])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per net, size and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_nets.json")
    parser.add_argument("--markdown", action="store_true", help="print --out as markdown")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    with tempfile.TemporaryDirectory(prefix="carseg-bench-nets-") as name:
        tmp = Path(name)
        root, source = loop_data(None, tmp)
        env = environment(source)
        per_step = measure(args.recipe, root, tmp, args.isa, args.steps, args.rounds)
        # the recipe's batch, which every child trained at
        batch = compose(
            args.recipe, str(root), str(tmp / "cache"), [], str(tmp / "x")
        ).data.batch_size
    rows = [
        {"isa": isa, "net": net, "size": [h, w], "steps": len(times),
         "images_per_s": batch / statistics.median(times)}
        for (isa, net, h, w), times in per_step.items()
    ]  # fmt: skip
    env["loadavg_end"] = os.getloadavg()[0]
    result = {"env": env, "batch": batch, "recipe": args.recipe, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
