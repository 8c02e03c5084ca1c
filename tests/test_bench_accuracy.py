"""`make bench-accuracy` end to end on the real sample: a recipe trained for a budget, its best
checkpoint scored at full resolution on its validation car (and again with the edge refined), the
table printed and saved (after every run), and a saved result printed again as markdown."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_accuracy  # noqa: E402

# carvana_cpu shrunk to what trains in seconds (a width-4 U-Net at 32x48); its other choices stay
RECIPE = "carvana_cpu model/net=unet data.size=[32,48] model.net.base_width=4 data.batch_size=4"


@pytest.mark.slow
def test_trains_scores_and_saves_a_table(sample_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "accuracy.json"
    rc = bench_accuracy.main([
        "--data", str(sample_dir), "--recipes", RECIPE, "--steps", "10", "--refine",
        "--seeds", "3", "--split-seed", "0", "--val-fraction", "0.5", "--out", str(out),
        "--keep", str(tmp_path / "w"),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    # a budget in steps: the same images on any CPU (one car of 16 photos, batch 4: 4 a epoch)
    assert row["recipe"] == RECIPE and row["budget"] == "10 steps"
    assert (row["seed"], row["split_seed"]) == (3, 0)
    # one of the two cars validates; eval scored its 16 photos at their own size
    assert (row["n_cars"], row["n_images"], row["scored_on"]) == (1, 16, "its validation cars")
    assert 0.0 <= row["dice_min"] <= row["dice_median"] <= 1.0
    assert 0.0 <= row["dice_mean"] <= 1.0 and 0.0 < row["size_ceiling"] <= 1.0
    assert row["images_seen"] == 40 and row["epochs"] == 2.5 and row["train_images_per_s"] > 0
    # the same checkpoint scored a second time, its probabilities refitted to the photos' edges
    assert 0.0 <= row["refined_dice_min"] <= row["refined_dice_mean"] <= 1.0
    assert row["refined_dice_mean"] != row["dice_mean"]
    assert row["refine"] is None  # (the first score bilinear, whatever the recipe records)
    assert row["start_up_s"] >= 0 and Path(row["checkpoint"]).is_file()
    (line,) = result["summary"]
    assert line["runs"] == 1 and line["dice_mean"] == row["dice_mean"]
    assert line["dice_mean_spread"] == [row["dice_mean"], row["dice_mean"]]
    printed = capsys.readouterr().out
    assert f"| `{RECIPE}` | 10 steps | 1 |" in printed
    assert f"| {row['refined_dice_mean']:.4f} | {row['refined_dice_min']:.4f} |" in printed

    assert bench_accuracy.main(["--markdown", str(out)]) == 0
    again = capsys.readouterr().out
    assert f"{row['dice_mean']:.4f}" in again and again.startswith("| recipe | budget |")


def test_refuses_a_folder_without_train(tmp_path: Path, capsys) -> None:
    assert bench_accuracy.main(["--data", str(tmp_path), "--out", str(tmp_path / "a.json")]) == 2
    assert "no train/ folder" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()


def test_a_recipe_is_an_experiment_and_overrides() -> None:
    assert bench_accuracy.recipe_overrides("carvana_cpu model.optimizer.lr=3e-3") == [
        "experiment=carvana_cpu", "model.optimizer.lr=3e-3"]  # fmt: skip
    assert bench_accuracy.recipe_overrides("data.size=[64,96]") == ["data.size=[64,96]"]


def test_recipes_that_differ_only_at_the_end_run_in_folders_of_their_own() -> None:
    long = "carvana_cpu model/net=efficientnet_lite0_unet model.net.encoder_weights=imagenet"
    a, b = (bench_accuracy.run_name(f"{long} model.net.decoder_width={w}", 0) for w in (4, 8))
    assert a != b and len(a) < 130 and a.endswith("-seed0")
    assert bench_accuracy.run_name(long, 0) != bench_accuracy.run_name(long, 1)


# --- refused before any training, an earlier table left as it was -------------------------------
EARLIER = '{"summary": [], "rows": [{"dice_mean": 0.99}]}\n'


def _data(tmp: Path, name: str = "data", seed: int = 0) -> Path:
    from carseg.data.synthetic import ensure_dataset

    return ensure_dataset(tmp / name, n_cars=2, height=32, width=48, seed=seed)


def _read_only_out(tmp: Path) -> list[str]:
    (tmp / "mount").mkdir()
    return ["--out", str(tmp / "mount" / "a.json")]


BENCH_REFUSED = [
    ("--budget abc", lambda t: ["--data", str(_data(t)), "--budget", "abc"],
     "--budget must be days:hours:minutes:seconds"),
    ("--test-root equal to --data", lambda t: ["--data", str(_data(t)), "--test-root",
                                               str(_data(t))], "is --data"),
    ("--test-root holding --data's cars", lambda t: ["--data", str(_data(t)), "--test-root",
                                                     str(_data(t, "copy"))], "car(s) of --data"),
    ("--out a folder", lambda t: ["--data", str(_data(t)), "--out", str(t)], "is a folder"),
    ("--out read-only", lambda t: ["--data", str(_data(t)), *_read_only_out(t)],
     "--out's folder=" ),
    ("--markdown missing.json", lambda t: ["--markdown", str(t / "missing.json")],
     "missing.json: no such file"),
    ("--markdown a file that is not a table", lambda t: ["--markdown", str(_data(t) / "a.csv")],
     "is not a saved table"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "args", "message"), BENCH_REFUSED, ids=[r[0] for r in BENCH_REFUSED]
)
def test_a_mistake_is_refused_before_training_and_keeps_the_earlier_table(
    tmp_path: Path, capsys, monkeypatch, name, args, message
) -> None:
    from support.files import read_only

    monkeypatch.setattr(bench_accuracy, "train_and_score", lambda *a: pytest.fail("trained"))
    earlier = tmp_path / "accuracy.json"
    earlier.write_text(EARLIER)
    argv = ["--out", str(earlier), *args(tmp_path)]
    (tmp_path / "data" / "a.csv").parent.mkdir(exist_ok=True)
    (tmp_path / "data" / "a.csv").write_text("img,rle_mask\n")
    with read_only(tmp_path / "mount"):
        assert bench_accuracy.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert earlier.read_text() == EARLIER


def test_runs_that_all_fail_leave_the_earlier_table_as_it_was(tmp_path: Path, capsys, monkeypatch):
    def failing(args, recipe, seed, work):
        return {"recipe": recipe, "error": ["boom"]}

    monkeypatch.setattr(bench_accuracy, "train_and_score", failing)
    earlier = tmp_path / "accuracy.json"
    earlier.write_text(EARLIER)
    assert bench_accuracy.main(["--data", str(_data(tmp_path)), "--out", str(earlier)]) == 1
    assert earlier.read_text() == EARLIER
    assert "left as it was" in capsys.readouterr().err
