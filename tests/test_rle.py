import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from carseg.data.rle import read_rle_csv, rle_decode, rle_encode, write_rle_csv

# Kaggle's train_masks.csv row for 00087a6bd4dc_01.jpg begins so (see the sample's README).
KAGGLE_PREFIX = "879386 40 881253 141 883140 205 885009 17"


def _load_mask(path):
    with Image.open(path) as m:
        return (np.asarray(m) > 0).astype(np.uint8)


def test_encoding_matches_kaggle_train_masks_csv(sample_dir):
    mask = _load_mask(sample_dir / "train_masks" / "00087a6bd4dc_01_mask.gif")
    assert mask.shape == (1280, 1918)
    assert rle_encode(mask).startswith(KAGGLE_PREFIX + " ")


def test_all_real_masks_round_trip(sample_dir):
    paths = sorted((sample_dir / "train_masks").glob("*_mask.gif"))
    assert len(paths) == 32
    for path in paths:
        mask = _load_mask(path)
        assert np.array_equal(rle_decode(rle_encode(mask), mask.shape), mask), path.name


def test_known_small_cases():
    mask = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)  # row-major: pixels 2,3,4 are set
    assert rle_encode(mask) == "2 3"
    assert rle_encode(np.zeros((2, 3))) == ""
    assert rle_encode(np.ones((2, 3))) == "1 6"
    assert rle_decode("", (2, 3)).sum() == 0
    assert np.array_equal(rle_decode("1 1 6 1", (2, 3)), [[1, 0, 0], [0, 0, 1]])


@given(
    arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 1))
)
def test_round_trip(mask):
    encoded = rle_encode(mask)
    decoded = rle_decode(encoded, mask.shape)
    assert decoded.dtype == np.uint8
    assert np.array_equal(decoded, mask)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "odd number"),
        ("a 2", "not a pixel count"),
        ("1 99999999999999999999999", "not a pixel count"),
        ("0 2", "1-based"),
        ("1 0", "at least 1"),
        ("1 3 2 1", "overlap"),
        ("5 1 2 1", "out of order"),
        ("5 3", "past the 6 pixels"),
    ],
)
def test_malformed_strings_raise_clear_errors(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, (2, 3))


def test_csv_round_trip(tmp_path):
    rows = {"b_01.jpg": "1 2", "a_02.jpg": ""}
    write_rle_csv(tmp_path / "s.csv", rows)
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "img,rle_mask"
    assert read_rle_csv(tmp_path / "s.csv") == rows


def test_csv_bad_row_names_its_line(tmp_path):
    (tmp_path / "s.csv").write_text("img,rle_mask\na.jpg,1 2\nb.jpg\n")
    with pytest.raises(ValueError, match="line 3"):
        read_rle_csv(tmp_path / "s.csv")


@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from(["empty", "full", "edges", "checker"]),
)
def test_round_trip_special_masks(height, width, kind):
    mask = np.zeros((height, width), dtype=np.uint8)
    if kind == "full":
        mask[:] = 1
    elif kind == "edges":  # runs that start at the first pixel and end at the last
        mask[0, 0] = mask[-1, -1] = 1
    elif kind == "checker":  # the most runs a mask can have
        mask[(np.indices(mask.shape).sum(axis=0) % 2) == 0] = 1
    encoded = rle_encode(mask)
    assert np.array_equal(rle_decode(encoded, mask.shape), mask)
    if kind == "empty":
        assert encoded == ""
    if kind == "full":
        assert encoded == f"1 {height * width}"
    if kind == "edges":
        assert encoded.startswith("1 ")
        last_start, last_length = map(int, encoded.split()[-2:])
        assert last_start + last_length - 1 == height * width


@given(st.text(max_size=60))
def test_decoding_any_string_gives_a_mask_or_a_clear_error(text):
    try:
        mask = rle_decode(text, (5, 7))
    except ValueError as err:
        assert str(err)
    else:
        assert mask.shape == (5, 7) and set(np.unique(mask)) <= {0, 1}
