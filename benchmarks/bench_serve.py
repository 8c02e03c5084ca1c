"""The server under load: ``make bench-serve`` (``python benchmarks/bench_serve.py``).

Starts ``src/serve.py`` on 127.0.0.1 and a free port, and sends it ``--clients`` concurrent
clients x ``--requests`` photos each (``POST /predict?output=mask``, the real Carvana photos of
``../shared/carvana_sample/train``, cycled): requests/s, p50/p95/max latency, errors (anything
but 200, and any connection failure). Meanwhile another client starts uploads and drops them
half-way (``--killed``); after the load, the server must still answer. The same photos through
``src/predict.py`` give its images/s: the steady rate, (N - 1) photos over the time N photos take
beyond one photo's run (which holds the start-up), so start-up counts for neither side.

The model: ``--ckpt``, or by default the U-Net of ``conf/model/unet.yaml`` at 160x240 (the size of
``experiment=carvana_cpu``) with fresh weights (speed does not depend on them). Prints a table
and writes ``benchmarks/results_serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' server runner (support.serving)

from support.serving import request, serving  # noqa: E402

SAMPLE = REPO.parent / "shared" / "carvana_sample" / "train"


def make_checkpoint(path: Path, size: list[int]) -> Path:
    """A checkpoint of ``conf/model/unet.yaml``'s U-Net, fresh weights, recorded at ``size``."""
    import pytorch_lightning as pl
    import torch

    from carseg.training.callbacks.record import CheckpointRecorder
    from carseg.training.segmentation_module import SegmentationModule
    from fixtures import default_model_config

    torch.manual_seed(0)
    module = SegmentationModule(**default_model_config())
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[CheckpointRecorder(refine=None)])  # fmt: skip
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    raw["carseg"]["size"] = list(size)
    torch.save(raw, path)
    return path


def cpu_name() -> tuple[str, list[str]]:
    """The CPU's model name (lscpu) and which of AVX2, AVX-512 and AMX it has."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    name = fields.get("Model name", platform.processor()).strip()
    flags = set(fields.get("Flags", "").split())
    have = [f for f, key in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AMX", "amx_tile"))
            if key in flags]  # fmt: skip
    return name, have


def predict_rate(root: Path, ckpt: Path, photos: list[Path], batch_size: int) -> dict:
    """predict.py's steady images/s on ``photos``: (N - 1) / (t(N) - t(1))."""
    times = {}
    for n in (1, len(photos)):
        folder = root / f"in-{n}"
        folder.mkdir()
        for p in photos[:n]:
            (folder / p.name).symlink_to(p)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(REPO / "src" / "predict.py"), f"ckpt_path={ckpt}",
             f"input={folder}", f"output_dir={root / f'out-{n}'}", f"batch_size={batch_size}",
             "trainer.accelerator=cpu"],  # fmt: skip
            cwd=root, env={**os.environ, "CARSEG_ROOT": str(root)},
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        times[n] = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"predict.py failed:\n{proc.stderr[-3000:]}")
    n = len(photos)
    return {"images": n, "seconds_1": times[1], "seconds_n": times[n],
            "images_per_s": (n - 1) / (times[n] - times[1])}  # fmt: skip


def killed_uploads(url: str, photo: bytes, count: int, stop: threading.Event) -> int:
    """Uploads dropped half-way, one every 0.5 s while the load runs; how many were made."""
    port = int(url.rsplit(":", 1)[1])
    made = 0
    while made < count and not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                + f"Content-Length: {len(photo)}\r\n\r\n".encode()
                + photo[: len(photo) // 2]
            )
        made += 1
        time.sleep(0.5)
    return made


def load(url: str, photos: list[bytes], clients: int, per_client: int) -> dict:
    """``clients`` threads x ``per_client`` requests: latencies, errors, requests/s."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for i in range(per_client):
            photo = photos[(index * per_client + i) % len(photos)]
            start = time.perf_counter()
            try:
                status, _, content = request(url, "/predict?output=mask", photo, timeout=300)
                failed = None if status == 200 else f"{status}: {content[:200]!r}"
            except OSError as err:
                failed = f"{type(err).__name__}: {err}"
            with lock:
                latencies.append(time.perf_counter() - start)
                if failed:
                    errors.append(failed)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_s": statistics.median(ordered),
        "p95_s": ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "max_s": ordered[-1],
        "errors": len(errors),
        "first_errors": errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="per client")
    parser.add_argument("--killed", type=int, default=5, help="uploads dropped half-way")
    parser.add_argument("--ckpt", type=Path, help="default: a fresh U-Net at --size")
    parser.add_argument("--size", type=int, nargs=2, default=[160, 240])
    parser.add_argument("--photos", type=Path, default=SAMPLE)
    parser.add_argument("--batch-size", type=int, default=4, help="the server's and predict's")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_serve.json")
    args = parser.parse_args()
    paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not paths:
        raise SystemExit(f"no photos in {args.photos}")
    name, flags = cpu_name()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        ckpt = args.ckpt or make_checkpoint(root / "unet.ckpt", args.size)
        print(f"predict.py on {len(paths)} photos ...", file=sys.stderr)
        predicted = predict_rate(root, ckpt, paths, args.batch_size)
        photos = [p.read_bytes() for p in paths]
        print("server ...", file=sys.stderr)
        with serving(root, f"ckpt_path={ckpt}", f"batch_size={args.batch_size}") as url:
            for photo in photos[:4]:  # warm-up
                request(url, "/predict?output=mask", photo)
            stop = threading.Event()
            with ThreadPoolExecutor(1) as side:
                killed = side.submit(killed_uploads, url, photos[0], args.killed, stop)
                served = load(url, photos, args.clients, args.requests)
                stop.set()
                served["killed_uploads"] = killed.result()
            health = request(url, "/health", method="GET")[0]
            after = request(url, "/predict?output=mask", photos[0])[0]
            served["serving_after"] = health == 200 and after == 200
    result = {
        "cpu": name,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "model": "given" if args.ckpt else f"conf/model/unet.yaml at {args.size[0]}x{args.size[1]}",
        "predict": predicted,
        "served": served,
        "served_over_predict": served["requests_per_s"] / predicted["images_per_s"],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    s = served
    print(f"CPU: {name} ({', '.join(flags) or 'no AVX2'}), {os.cpu_count()} cores")
    print(f"model: {result['model']}, batch {args.batch_size}; photos: {len(paths)} from "
          f"{args.photos}")  # fmt: skip
    print("| clients x requests | requests/s | p50 s | p95 s | max s | errors | predict.py "
          "images/s | served / predict | dropped uploads, serving after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} x {args.requests} | {s['requests_per_s']:.2f} | {s['p50_s']:.2f} | "
          f"{s['p95_s']:.2f} | {s['max_s']:.2f} | {s['errors']} | "
          f"{predicted['images_per_s']:.2f} | {result['served_over_predict']:.2f} | "
          f"{s['killed_uploads']}, {'yes' if s['serving_after'] else 'NO'} |")  # fmt: skip
    if s["errors"] or not s["serving_after"]:
        print(f"errors: {s['first_errors']}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
