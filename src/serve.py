"""Serve a trained model over HTTP: ``python src/serve.py ckpt_path=...``.

A web page at ``/`` and ``POST /predict`` (a photo in; a mask, cut-out, composite or JSON out)
on http://127.0.0.1:8000, run by LitServe; the same model, settings and masks as predict.py. The
work is in ``carseg.serving``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from carseg.runs.entrypoint import run, user_errors_exit
from carseg.serving.server import build_server, describe, serve


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg.paths.output_dir):
        server, served = build_server(cfg)
    print(describe(served, cfg.host, cfg.port), flush=True)
    serve(server, cfg.host, cfg.port)


if __name__ == "__main__":
    run(main)
