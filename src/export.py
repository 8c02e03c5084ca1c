"""Export a checkpoint for serving: ``python src/export.py ckpt_path=... format=onnx|torchscript``.

Prints the max abs difference of the exported model's logits against eager PyTorch. The work is in
``carseg.inference.export``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from carseg.inference.export import FORMATS, SUFFIXES, export
from carseg.inference.loading import load_model
from carseg.models.registry import trusted_targets, trusting
from carseg.runs.entrypoint import run, user_errors_exit
from carseg.utils.checks import check_bool, check_choice, check_required, check_writable
from carseg.utils.errors import ConfigError


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg.paths.output_dir):
        ckpt = check_required(cfg, "ckpt_path", "the checkpoint to export")
        if not isinstance(ckpt, str):
            raise ConfigError(
                f"ckpt_path={ckpt!r}: export takes one checkpoint (an ensemble is eval's and "
                "predict's): export each with its own command"
            )
        ckpt = Path(ckpt)
        check_choice("format", cfg.format, FORMATS)
        with trusting(*trusted_targets(cfg.trusted_targets)):
            model, record = load_model(ckpt)
        output = Path(cfg.output) if cfg.output else ckpt.with_suffix(SUFFIXES[cfg.format])
        if output.expanduser().is_dir():
            raise ConfigError(
                f"output={output} is a folder: give the file to write, e.g. "
                f"output={output / (ckpt.stem + SUFFIXES[cfg.format])}"
            )
        if output.expanduser().resolve() == ckpt.expanduser().resolve():
            raise ConfigError(f"output={output} is the checkpoint it exports: give another output")
        if output.exists() and not check_bool("overwrite", cfg.overwrite):
            raise ConfigError(f"{output} exists: give another output=..., or overwrite=true")
        check_writable(output.parent, "output's folder")
        path, diff = export(model, record, output, cfg.format)
    print(f"\nexported:  {path} ({cfg.format})")
    print(f"parity:    max |logits - eager logits| = {diff:.3g}")


if __name__ == "__main__":
    run(main)
