"""The HTTP server: LitServe's ``LitServer`` around ``SegmentationAPI``, with carseg's routes.

LitServe gives the inference workers (one per device, or more), the batching of requests that
arrive together, ``/health``, ``/info`` and FastAPI's ``/docs`` and ``/openapi.json``. Two of its
routes are replaced: ``POST /predict``, whose body LitServe would parse as JSON or as a form
(Starlette spools large form files to disk), reads the photo in memory up to ``max_bytes`` and
checks every option before the request is queued (``carseg.serving.requests``); and ``/``, which
serves the web page. A token, when set, is checked on every route but ``/health``.
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import threading
from importlib import resources
from typing import Any

import litserve as ls
import torch
from fastapi import Request
from litserve.server import RegularRequestHandler
from omegaconf import DictConfig, OmegaConf
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from carseg.inference.loading import OnnxNet
from carseg.inference.loop import build_predictor, postprocess_of
from carseg.serving.api import SegmentationAPI, json_response
from carseg.serving.requests import (
    OUTPUTS,
    TOKEN_PARAMETER,
    BadRequest,
    Defaults,
    Limits,
    parse_colour,
    parse_request,
    read_body,
)
from carseg.utils.checks import check_int
from carseg.utils.errors import ConfigError

TOKEN_ENV = "CARSEG_SERVE_TOKEN"
LOOPBACK = "127.0.0.1"
HOSTS = (LOOPBACK, "0.0.0.0", "::")  # what LitServer.run binds
OPEN_PATHS = ("/health",)  # answered without the token (a load balancer's probe)


class TokenCheck:
    """ASGI middleware: a request without the token gets 401 (``Authorization: Bearer <token>``,
    ``X-API-Key: <token>`` or ``?token=<token>``, which the page passes on)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        response = json_response(
            {
                "detail": "A token is required: send 'Authorization: Bearer <token>' (the "
                f"server's serve.token or ${TOKEN_ENV}), or open the page as /?token=<token>"
            },
            401,
        )
        await response(scope, receive, send)

    def allowed(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = [headers.get(b"x-api-key", b"")]
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            given.append(value.strip())
        query = Request(scope).query_params.get(TOKEN_PARAMETER)
        if query:
            given.append(query.encode())
        return any(g and hmac.compare_digest(g, self.token) for g in given)


def server_token(cfg: DictConfig) -> str | None:
    """The token: ``serve.token``, else ``$CARSEG_SERVE_TOKEN``; required off the loopback.

    Raises:
        ConfigError: a host LitServe cannot bind, or a host other than the loopback address
            without a token.
    """
    host = cfg.host
    if host not in HOSTS:
        raise ConfigError(f"host={host!r}: choose {', '.join(HOSTS)} (LitServe binds these)")
    token = cfg.token if cfg.token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise ConfigError("token must be a string of at least 8 characters")
    if host != LOOPBACK and not token:
        raise ConfigError(
            f"host={host} serves other machines: set a token (token=<secret> or "
            f"${TOKEN_ENV}); every route but /health then asks for it"
        )
    return token or None


def check_options(cfg: DictConfig) -> tuple[Limits, Defaults]:
    """The server's limits and defaults, checked.

    Raises:
        ConfigError: a bad value, saying which.
    """
    check_int("port", cfg.port, 1024)
    if cfg.port > 65535:
        raise ConfigError(f"port={cfg.port}: at most 65535")
    check_int("workers_per_device", cfg.workers_per_device, 1)
    check_int("timeout", cfg.timeout, 1)
    limits = Limits(
        check_int("max_bytes", cfg.max_bytes, 1), check_int("max_pixels", cfg.max_pixels, 1)
    )
    timeout = cfg.batch_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout <= 10:
        raise ConfigError(f"batch_timeout must be seconds from 0 to 10, got {timeout!r}")
    feather = cfg.cutout_feather
    if isinstance(feather, bool) or not isinstance(feather, int | float) or not 0 <= feather <= 0.5:
        raise ConfigError(f"cutout_feather must be a number from 0 to 0.5, got {feather!r}")
    try:
        colour = parse_colour(str(cfg.background))
    except BadRequest as err:
        raise ConfigError(err.message) from None
    return limits, Defaults(background=colour, feather=float(feather))


def build_server(cfg: DictConfig) -> tuple[ls.LitServer, dict[str, Any]]:
    """The LitServer of ``cfg`` (the composed ``conf/serve.yaml``), its model checked by loading
    it once here (a bad checkpoint stops the command, not a worker), and what it serves.

    Raises:
        ConfigError, DataError, DataNotFoundError: a bad option or model.
    """
    token = server_token(cfg)
    limits, defaults = check_options(cfg)
    postprocess_of(cfg)
    predictor, threshold, models = build_predictor(cfg)
    onnx = any(isinstance(m.net, OnnxNet) for m in models)
    refine = predictor.refine.record()  # (None when off)
    del predictor
    accelerator = cfg.accelerator
    if accelerator not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"accelerator={accelerator!r}: choose auto, cpu or cuda")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() and not onnx else "cpu"
    inference = {  # predict's options (conf/inference), whatever they grow to
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k not in _SERVER_KEYS
    }
    described = {
        "model": [m.path.name for m in models],
        "threshold": threshold,
        "size": [list(m.size) if m.size else None for m in models],
        "tta": cfg.tta,
        "tile": None if cfg.tile is None else list(cfg.tile),
        "postprocess": OmegaConf.to_container(cfg.postprocess),
        "refine": refine,
        "max_bytes": limits.max_bytes,
        "max_pixels": limits.max_pixels,
        "outputs": list(OUTPUTS),
    }
    settings = {
        "inference": inference,
        "max_pixels": limits.max_pixels,
        "model": described["model"],
        "cpu_workers": cfg.workers_per_device if accelerator == "cpu" else 1,
    }
    api = SegmentationAPI(settings, max_batch_size=cfg.batch_size, batch_timeout=cfg.batch_timeout)
    server = ls.LitServer(
        api,
        accelerator=accelerator,
        devices=cfg.devices,
        workers_per_device=cfg.workers_per_device,
        timeout=cfg.timeout,
        model_metadata=described,
        middlewares=[(TokenCheck, {"token": token})] if token else [],
    )
    replace_routes(server, api, limits, defaults)
    return server, {**described, "accelerator": accelerator, "token": token is not None}


