"""The accuracy benchmark (``make bench-accuracy``): Dice at full resolution for a training budget.

Each recipe (an ``experiment=`` name, or any set of overrides) is trained for the budget with
``src/train.py`` on ``--data``, once per seed, and its best checkpoint is scored by ``src/eval.py``
at each image's own size: on ``--test-root`` (other cars, every image) when given, else on the
checkpoint's own validation cars. It prints and saves a table: recipe, budget, epochs and images
seen, training images/s, start-up, best val/dice, full-resolution mean, median and worst Dice,
and the spread over the seeds.

    python benchmarks/bench_accuracy.py --data ../shared/carvana_dev --recipes carvana_cpu \\
        --budget 00:00:10:00 --seeds 0 1 2
    python benchmarks/bench_accuracy.py --data /data/carvana --test-root /data/other_cars \\
        --recipes carvana_cpu "carvana_cpu model/net=resnet34_unet" --budget 00:00:10:00
    python benchmarks/bench_accuracy.py --markdown benchmarks/accuracy.json

A recipe is a space-separated list: its first word, if it has no ``=``, is the experiment; the
rest are overrides (``"carvana_cpu model.optimizer.lr=3e-3"``). ``--seeds`` sets ``seed`` and
``data.split_seed`` together, so each seed also validates on other cars (with 16 cars, one car's
Dice moves the mean: the spread says how much); ``--split-seed`` fixes the split instead, so the
spread is the seeds' alone and the runs' checkpoints share their validation cars (an ensemble).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="the data folder to train on (Kaggle's layout)")
    parser.add_argument("--test-root", type=Path, help="other cars to score on (every image)")
    parser.add_argument("--recipes", nargs="+", default=["carvana_cpu"])
    parser.add_argument("--budget", default="00:00:10:00", help="trainer.max_time (D:H:M:S)")
    parser.add_argument(
        "--steps",
        type=int,
        help="a budget in training steps instead (trainer.max_steps; no time limit): every "
        "recipe then sees the same number of images whatever the CPU's speed",
    )
    parser.add_argument(
        "--refine",
        action="store_true",
        help="score each checkpoint a second time with the edge refined at full resolution "
        "(refine.guided=true)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--val-fraction", type=float, help="data.val_fraction (the recipe's else)")
    parser.add_argument("--split-seed", type=int,
                        help="one split for every seed (its runs then share their validation "
                        "cars); by default each seed splits its own way")  # fmt: skip
    parser.add_argument("--eval-args", nargs="*", default=[], help="more overrides for eval.py")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "accuracy.json")
    parser.add_argument("--markdown", type=Path, help="print a saved result as a markdown table")
    parser.add_argument("--keep", type=Path, help="keep the runs under this folder")
    args = parser.parse_args(argv)
    if args.markdown is None and args.data is None:
        parser.error("--data is required (the folder to train on)")
    return args


class RefusedError(Exception):
    """A command line that cannot run: its message names the option and the fix (exit 2)."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _cars(root: Path) -> set[str]:
    """The cars of the images in ``root/train`` by Kaggle's ``<car>_<view>`` rule."""
    from carseg.data.split import cars_of

    ids = [p.stem for p in (root / "train").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return set(cars_of(ids))


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before the first training run: a run of minutes must not
    end in an error that was there from the start, nor take an earlier table with it.

    Raises:
        RefusedError: the option, what is wrong, and the fix.
    """
    from carseg.training.trainer import TRAINER_VALUES
    from carseg.utils.checks import check_writable
    from carseg.utils.errors import CarsegError

    valid, what = TRAINER_VALUES["max_time"]
    if not valid(args.budget):
        raise RefusedError(
            f"--budget must be {what.removesuffix(', or null')}, got {args.budget!r}"
        )
    if not (args.data / "train").is_dir():
        raise RefusedError(f"no train/ folder in {args.data} (--data: a folder in Kaggle's layout)")
    if args.test_root is not None:
        if not (args.test_root / "train").is_dir():
            raise RefusedError(
                f"no train/ folder in {args.test_root} (--test-root: other cars in Kaggle's "
                "layout, every image scored)"
            )
        if args.test_root.resolve() == args.data.resolve():
            raise RefusedError(
                f"--test-root {args.test_root} is --data: it would score the training cars as a "
                "test set. Give other cars, or leave --test-root out to score each run's "
                "validation cars"
            )
        shared = sorted(_cars(args.data) & _cars(args.test_root))
        if shared:
            raise RefusedError(
                f"--test-root {args.test_root} holds {len(shared)} car(s) of --data "
                f"({', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''}): a test set must "
                "hold other cars than the ones trained on"
            )
    if args.out.is_dir():
        raise RefusedError(f"--out {args.out} is a folder: give the JSON file to write")
    try:
        check_writable(args.out.parent, "--out's folder")
    except CarsegError as err:
        raise RefusedError(str(err)) from None


def read_table(path: Path) -> dict:
    """A table saved by an earlier run (``--markdown``).

    Raises:
        RefusedError: no such file, or not a saved table.
    """
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise RefusedError(f"--markdown {path}: no such file (a table written by --out)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RefusedError(f"--markdown {path} is not a saved table ({err})") from None
    if not isinstance(result, dict) or not isinstance(result.get("summary"), list):
        raise RefusedError(f"--markdown {path} is not a table written by --out (no summary)")
    return result


def recipe_overrides(recipe: str) -> list[str]:
    """``"carvana_cpu model.optimizer.lr=3e-3"`` -> ``["experiment=carvana_cpu", ...]``."""
    words = shlex.split(recipe)
    if words and "=" not in words[0]:
        words[0] = f"experiment={words[0]}"
    return words


def run_name(recipe: str, seed: int) -> str:
    """A run's folder name: one Hydra's override grammar takes as it is (letters, digits, _ . -),
    cut short, with a hash of the whole recipe that tells apart recipes that differ at the end."""
    slug = re.sub(r"[^\w.-]+", "_", "_".join(recipe_overrides(recipe)))[:100]
    return f"{slug}-{hashlib.sha1(recipe.encode()).hexdigest()[:8]}-seed{seed}"


def _run(script: str, args: list[str], root: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "src" / f"{script}.py"), *args],
        cwd=REPO,
        env={**os.environ, "CARSEG_ROOT": str(root)},
        capture_output=True,
        text=True,
    )
    return proc, time.perf_counter() - started


def train_and_score(args: argparse.Namespace, recipe: str, seed: int, work: Path) -> dict:
    """One training run of ``recipe`` and the scores of its best checkpoint."""
    # a folder name Hydra's override grammar takes as it is: letters, digits, _ . -
    name = run_name(recipe, seed)
    run_dir = work / "train" / name
    split_seed = seed if args.split_seed is None else args.split_seed
    train_args = [
        *recipe_overrides(recipe),
        "data=carvana",
        f"data.root={args.data.resolve()}",
        *(
            [f"trainer.max_steps={args.steps}", "trainer.max_time=null"]
            if args.steps
            else [f"trainer.max_time={args.budget}"]
        ),
        f"seed={seed}",
        f"data.split_seed={split_seed}",
        f"hydra.run.dir={run_dir}",
        "logger=csv",
    ]
    if args.val_fraction is not None:
        train_args.append(f"data.val_fraction={args.val_fraction}")
    proc, wall = _run("train", train_args, work)
    budget = f"{args.steps} steps" if args.steps else args.budget
    row = {"recipe": recipe, "seed": seed, "split_seed": split_seed, "budget": budget,
           "process_s": round(wall, 1)}  # fmt: skip
    if proc.returncode != 0:
        return {**row, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    summary = json.loads((run_dir / "summary.json").read_text())
    row.update(
        epochs=summary.get("epochs_run"),
        images_seen=summary.get("train_images"),
        train_images_per_s=summary.get("train_images_per_s"),
        fit_s=summary.get("wall_time_s"),
        start_up_s=round(wall - (summary.get("wall_time_s") or 0.0), 1),
        best_val_dice=summary.get("best_val_dice"),
        best_epoch=summary.get("best_epoch"),
        checkpoint=summary.get("best_checkpoint"),
    )
    test = args.test_root.resolve() if args.test_root else args.data.resolve()
    eval_dir = work / "eval" / name
    eval_args = [f"ckpt_path={row['checkpoint']}", "data=carvana", f"data.root={test}",
                 f"split={'all' if args.test_root else 'val'}", f"hydra.run.dir={eval_dir}",
                 *args.eval_args]  # fmt: skip
    # --refine: bilinear first, then refined; else as eval scores it (the model's own refine)
    base = ["refine.guided=false"] if args.refine else []
    proc, wall = _run("eval", [*eval_args, *base], work)
    if proc.returncode != 0:
        return {**row, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    row.update(
        eval_s=round(wall, 1),
        scored_on="test root" if args.test_root else "its validation cars",
        n_images=metrics["n_images"],
        n_cars=len(metrics["cars"]),
        dice_mean=metrics["mean"],
        dice_median=metrics["median"],
        dice_min=metrics["min"],
        size_ceiling=metrics.get("size_ceiling"),
        by_view=metrics.get("by_view"),
        refine=metrics.get("refine"),  # the edge option it was scored with (None: bilinear)
    )
    if args.refine:  # the same checkpoint, its edge refined at full resolution
        proc, wall = _run(
            "eval",
            [*eval_args, "refine.guided=true", f"hydra.run.dir={eval_dir}-refined"],
            work,
        )
        if proc.returncode != 0:
            return {**row, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
        refined = json.loads((eval_dir.parent / f"{name}-refined" / "metrics.json").read_text())
        row.update(
            refined_eval_s=round(wall, 1),
            refined_dice_mean=refined["mean"],
            refined_dice_median=refined["median"],
            refined_dice_min=refined["min"],
        )
    return row


MEDIANS = ("epochs", "images_seen", "train_images_per_s", "start_up_s", "best_val_dice",
           "dice_mean", "dice_median", "dice_min", "size_ceiling", "refined_dice_mean",
           "refined_dice_min")  # fmt: skip


def summarise(rows: list[dict]) -> list[dict]:
    """One line per recipe: medians over the seeds, and the seeds' spread of the mean Dice."""
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        done = [r for r in rows if r["recipe"] == recipe and "dice_mean" in r]
        line = {"recipe": recipe, "runs": len(done),
                "failed": len([r for r in rows if r["recipe"] == recipe]) - len(done)}  # fmt: skip
        if done:
            means = [r["dice_mean"] for r in done]
            for key in MEDIANS:
                values = [r[key] for r in done if r.get(key) is not None]
                line[key] = statistics.median(values) if values else None
            line["dice_mean_spread"] = [min(means), max(means)]
            line["dice_mean_sd"] = statistics.stdev(means) if len(means) > 1 else 0.0
            line["budget"] = done[0]["budget"]
        out.append(line)
    return out


def markdown(result: dict) -> str:
    refined = any(s.get("refined_dice_mean") is not None for s in result["summary"])
    head = ("| recipe | budget | runs | epochs | images seen | train img/s | start-up s | "
            "best val/dice | Dice mean | median | worst | seeds' means (sd) |")  # fmt: skip
    columns = 12
    if refined:
        head += " edge refined: mean | worst |"
        columns += 2
    lines = [head, "|" + "---|" * columns]
    for s in result["summary"]:
        if not s["runs"]:
            lines.append(f"| `{s['recipe']}` | | 0 | failed |" + " |" * (columns - 3))
            continue
        lo, hi = s["dice_mean_spread"]
        line = (
            f"| `{s['recipe']}` | {s['budget']} | {s['runs']} | {s['epochs']:g} | "
            f"{s['images_seen']:g} | {s['train_images_per_s']:.1f} | {s['start_up_s']:.0f} | "
            f"{s['best_val_dice']:.4f} | {s['dice_mean']:.4f} | {s['dice_median']:.4f} | "
            f"{s['dice_min']:.4f} | {lo:.4f}-{hi:.4f} ({s['dice_mean_sd']:.4f}) |"
        )
        if refined:
            mean, worst = s.get("refined_dice_mean"), s.get("refined_dice_min")
            line += f" {mean:.4f} | {worst:.4f} |" if mean is not None else "  |  |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.markdown is not None:
            print(markdown(read_table(args.markdown)))
            return 0
        check_args(args)
    except RefusedError as err:
        print(f"bench_accuracy.py: {err}", file=sys.stderr)
        return 2
    rows: list[dict] = []
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="carseg-accuracy-") as tmp:
        work = args.keep or Path(tmp)
        for recipe in args.recipes:
            for seed in args.seeds:
                print(f"[{time.strftime('%H:%M:%S')}] {recipe} seed {seed} ...", file=sys.stderr)
                row = train_and_score(args, recipe, seed, work)
                rows.append(row)
                shown = row.get("error") or f"Dice {row['dice_mean']:.4f} ({row['epochs']} epochs)"
                print(f"    {shown}", file=sys.stderr)
                if all("error" in r for r in rows):
                    continue  # an earlier table is replaced by measurements, never by errors
                # saved after every run, so a stopped benchmark keeps what it measured
                result = {
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "data": str(args.data.resolve()),
                    "test_root": str(args.test_root.resolve()) if args.test_root else None,
                    "cpus": len(os.sched_getaffinity(0)),
                    "rows": rows,
                    "summary": summarise(rows),
                }
                args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not result:
        print(f"every run failed: nothing measured, {args.out} left as it was", file=sys.stderr)
        return 1
    print(markdown(result))
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
