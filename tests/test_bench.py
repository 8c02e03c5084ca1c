"""The benchmarks (`make bench`, `make bench-gpu`): every row runs and is reported; no speed is
judged. The GPU benchmark cannot run here, so its parts that need no GPU are checked on the CPU
(options, the variant grid, the model and its FLOP count, rows and tables, the no-CUDA refusal),
and its sections run end to end on a CPU dressed up as a GPU."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
# The benchmark files are scripts importing each other by name, as `python benchmarks/bench.py`
# does; the tests import them the same way.
sys.path.insert(0, str(REPO / "benchmarks"))

import bench  # noqa: E402
import bench_gpu  # noqa: E402
import gpu_config  # noqa: E402
import report  # noqa: E402

from fixtures import default_model_config, train_step_flops  # noqa: E402

ROWS = [
    *(f"data.{scale}.{kind}" for scale in ("quarter", "half")
      for kind in ("plain", "draft", "store", "cache", "loader")),
    "data.full.plain",
    "data.full.store",
    "train.lightning",
    "train.plain_fp32",
    "train.channels_last",
    "train.bf16",
    "train.bf16_channels_last",
    "train.compile",
    "flops.matmul",
    "flops.train_step",
    "predict.full",
]  # fmt: skip
MEMORY = ["memory.make_train", "memory.quarter_b8", "memory.half_b4"]
# section 6: the training loop against the model, each variant a child process
LOOP = ["loop.model", "loop.cached_w0", "loop.cached_w1", "loop.jpeg_w0", "loop.jpeg_w1"]
COMPARISONS = [
    "speedup.quarter.draft",
    "speedup.quarter.store",
    "speedup.quarter.cache",
    "speedup.half.draft",
    "speedup.half.store",
    "speedup.half.cache",
    "speedup.full.store",
    "ratio.lightning_plain",
    "ratio.channels_last_fp32",
    "ratio.bf16_fp32",
    "ratio.bf16_channels_last_fp32",
    "ratio.achieved_matmul",
]


@pytest.mark.slow
def test_quick_benchmark_reports_every_row(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True

    rows = {r["id"]: r for r in result["rows"]}
    assert sorted(rows) == sorted(ROWS + LOOP)
    for rid in LOOP:
        r = rows.pop(rid)
        assert r["status"] == "ok" and 0 < r["min"] <= r["max"] and r["median"] > 0, r
        assert r["steps"] >= 1 and r["size"] == [64, 96], r
    loop_ratios = {c["what"]: c["value"] for c in result["comparisons"] if c["section"] == "loop"}
    assert set(loop_ratios) == {f"{rid} / loop.model" for rid in LOOP[1:]}
    assert all(v > 0 for v in loop_ratios.values())
    for rid, r in rows.items():
        if rid == "train.compile" and r["status"] != "ok":  # --quick skips the cold compile
            assert r["status"] in ("skipped", "failed") and r["reason"], r
            continue
        assert r["status"] == "ok", r
        assert 0 < r["min"] <= r["median"] <= r["max"], r
        assert len(r["runs"]) >= 2 and all(x > 0 for x in r["runs"]), r
        assert r["peak_rss_mib"] > 0, r
    assert rows["data.quarter.loader"]["workers_peak_rss_mib"] > 0
    assert all(rows[i]["gflops"] > 0 for i in ROWS if i.startswith("train.") and i in rows
               and rows[i]["status"] == "ok")  # fmt: skip

    comparisons = {c["id"]: c for c in result["comparisons"]}
    assert set(COMPARISONS) <= set(comparisons)
    assert all(c["value"] > 0 for c in comparisons.values())
    assert result["flops"]["train_step_gflop"] > 0

    memory = {m["id"]: m for m in result["memory"]}
    assert sorted(memory) == sorted(MEMORY)
    for m in memory.values():
        assert 0 < m["baseline_rss_mib"] <= m["peak_mib"], m
        assert m["step_s"] > 0, m
    assert result["ru_maxrss_mib"] > 0

    env = result["env"]
    assert env["torch"] and env["cpu"] and env["date"] and env["torch_threads"] > 0

    table = proc.stdout
    for rid in [*ROWS, *MEMORY, *LOOP]:
        assert rid in table, f"{rid} missing from the printed table"
    assert "loop.cached_w0 / loop.model:" in table and "(target >= 0.9x:" in table
    for header in ("1. data pipeline", "2. training", "3. achieved FLOP/s", "4. prediction",
                   "5. memory", "ru_maxrss"):  # fmt: skip
        assert header in table

    # The README's tables, printed from the results file without measuring again.
    md = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--markdown", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert md.returncode == 0, md.stderr
    for line in ("| 1/4 scale, 320x480 |", "| Lightning `Trainer.fit` |", "| memory: one training"):
        assert line in md.stdout


# --- the GPU benchmark, without a GPU -------------------------------------------------------------


def test_gpu_options():
    args = bench.parse_args(["--device", "cuda", "--gpu-size", "320", "480", "--gpu-batch", "8"])
    assert (args.device, args.gpu_size, args.gpu_batch) == ("cuda", [320, 480], 8)
    assert args.out == REPO / "benchmarks" / "results_gpu.json"
    assert bench.parse_args([]).out == REPO / "benchmarks" / "results.json"
    assert bench.parse_args(["--device", "cuda", "--out", "x.json"]).out == Path("x.json")


@pytest.mark.parametrize(
    "argv",
    [
        ["--gpu-batch", "2"],  # a GPU option without --device cuda
        ["--device", "cuda", "--gpu-size", "8", "480"],
        ["--device", "cuda", "--gpu-size", "320"],
        ["--device", "cuda", "--gpu-batch", "0"],
        ["--device", "tpu"],
    ],
)
def test_gpu_options_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_gpu_settings():
    full = gpu_config.gpu_settings(quick=False, compile_=None)
    assert (full.size, full.batch, full.compile) == ((640, 960), 4, True)
    assert full.loader_sizes == ((640, 960), (1280, 1918))  # the training size and full size
    assert full.repeats >= 5 and full.warmup >= 1 and full.skip_steps >= 1
    quick = gpu_config.gpu_settings(quick=True, compile_=None)
    assert quick.size[0] * quick.size[1] < 100 * 100 and not quick.compile
    assert gpu_config.gpu_settings(True, True).compile
    assert not gpu_config.gpu_settings(False, False).compile
    chosen = gpu_config.gpu_settings(False, None, size=[1280, 1918], batch=2)
    assert (chosen.size, chosen.batch, chosen.loader_sizes) == ((1280, 1918), 2, ((1280, 1918),))


def test_gpu_grid():
    combos = gpu_config.grid(compile_=True)
    assert len(combos) == len(set(combos)) == 12
    assert {(c.precision, c.channels_last, c.compile) for c in combos} == {
        (p, cl, c)
        for p in ("32-true", "16-mixed", "bf16-mixed")
        for cl in (False, True)
        for c in (False, True)
    }
    assert len({c.name for c in combos}) == 12  # row ids
    assert not any(c.compile for c in gpu_config.grid(compile_=False))
    assert len(gpu_config.grid(compile_=False)) == 6

    shipped = gpu_config.SHIPPED
    assert (shipped.precision, shipped.channels_last, shipped.compile) == ("16-mixed", True, True)
    fastest = gpu_config.Combo("bf16-mixed", True, True)
    assert gpu_config.lightning_combos(fastest, True) == [fastest, shipped]
    assert gpu_config.lightning_combos(shipped, True) == [shipped]
    assert gpu_config.lightning_combos(None, True) == [shipped]
    # --no-compile: the recipe's default without compile
    assert gpu_config.lightning_combos(None, False) == [gpu_config.Combo("16-mixed", True, False)]


def test_gpu_model_is_the_issues():
    """31.0 M parameters, transposed convolutions, the rest of conf/model/unet.yaml unchanged,
    and the speed switches passed as explicit booleans."""
    import torch

    from carseg.training.segmentation_module import SegmentationModule

    cfg = gpu_config.gpu_model_config(gpu_config.Combo("16-mixed", True, False))
    base = default_model_config()
    paper_net = {**base["net"], "base_width": 64, "depth": 4, "bilinear": False}
    assert cfg == {**base, "net": paper_net, "channels_last": True, "compile": False}
    model = SegmentationModule(**cfg)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 31.0
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    with pytest.raises(ValueError, match="base_wdth"):
        default_model_config(base_wdth=64)


def test_train_step_flops():
    """FlopCounterMode's count of a forward + backward, on the meta device: per image it does not
    depend on the batch, it scales with the area, and the issue's U-Net costs 2.7 TFLOP per
    640x960 image."""
    from carseg.training.segmentation_module import SegmentationModule

    model = SegmentationModule(**gpu_config.gpu_model_config())
    start = time.perf_counter()
    one = train_step_flops(model, 1, (640, 960))
    assert train_step_flops(model, 4, (640, 960)) == 4 * one
    assert train_step_flops(model, 1, (320, 480)) == one / 4
    assert one / 1e12 == pytest.approx(2.707, abs=0.001)
    assert time.perf_counter() - start < 20  # shapes only: no 2.7 TFLOP on this CPU
    assert next(model.parameters()).device.type == "cpu"  # counted on a copy


def fake_row(rid: str, median: float, **extra) -> dict:
    return {"id": rid, "what": f"what of {rid}", "unit": extra.pop("unit", "images/s"),
            "status": "ok", "median": median, "min": median * 0.9, "max": median * 1.1,
            "runs": [median], "peak_rss_mib": 900.0, "note": "", **extra}  # fmt: skip


def fake_gpu_result() -> dict:
    combo = gpu_config.Combo("16-mixed", True, True)
    train = [
        bench_gpu.training_row(fake_row("gpu.grid.32-true.nchw.eager", 20.0),
                               gpu_config.Combo("32-true", False, False), 3.0, 2.7e12, 800.0,
                               9000.0, 80),
        bench_gpu.training_row(fake_row(f"gpu.grid.{combo.name}", 100.0), combo, 61.0, 2.7e12,
                               800.0, 7000.0, 80),
        bench_gpu.training_row(fake_row(f"gpu.lightning.{combo.name}", 90.0), combo, 70.0,
                               2.7e12, 800.0, 7500.0, 80),
    ]  # fmt: skip
    failed = {"id": "gpu.grid.bf16-mixed.nchw.compile", "what": "plain: bf16, compile",
              "unit": "images/s", "status": "failed",
              "reason": "BackendCompilerFailed: boom"}  # fmt: skip
    return {
        "device": "cuda", "quick": False, "repeats": 5, "warmup": 1,
        "env": {"date": "2026-01-01T00:00:00+00:00", "commit": "abc", "python": "3.11",
                "torch": "2.11", "cuda": "13.0", "cudnn": 91000, "lightning": "2.6.6",
                "gpu": "NVIDIA H200", "gpu_capability": "9.0", "gpu_memory_gib": 139.8,
                "gpu_count": 1, "cpu": "EPYC", "cpus_usable": 16, "loadavg_start": 0.1,
                "loadavg_end": 0.2, "cudnn_benchmark": False, "cudnn_allow_tf32": True,
                "float32_matmul_precision": "highest", "data": "sample"},
        "settings": {"size": [640, 960], "batch": 4, "steps": 20, "skip_steps": 3,
                     "matmul_n": 8192, "model_overrides": gpu_config.MODEL_OVERRIDES,
                     "params_m": 31.04},
        "rows": [fake_row("gpu.matmul.bfloat16", 800.0, unit="TFLOP/s"), *train, failed,
                 fake_row("gpu.loader.640x960", 150.0, workers_peak_rss_mib=4000.0)],
        "comparisons": [
            {"id": f"ratio.gpu.lightning_plain.{combo.name}", "section": "gpu.lightning",
             "what": "Lightning / plain loop, 16-mixed, channels_last, compile", "value": 0.9},
            {"id": "ratio.gpu.loader_train.640x960", "section": "gpu.loader",
             "what": "loader 640x960 / fastest training", "value": 1.5},
        ],
        "flops": {"tflop_per_image": 2.7, "train_step_tflop": 10.8, "batch": 4,
                  "size": [640, 960], "counted": "FlopCounterMode"},
        "fastest": f"gpu.grid.{combo.name}",
        "ru_maxrss_mib": 5000.0, "ru_maxrss_children_mib": 900.0, "wall_s": 600.0,
    }  # fmt: skip


def test_gpu_training_row():
    row = fake_gpu_result()["rows"][2]  # 16-mixed, channels_last, compile: 100 images/s
    assert row["tflops"] == pytest.approx(100 * 2.7e12 / 1e12)
    assert row["of_peak"] == pytest.approx(270 / 800)
    assert row["compile_s"] == pytest.approx(61.0 - 80 / 100)  # the first call less a run
    assert "compile 60 s" in row["note"] and row["gpu_peak_mib"] == 7000.0
    eager = fake_gpu_result()["rows"][1]
    assert "compile_s" not in eager and eager["first_call_s"] == 3.0
    reused = bench_gpu.training_row(fake_row("gpu.plain.x", 50.0), gpu_config.SHIPPED, None,
                                    1e12, None, 1.0, 8)  # fmt: skip
    assert "compile_s" not in reused and reused["of_peak"] is None
    assert bench_gpu.fastest_combo(fake_gpu_result()["rows"][1:5]) == gpu_config.SHIPPED
    assert bench_gpu.fastest_combo([{"id": "x", "status": "failed"}]) is None


def test_gpu_table_and_markdown(tmp_path, capsys):
    result = fake_gpu_result()
    table = report.gpu_table(result)
    for rid in [r["id"] for r in result["rows"]]:
        assert rid in table
    for text in ("1. matmul", "2. training grid", "3. Lightning", "4. data loader",
                 "FAILED: BackendCompilerFailed: boom", "Lightning / plain loop, 16-mixed, "
                 "channels_last, compile: 0.90x", "loader 640x960 / fastest training: 1.50x",
                 "31.0 M parameters", "NVIDIA H200", "5.00x", "34%", "6.8 GiB", "compile 60 s",
                 "+ workers 4000 MiB"):  # fmt: skip
        assert text in table, text
    out = tmp_path / "results_gpu.json"
    out.write_text(json.dumps(result))
    assert bench.main(["--markdown", "--device", "cuda", "--out", str(out)]) == 0
    md = capsys.readouterr().out
    assert "| training | images/s |" in md and "| what of gpu.grid.16-mixed" in md
    assert "failed: BackendCompilerFailed: boom" in md and "bf16 800 (720-880)" in md


def test_gpu_refused_without_cuda(monkeypatch, tmp_path, capsys):
    """On a machine without CUDA, --device cuda stops at once: one line, status 2, no file."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "g.json"
    assert bench.main(["--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda needs an NVIDIA GPU" in err
    assert not out.exists()


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import torch; assert not torch.cuda.is_available()"],
                   capture_output=True).returncode != 0,
    reason="this machine has CUDA",
)  # fmt: skip
def test_gpu_refused_without_cuda_as_a_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--device", "cuda"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "needs an NVIDIA GPU" in proc.stderr and proc.stdout == ""


