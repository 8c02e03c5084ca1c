"""Export a checkpoint for serving: ``python src/export.py ckpt_path=... format=onnx|torchscript``.

Prints the max abs difference of the exported model's logits against eager PyTorch. The work is in
``carseg.export``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("CARSEG_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from carseg.cli import require, user_errors_exit  # noqa: E402
from carseg.errors import ConfigError  # noqa: E402
from carseg.export import export  # noqa: E402
from carseg.inference import load_checkpoint  # noqa: E402

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors_exit():
        require(cfg, "ckpt_path", "the checkpoint to export")
        if cfg.format not in SUFFIXES:
            raise ConfigError(f"format={cfg.format}: choose one of {', '.join(SUFFIXES)}")
        model, info = load_checkpoint(cfg.ckpt_path)
        ckpt = Path(cfg.ckpt_path)
        output = Path(cfg.output) if cfg.output else ckpt.with_suffix(SUFFIXES[cfg.format])
        if output.exists() and not cfg.overwrite:
            raise ConfigError(f"{output} exists: give another output=..., or overwrite=true")
        path, diff = export(model, info, output, cfg.format)
    print(f"\nexported:  {path} ({cfg.format})")
    print(f"parity:    max |logits - eager logits| = {diff:.3g}")


if __name__ == "__main__":
    main()
