"""Running ``src/serve.py`` in tests and benchmarks: on 127.0.0.1 and a free port, stopped (its
whole process group) whatever happens; and plain HTTP calls with timeouts (the standard
library's ``http.client``)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from support.entry import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(
    root: Path, *overrides: str, env: dict | None = None, start_timeout: float = 180
) -> Iterator[str]:
    """``python src/serve.py <overrides>`` on 127.0.0.1 and a free port, in its own process
    group; yields its base URL once ``/health`` answers 200, and stops the group after (SIGTERM,
    then SIGKILL for what is left after 20 s)."""
    port = free_port()
    log = root / f"serve-{port}.log"
    args = [sys.executable, str(REPO / "src" / "serve.py"), "host=127.0.0.1", f"port={port}"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*args, *overrides],
            cwd=root,
            env={**os.environ, "CARSEG_ROOT": str(root), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve.py exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                if request(url, "/health", method="GET", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve.py did not answer within {start_timeout} s")
            time.sleep(0.5)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the server, then SIGKILL to its process group (started by us) if need be."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def request(
    url: str,
    path: str,
    body: bytes | None = None,
    *,
    method: str = "POST",
    headers: dict | None = None,
    timeout: float = 120,
) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of one HTTP request."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def multipart(
    files: dict[str, bytes], fields: dict[str, str] | None = None
) -> tuple[dict[str, str], bytes]:
    """The headers and body of a ``multipart/form-data`` upload of ``files`` and ``fields``."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in (fields or {}).items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            .encode()
        )  # fmt: skip
    for name, data in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        chunks.append(head.encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, b"".join(chunks)
