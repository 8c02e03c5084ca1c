"""Smoke test of the benchmark (`make bench`): it runs and reports every row; no speed is judged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ROWS = [
    *(f"data.{scale}.{kind}" for scale in ("quarter", "half")
      for kind in ("plain", "draft", "cache", "loader")),
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
COMPARISONS = [
    "speedup.quarter.draft",
    "speedup.quarter.cache",
    "speedup.half.draft",
    "speedup.half.cache",
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
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True

    rows = {r["id"]: r for r in result["rows"]}
    assert sorted(rows) == sorted(ROWS)
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
    for rid in [*ROWS, *MEMORY]:
        assert rid in table, f"{rid} missing from the printed table"
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
