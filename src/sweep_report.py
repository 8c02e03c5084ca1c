"""Rank the jobs of a sweep by best val/dice: ``python src/sweep_report.py [SWEEP_DIR]``.

    python src/train.py -m hparams_search=optuna      # or a grid: -m model.optimizer.lr=1e-4,3e-4
    python src/sweep_report.py outputs/train/multiruns/<time>
    python src/sweep_report.py                               # the newest sweep

Prints every job's overrides and best val/dice, best first, and writes ``sweep_report.csv`` and
``sweep_report.png`` into the sweep folder. The work is in ``carseg.runs.sweep_report``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from carseg.runs.config import project_root
from carseg.runs.entrypoint import user_errors_exit
from carseg.runs.sweep_report import latest_sweep, report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Rank the jobs of a Hydra multirun by best val/dice; write CSV and PNG.",
    )
    parser.add_argument(
        "sweep_dir",
        nargs="?",
        type=Path,
        help="the multirun folder (default: the newest under outputs/train/multiruns)",
    )
    parser.add_argument(
        "--out", type=Path, help="where sweep_report.csv and .png go (default: the sweep folder)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the table, write nothing")
    args = parser.parse_args(argv)
    with user_errors_exit():
        sweep_dir = args.sweep_dir or latest_sweep(
            project_root() / "outputs" / "train" / "multiruns"
        )
        print(report(sweep_dir, write=not args.no_write, out_dir=args.out).text)


if __name__ == "__main__":
    main()