class _FakeEvent:
    """torch.cuda.Event on the CPU's clock."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: _FakeEvent) -> float:
        return (end.t - self.t) * 1000


@pytest.fixture
def cpu_as_cuda(monkeypatch):
    """The CPU dressed up as a GPU, so that the GPU benchmark's sections run here end to end:
    CUDA calls do nothing or return zeros, tensors stay on the CPU, Lightning's "gpu" is its
    "cpu" (16-mixed, CPU-less, becomes bf16-mixed), and the U-Net is a tiny one."""
    import pytorch_lightning as pl
    import torch

    noop, zero = (lambda *a, **k: None), (lambda *a, **k: 0)
    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, noop)
    for name in ("memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, zero)
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    props = SimpleNamespace(name="CPU as GPU", major=0, minor=0, total_memory=2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: props)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    to, randn = torch.Tensor.to, torch.randn

    def cpu(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        args = tuple("cpu" if isinstance(a, str) and a == "cuda" else a for a in args)
        return args, {**kwargs, **({"device": "cpu"} if kwargs.get("device") == "cuda" else {})}

    monkeypatch.setattr(
        torch.Tensor, "to", lambda self, *a, **k: to(self, *cpu(a, k)[0], **cpu(a, k)[1])
    )
    monkeypatch.setattr(torch, "randn", lambda *a, **k: randn(*cpu(a, k)[0], **cpu(a, k)[1]))
    trainer = pl.Trainer

    def cpu_trainer(*a, accelerator: str = "auto", precision: str = "32-true", **k):
        precision = "bf16-mixed" if precision == "16-mixed" else precision
        return trainer(*a, accelerator="cpu", precision=precision, **k)

    monkeypatch.setattr(pl, "Trainer", cpu_trainer)
    tiny = {"base_width": 4, "depth": 2, "bilinear": False}
    monkeypatch.setattr(gpu_config, "MODEL_OVERRIDES", tiny)
    monkeypatch.setattr(bench_gpu, "MODEL_OVERRIDES", tiny)
    # One thread: on a loaded 2-core machine, two threads' spinning turns 40 ms steps into 5 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level  # the benchmark quietens it; later tests may read its lines
    yield
    lightning_log.setLevel(level)
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore:.*CUDA is not available", "ignore:GPU available but not used",
                            "ignore:'pin_memory' argument is set as true")  # fmt: skip
def test_gpu_benchmark_runs_end_to_end(cpu_as_cuda, monkeypatch, tiny_set, tmp_path, capsys):
    """Every section, variant and row of the GPU benchmark, tiny, on the CPU, through bench.py's
    main: compiled variants that fail become failed rows with their reason, and the run goes on
    to its table and results file."""
    import torch

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no compiler here\nmore lines")

    def tiny_settings(*args, **kwargs):  # bf16 matmuls are slow on a CPU without bf16
        return dataclasses.replace(gpu_config.gpu_settings(*args, **kwargs), matmul_n=64)

    monkeypatch.setattr(torch, "compile", no_compiler)
    monkeypatch.setattr(bench, "cuda_missing", lambda: None)
    monkeypatch.setattr(bench, "gpu_settings", tiny_settings)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # main sets it
    out = tmp_path / "gpu.json"
    argv = ["--device", "cuda", "--quick", "--compile", "--gpu-size", "32", "48",
            "--gpu-batch", "2", "--data", str(tiny_set), "--out", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cuda" and result["quick"] is True
    assert result["settings"]["size"] == [32, 48] and result["settings"]["batch"] == 2

    rows = {r["id"]: r for r in result["rows"]}
    grid = [f"gpu.grid.{c.name}" for c in gpu_config.grid(True)]
    assert set(grid) <= set(rows)
    for rid in grid:
        r = rows[rid]
        if rid.endswith(".compile"):
            assert r["status"] == "failed" and r["reason"] == "RuntimeError: no compiler here"
            continue
        assert r["status"] == "ok" and 0 < r["min"] <= r["median"] <= r["max"], r
        assert len(r["runs"]) >= 2 and r["tflops"] > 0 and r["of_peak"] > 0, r
        assert r["first_call_s"] > 0 and "gpu_peak_mib" in r, r
    fastest = bench_gpu.fastest_combo([rows[i] for i in grid])
    assert result["fastest"] in rows and not fastest.compile
    for combo in gpu_config.lightning_combos(fastest, True):
        fit, loop = rows[f"gpu.lightning.{combo.name}"], rows[f"gpu.plain.{combo.name}"]
        if combo.compile:  # the recipe's default: its compile fails inside Trainer.fit too
            assert fit["status"] == loop["status"] == "failed"
            continue
        assert fit["status"] == loop["status"] == "ok"
        assert "compile_s" not in loop  # the grid's loop, reused
    assert {"gpu.matmul.bfloat16", "gpu.matmul.float16", "gpu.loader.32x48"} <= set(rows)
    assert rows["gpu.matmul.bfloat16"]["unit"] == "TFLOP/s"
    assert rows["gpu.loader.32x48"]["median"] > 0
    comparisons = {c["id"] for c in result["comparisons"]}
    assert f"ratio.gpu.lightning_plain.{fastest.name}" in comparisons
    assert "ratio.gpu.loader_train.32x48" in comparisons
    assert result["flops"]["tflop_per_image"] > 0 and result["env"]["gpu"] == "CPU as GPU"
    assert result["settings"]["model_overrides"]["base_width"] == 4

    table = capsys.readouterr().out
    assert all(rid in table for rid in rows) and "FAILED: RuntimeError: no compiler" in table
