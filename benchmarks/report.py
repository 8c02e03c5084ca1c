"""The benchmarks' printers: the CPU run's and the GPU run's tables (stdout), and their figures
as the markdown tables of the project's README (``--markdown``, measuring nothing).

They read only a result dict (what results.json holds), so a results file prints again without
measuring, and the tests check them on made-up results.
"""

from __future__ import annotations

from harness import GIB_MIB


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def _ok(r: dict | None) -> bool:
    return r is not None and r.get("status", "ok") == "ok"


def _spread(r: dict) -> str:
    return f"{fmt(r['min'])}-{fmt(r['max'])}"


def _failed(r: dict, id_width: int, what_width: int) -> str:
    """The table line of a row that did not run (skipped or failed), with the reason."""
    return f"{r['id']:<{id_width}} {r['what']:<{what_width}} {r['status'].upper()}: {r['reason']}"


def _cell(r: dict | None) -> str:
    """A markdown cell: median (min-max), or why there is none."""
    if not _ok(r):
        return "-" if r is None else r["status"]
    return f"{fmt(r['median'])} ({_spread(r)})"


def _tail(result: dict) -> list[str]:
    """The last lines of a table: the process's peak memory and the wall time."""
    return [
        f"process ru_maxrss: {result['ru_maxrss_mib']:.0f} MiB (this process), "
        f"{result['ru_maxrss_children_mib']:.0f} MiB (largest child)",
        f"wall time: {result['wall_s']:.0f} s",
    ]


