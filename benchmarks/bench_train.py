"""Benchmarks 2 and 3 on the CPU: training images/s and the FLOP/s they achieve.

Lightning's ``Trainer.fit`` against a plain PyTorch loop over the same batches (what Lightning
costs), then the plain loop's speed switches (channels_last, bf16 autocast, torch.compile), and a
matmul beside them (what the CPU can do), all interleaved.
"""

from __future__ import annotations

import copy
import statistics

from harness import RssSampler, Settings, Variant, first_call, interleaved, progress, row

from fixtures import (
    BARE_FIT,
    default_model_config,
    fixed_batches,
    quiet_lightning,
    train_step_flops,
)


def bench_train(s: Settings, sampler: RssSampler, native_bf16: bool) -> tuple[list, list, dict]:
    """Rows ``train.*`` and ``flops.*``, their comparisons, and the FLOP count of a step."""
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from carseg.training.segmentation_module import SegmentationModule

    quiet_lightning()

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
                accelerator="cpu", devices=1, limit_train_batches=s.steps_per_run, **BARE_FIT
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
            model.parameters(),
            lr=cfg["optimizer"]["lr"],
            weight_decay=cfg["optimizer"]["weight_decay"],
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

        def compile_and_step() -> None:
            with sampler.row("train.compile"):
                compiled_run()

        compile_info = first_call(compile_and_step)
        if compile_info["status"] == "ok":
            compile_info = {"status": "ok", "first_step_s": compile_info["seconds"]}
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

    flop_per_image = train_step_flops(base, b, s.train_size) / b

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
