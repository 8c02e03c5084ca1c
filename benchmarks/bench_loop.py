"""Benchmark 6 (CPU): the training loop against the model alone, at a recipe's size, batch and
precision.

"The model" is the recipe's network, loss and Adam step on random tensors in its layout and
precision, nothing else: what the CPU allows. "The loop" is what ``train.py`` runs: the recipe's
data module (cached frames or JPEGs decoded every epoch, loader workers or none, augmentation),
Lightning's fit with the recipe's callbacks, logger and progress bar. A step of the loop is the
time from one training batch's end to the next (loading included); the validation a run ends
with is not counted. The ratio loop / model says what the loop costs.

Each variant runs in a fresh child process (``python bench_loop.py --child VARIANT_JSON``), as a
run of ``train.py`` does: the loader workers, the thread pool
are its own. Variants alternate over the rounds, so a noisy minute slows all of them alike; a
figure is the median of every timed step of every round, its spread the rounds' medians.

On its own: ``python benchmarks/bench_loop.py [--recipe carvana_cpu] [--data DIR] [--steps N]
[--rounds R] [--out FILE]`` prints this section and writes its JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, environment, progress

from fixtures import find_data

CHILD_TIMEOUT_S = 1800
# --isa: the environment that limits PyTorch's and oneDNN's kernels to an instruction set
ISAS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}
TARGET = 0.9  # the loop's images/s, at least this share of the model's
DEV_DIR = Path(os.environ.get("CARSEG_DEV_DIR", REPO.parent / "shared" / "carvana_dev"))

# (id, what, kind, overrides, untimed steps: the first ones load kernels and start the workers)
VARIANTS = (
    ("loop.model", "the model alone: random tensors, forward + backward + Adam", "model", [], 4),
    ("loop.cached_w0", "train.py: cached frames, loaded in the training process", "loop",
     ["data.cache=true", "data.num_workers=0"], 4),
    ("loop.cached_w1", "train.py: cached frames, 1 loader worker", "loop",
     ["data.cache=true", "data.num_workers=1"], 4),
    ("loop.jpeg_w0", "train.py: JPEGs decoded every epoch, in the training process", "loop",
     ["data.cache=false", "data.num_workers=0"], 4),
    ("loop.jpeg_w1", "train.py: JPEGs decoded every epoch, 1 loader worker", "loop",
     ["data.cache=false", "data.num_workers=1"], 4),
)  # fmt: skip


def compose(recipe: str, root: str, cache_dir: str, overrides: list[str], run_dir: str):
    """``conf/train.yaml`` with ``experiment=<recipe>`` on ``root``, its run in ``run_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import carseg.runs.entrypoint  # noqa: F401  (the resolvers conf/ uses)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(
            "train",
            overrides=[
                f"experiment={recipe}",
                f"data.root={root}",
                f"data.cache_dir={cache_dir}",
                f"paths.output_dir={run_dir}",
                *overrides,
            ],
        )


def child(variant: dict) -> dict:
    """In a fresh process: time ``warmup + steps`` training steps of one variant."""
    cfg = compose(
        variant["recipe"],
        variant["root"],
        variant["cache_dir"],
        variant["overrides"],
        variant["run_dir"],
    )
    if variant["size"]:
        h, w = variant["size"]
        cfg.data.size = [h, w]
    total = variant["warmup"] + variant["steps"]
    if variant["kind"] == "model":
        return {"step_s": _model_steps(cfg, total)}
    return {"step_s": _loop_steps(cfg, total)}