def table(result: dict) -> str:
    """The CPU run's header and table."""
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
            if not _ok(r):
                lines.append(_failed(r, 28, 58))
                continue
            spread = _spread(r)
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
    if any(r["id"].startswith("loop.") for r in result["rows"]):
        from bench_loop import table as loop_table

        lines += [loop_table(result), ""]
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
    lines += ["", *_tail(result)]
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
        return _cell(rows.get(rid))

    lines = [
        f"Measured {env['date'][:10]} ({env['commit']}): {env['cpu']}, {env['cpus_usable']} "
        f"cores ({'native bf16' if env['native_bf16'] else 'no native bf16'}), torch "
        f"{env['torch']}, {env['torch_threads']} threads; load average {env['loadavg_start']:.1f}"
        f" at the start. Medians of {result['repeats']} runs (min-max).",
        "",
        "| data, images/s (1 process) | plain | JPEG draft | draft + masks decoded once (default) "
        "| cache | DataLoader, 2 workers | default / plain | cache / plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("quarter", "1/4 scale, 320x480"), ("half", "1/2 scale, 640x960")):
        lines.append(
            f"| {label} | {cell(f'data.{name}.plain')} | {cell(f'data.{name}.draft')} "
            f"| {cell(f'data.{name}.store')} | {cell(f'data.{name}.cache')} "
            f"| {cell(f'data.{name}.loader')} | {ratio[f'speedup.{name}.store']:.2f}x "
            f"| {ratio[f'speedup.{name}.cache']:.2f}x |"
        )
    if "data.full.plain" in rows:
        lines.append(
            f"| full size, 1024x1024 crops (no resize) | {cell('data.full.plain')} | - "
            f"| {cell('data.full.store')} | - | - | {ratio['speedup.full.store']:.2f}x | - |"
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
        if not _ok(r):
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
    if any(r["id"].startswith("loop.") for r in result["rows"]):
        from bench_loop import markdown as loop_markdown

        lines += ["", loop_markdown(result)]
    return "\n".join(lines)


# --- the GPU run ---------------------------------------------------------------------------------

GPU_ID, GPU_WHAT = 46, 56  # column widths: gpu.lightning.bf16-mixed.channels_last.compile


def _gpu_line(r: dict, baseline: float | None) -> str:
    """A measured GPU row: figures, and for training rows TFLOP/s, share of the bf16 matmul
    peak, speed over the fp32 NCHW eager loop and peak GPU memory."""
    line = f"{r['id']:<{GPU_ID}} {r['what']:<{GPU_WHAT}} {fmt(r['median']):>9} {_spread(r):>15} "
    line += f"{r['unit']:<9}"
    if "tflops" in r:
        of_peak = "-" if r["of_peak"] is None else f"{r['of_peak']:.0%}"
        speed = "-" if not baseline else f"{r['median'] / baseline:.2f}x"
        line += (
            f" {fmt(r['tflops']):>7} {of_peak:>7} {speed:>8} "
            f"{r['gpu_peak_mib'] / GIB_MIB:>6.1f} GiB"
        )
    note = r.get("note", "")
    if "workers_peak_rss_mib" in r:
        note = "; ".join(filter(None, [note, f"+ workers {r['workers_peak_rss_mib']:.0f} MiB RSS"]))
    return line + (f"  {note}" if note else "")


def gpu_table(result: dict) -> str:
    """The GPU run's header and table."""
    env, st, fl = result["env"], result["settings"], result["flops"]
    h, w = st["size"]
    overrides = " ".join(f"{k}={v}" for k, v in st["model_overrides"].items())
    lines = [
        "carseg GPU benchmark" + (" (--quick: smoke run, figures not comparable)"
                                  if result["quick"] else ""),
        f"date {env['date']}  commit {env['commit']}  python {env['python']}",
        f"torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']})  lightning "
        f"{env['lightning']}  gpu {env['gpu']} (capability {env['gpu_capability']}, "
        f"{env['gpu_memory_gib']:.0f} GiB, {env['gpu_count']} visible)",
        f"cpu {env['cpu']}  usable cpus {env['cpus_usable']}  load average "
        f"{env['loadavg_start']:.2f} at start, {env['loadavg_end']:.2f} at end",
        f"model: conf/model/unet.yaml + {overrides}: {st['params_m']:.1f} M parameters; training "
        f"{h}x{w}, batch {st['batch']}, on fixed random GPU tensors",
        f"cuDNN benchmark {env['cudnn_benchmark']}, TF32 convolutions {env['cudnn_allow_tf32']}, "
        f"float32 matmul precision {env['float32_matmul_precision']}; data: {env['data']}",
        f"medians of {result['repeats']} timed runs after {result['warmup']} warm-up run (3 for "
        "variants over 3x slower than their group's median); a training run is "
        f"{st['steps']} timed steps after {st['skip_steps']} untimed; variants of a section "
        "interleaved",
        "",
    ]  # fmt: skip
    rows = result["rows"]
    base = next((r for r in rows if r["id"] == "gpu.grid.32-true.nchw.eager" and _ok(r)), None)
    baseline = base["median"] if base else None
    header = f"{'row':<{GPU_ID}} {'what':<{GPU_WHAT}} {'median':>9} {'min-max':>15} {'unit':<9}"
    training = f" {'TFLOP/s':>7} {'of peak':>7} {'vs fp32':>8} {'peak GPU':>10}"
    sections = [
        ("1. matmul peak (CUDA events)", ("gpu.matmul.",), "gpu.matmul"),
        ("2. training grid: plain PyTorch loop (fused Adam), steady state, compile time apart",
         ("gpu.grid.",), "gpu.grid"),
        ("3. Lightning Trainer.fit against the plain loop (same model, batch, precision, layout, "
         "compile)", ("gpu.lightning.", "gpu.plain."), "gpu.lightning"),
        ("4. data loader (CarvanaDataModule's training loader, batches copied to the GPU) "
         "against training", ("gpu.loader.",), "gpu.loader"),
    ]  # fmt: skip
    for title, prefixes, section in sections:
        columns = header + (training if section in ("gpu.grid", "gpu.lightning") else "")
        lines += [title, columns.rstrip()]
        for r in rows:
            if r["id"].startswith(prefixes):
                lines.append(_gpu_line(r, baseline) if _ok(r) else _failed(r, GPU_ID, GPU_WHAT))
        if section == "gpu.grid" and result.get("fastest"):
            lines.append(f"  fastest training: {result['fastest']}")
        for c in result["comparisons"]:
            if c["section"] == section:
                lines.append(f"  {c['what']}: {c['value']:.2f}x")
        lines.append("")
    lines += [
        f"one training step: {fl['train_step_tflop']:.2f} TFLOP ({fl['tflop_per_image']:.3f} per "
        f"image; {fl['counted']}); 'of peak': achieved TFLOP/s over the bf16 matmul's",
        "peak GPU: max_memory_allocated of the variant alone (the other variants' models "
        "subtracted; CUDA context not included)",
        *_tail(result),
    ]
    return "\n".join(lines)


def gpu_markdown(result: dict) -> str:
    """The GPU run's figures as markdown tables, for the project's README."""
    env, st = result["env"], result["settings"]
    h, w = st["size"]
    rows = [r for r in result["rows"] if r["id"].startswith(("gpu.grid.", "gpu.lightning."))]
    matmul = {r["id"]: r for r in result["rows"] if r["id"].startswith("gpu.matmul.")}
    lines = [
        f"Measured {env['date'][:10]} ({env['commit']}): {env['gpu']}, torch {env['torch']} "
        f"(CUDA {env['cuda']}), {st['params_m']:.1f} M-parameter U-Net at {h}x{w}, batch "
        f"{st['batch']}, random GPU tensors. Medians of {result['repeats']} runs (min-max).",
        "",
        "| training | images/s | TFLOP/s | of bf16 peak | peak GPU | compile |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not _ok(r):
            lines.append(f"| {r['what']} | {r['status']}: {r['reason']} | | | | |")
            continue
        of_peak = "-" if r["of_peak"] is None else f"{r['of_peak']:.0%}"
        compiled = f"{r['compile_s']:.0f} s" if "compile_s" in r else ""
        lines.append(
            f"| {r['what']} | {_cell(r)} | {fmt(r['tflops'])} | {of_peak} "
            f"| {r['gpu_peak_mib'] / GIB_MIB:.1f} GiB | {compiled} |"
        )
    lines += [
        "",
        f"Matmul peak ({st['matmul_n']}^3): bf16 {_cell(matmul.get('gpu.matmul.bfloat16'))}, "
        f"fp16 {_cell(matmul.get('gpu.matmul.float16'))} TFLOP/s.",
    ]
    lines += [f"{c['what']}: {c['value']:.2f}x." for c in result["comparisons"]]
    return "\n".join(lines)