# keys of conf/serve.yaml that are the server's, not predict's
_SERVER_KEYS = (
    "host", "port", "token", "accelerator", "devices", "workers_per_device", "timeout",
    "batch_timeout", "max_bytes", "max_pixels", "background", "cutout_feather", "paths",
    "task_name", "hydra", "num_workers",
)  # fmt: skip


def replace_routes(
    server: ls.LitServer, api: SegmentationAPI, limits: Limits, defaults: Defaults
) -> None:
    """Put carseg's ``/`` (the page) and ``POST /predict`` in place of LitServe's own."""
    app = server.app
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in ("/", api.api_path)
    ]
    handler = RegularRequestHandler(api, server)
    page = resources.files("carseg.serving").joinpath("static/index.html").read_text()

    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    async def predict(request: Request) -> Response:
        try:
            body = await read_body(request.headers, request.stream(), limits.max_bytes)
            payload = parse_request(
                request.headers.get("content-type", ""), body, request.query_params, defaults
            )
        except BadRequest as err:
            return json_response({"detail": err.message}, err.status)
        except ClientDisconnect:  # gone mid-upload: nobody reads the answer
            return Response(status_code=400)
        # (as dict: LitServe passes the payload to the worker as it is)
        return await handler.handle_request(payload, dict)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        api.api_path,
        predict,
        methods=["POST"],
        summary="Segment the car in a photo",
        description=PREDICT_DOC,
        openapi_extra=PREDICT_OPENAPI,
    )


PREDICT_DOC = """A photo (JPEG, PNG, WebP ...) as the raw body, or as the `image` file of a
multipart form (with an optional `background` image file). Options (query or form fields):
`output` = json (RLE in Kaggle's form, the car's share of the frame, the model), mask (PNG, the
file predict.py writes), cutout (RGBA PNG), composite (JPEG), all (json with the three images as
data URLs); `background` = a colour for the composite; `feather` = a soft edge, 0 to 0.5.
A bad request gets a 4xx and `{"detail": "<what was wrong>"}`."""

PREDICT_OPENAPI = {
    "parameters": [
        {
            "name": "output",
            "in": "query",
            "schema": {"type": "string", "enum": list(OUTPUTS), "default": "json"},
        },
        {"name": "background", "in": "query", "schema": {"type": "string"}},
        {
            "name": "feather",
            "in": "query",
            "schema": {"type": "number", "minimum": 0, "maximum": 0.5},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "background": {"type": "string", "format": "binary"},
                        "output": {"type": "string", "enum": list(OUTPUTS)},
                    },
                }
            },
        },
    },
}


def describe(served: dict[str, Any], host: str, port: int) -> str:
    """What the command prints before serving."""
    where = "[::1]" if host == "::" else LOOPBACK
    return (
        f"Serving {', '.join(served['model'])} on {served['accelerator']} at http://{host}:{port} "
        f"(page: http://{where}:{port}/ , API docs: /docs"
        + (", token required" if served["token"] else "")
        + ")\n"
        + json.dumps({k: served[k] for k in ("threshold", "size", "tta", "postprocess")})
    )


def serve(server: ls.LitServer, host: str, port: int) -> None:
    """Run ``server`` until Ctrl-C or SIGTERM, then stop it and its processes.

    LitServe 0.2.19 waits for its shutdown on a multiprocessing manager's event; a
    KeyboardInterrupt raised inside that wait leaves the manager's connection mid-reply and the
    shutdown hangs. So the signals set the event instead, from another thread (a manager proxy
    opens one connection per thread), and LitServe shuts down as it does when asked to.
    """

    def stop(signum: int, frame: object) -> None:
        event = server._shutdown_event
        if event is not None:
            threading.Thread(target=event.set, daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")