def _model_steps(cfg, total: int) -> list[float]:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from carseg.training.optim import build_optimizer
    from carseg.training.trainer import resolve_trainer_config

    trainer_cfg = resolve_trainer_config(OmegaConf.to_container(cfg.trainer, resolve=True))
    bf16 = trainer_cfg["precision"] == "bf16-mixed"
    model = instantiate(cfg.model, _convert_="all").place_on("cpu")
    model.train()
    optimizer = build_optimizer(model.hparams.optimizer, model.parameters())
    h, w = cfg.data.size
    b = cfg.data.batch_size
    torch.manual_seed(0)
    images = torch.randn(b, 3, h, w)
    masks = (torch.rand(b, 1, h, w) > 0.5).float()
    times = []
    for _ in range(total):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.criterion(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def _loop_steps(cfg, total: int) -> list[float]:
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from carseg.training.train import build

    OmegaConf.set_struct(cfg, False)
    cfg.trainer.num_sanity_val_steps = 0
    ends: list[float] = []

    class StepClock(pl.Callback):
        """Times the steps, and ends the fit after ``total`` of them: the recipe's own budget
        and schedule stay as they are (a max_steps would anneal the rate over these steps)."""

        def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
            ends.append(time.perf_counter())
            if len(ends) >= total:
                trainer.should_stop = True

    run = build(cfg)
    run.trainer.callbacks.append(StepClock())
    run.trainer.fit(model=run.model, datamodule=run.datamodule)
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def bench_loop(
    recipe: str,
    root: Path,
    tmp: Path,
    steps: int,
    rounds: int,
    size: tuple[int, int] | None,
    extra: list[str] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Rows ``loop.*`` and the loop / model ratios; ``extra``: overrides for every variant."""
    per_step: dict[str, list[float]] = {v[0]: [] for v in VARIANTS}
    round_medians: dict[str, list[float]] = {v[0]: [] for v in VARIANTS}
    for r in range(rounds):
        for vid, _what, kind, overrides, warmup in VARIANTS:
            progress(f"loop: round {r + 1}/{rounds}, {vid}")
            spec = {
                "recipe": recipe, "root": str(root), "cache_dir": str(tmp / "cache"),
                "overrides": [*overrides, *(extra or [])], "kind": kind, "warmup": warmup,
                "steps": steps,
                "size": list(size) if size else None, "run_dir": str(tmp / "runs" / f"{vid}-{r}"),
            }  # fmt: skip
            proc = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)],
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                cwd=REPO,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"bench_loop child {vid} failed:\n{proc.stderr[-3000:]}")
            times = json.loads(proc.stdout.strip().splitlines()[-1])["step_s"][warmup - 1 :]
            per_step[vid] += times
            round_medians[vid].append(statistics.median(times))
    cfg = compose(recipe, str(root), str(tmp / "cache"), [], str(tmp / "runs" / "x"))
    batch = cfg.data.batch_size
    h, w = size or tuple(cfg.data.size)
    rows = []
    for vid, what, kind, _, _ in VARIANTS:
        rates = [batch / t for t in round_medians[vid]]
        rows.append(
            {
                "id": vid, "what": what, "kind": kind, "unit": "images/s", "status": "ok",
                "median": batch / statistics.median(per_step[vid]),
                "min": min(rates), "max": max(rates), "steps": len(per_step[vid]),
                "size": [h, w], "batch": batch, "recipe": recipe,
            }
        )  # fmt: skip
    by_id = {r["id"]: r for r in rows}

    def ratio(rid: str, baseline: str, target: float | None) -> dict:
        value = by_id[rid]["median"] / by_id[baseline]["median"]
        return {"id": f"ratio.{rid}", "section": "loop", "what": f"{rid} / {baseline}",
                "value": value, "target": target,
                "pass": None if target is None else value >= target}  # fmt: skip

    comparisons = [ratio(r["id"], "loop.model", TARGET) for r in rows if r["kind"] == "loop"]
    return rows, comparisons


def loop_data(override: str | None, tmp: Path) -> tuple[Path, str]:
    """Enough training batches for an epoch longer than the timed steps: ``--data``, the 16
    real cars of ``../shared/carvana_dev``, else the sample or a generated set."""
    if override is None and (DEV_DIR / "train").is_dir():
        return DEV_DIR.resolve(), f"real Carvana dev set {DEV_DIR.resolve()}"
    return find_data(4, tmp, override)


def table(result: dict) -> str:
    """This section's lines, as ``bench.py`` prints them."""
    rows = [r for r in result["rows"] if r["id"].startswith("loop.")]
    first = rows[0]
    lines = [
        f"6. the training loop against the model ({first['recipe']}: {first['size'][0]}x"
        f"{first['size'][1]}, batch {first['batch']}; median of every timed step, min-max of the "
        "rounds' medians; each variant a fresh process)",
        f"{'row':<28} {'what':<62} {'median':>9} {'min-max':>15} {'unit':<9}",
    ]
    for r in rows:
        lines.append(
            f"{r['id']:<28} {r['what']:<62} {r['median']:>9.2f} "
            f"{r['min']:>7.2f}-{r['max']:<7.2f} {r['unit']:<9}"
        )
    for c in (c for c in result["comparisons"] if c["section"] == "loop"):
        target = ""
        if c["target"] is not None:
            target = f" (target >= {c['target']}x: {'PASS' if c['pass'] else 'FAIL'})"
        lines.append(f"  {c['what']}: {c['value']:.2f}x{target}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """This section as a markdown table, for the README."""
    rows = [r for r in result["rows"] if r["id"].startswith("loop.")]
    model = rows[0]["median"]
    h, w = rows[0]["size"]
    lines = [
        f"| {rows[0]['recipe']}, {h}x{w}, batch {rows[0]['batch']} | images/s | vs the model |",
        "|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}) "
            f"| {r['median'] / model:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="carvana_cpu", help="conf/experiment/<recipe>.yaml")
    parser.add_argument("--data", help="a Carvana folder (default: ../shared/carvana_dev)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the variants")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="another size")
    parser.add_argument(
        "--isa",
        choices=tuple(ISAS),
        help="PyTorch's and oneDNN's kernels for this instruction set only, in fp32: what a CPU "
        "without AMX and AVX-512 BF16 runs, on this CPU's cores (their clock and caches stay)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_loop.json")
    parser.add_argument(
        "--markdown", action="store_true", help="measure nothing: print --out as markdown"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        result = json.loads(args.out.read_text())
        print(f"{result['env']['cpu']}, kernels: {result['env'].get('kernels', 'native')}\n")
        print(markdown(result))
        return 0
    if args.isa:  # the children inherit these
        os.environ.update(ISAS[args.isa])
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    with tempfile.TemporaryDirectory(prefix="carseg-bench-loop-") as name:
        tmp = Path(name)
        root, source = loop_data(args.data, tmp)
        env = environment(source)
        rows, comparisons = bench_loop(
            args.recipe,
            root,
            tmp,
            args.steps,
            args.rounds,
            tuple(args.size) if args.size else None,
            ["trainer.precision=32-true"] if args.isa else [],
        )
    limits = " ".join(f"{k}={v}" for k, v in ISAS[args.isa].items()) if args.isa else ""
    env["kernels"] = f"{args.isa} only ({limits}), fp32" if args.isa else "native"
    env["loadavg_end"] = os.getloadavg()[0]
    result = {"env": env, "rows": rows, "comparisons": comparisons}
    print(
        f"cpu {env['cpu']}  isa {' '.join(env['cpu_isa'])}  native bf16 {env['native_bf16']}  "
        f"kernels {env['kernels']}  "
        f"load average {env['loadavg_start']:.2f} -> {env['loadavg_end']:.2f}  data: {source}"
    )
    print(table(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
