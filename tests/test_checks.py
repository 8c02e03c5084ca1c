"""carseg.utils.checks: each option check names the key, what it must be, and what it got."""

from __future__ import annotations

import pytest

from carseg.utils.checks import (
    check_choice,
    check_int,
    check_non_negative,
    check_positive,
    check_required,
    check_size,
    check_threshold,
)
from carseg.utils.errors import ConfigError


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (lambda v: check_int("data.batch_size", v, 1), 0, "data.batch_size must be an integer"),
        (lambda v: check_int("data.batch_size", v, 1), True, "got True"),
        (lambda v: check_int("data.batch_size", v, 1), 2.0, "got 2.0"),
        (lambda v: check_int("n", v, 0, hint="or auto"), -1, "n must be an integer >= 0 (or auto)"),
        (lambda v: check_positive("model.optimizer.lr", v), 0, "greater than 0, got 0"),
        (lambda v: check_positive("model.optimizer.lr", v), float("inf"), "must be a number"),
        (lambda v: check_positive("model.optimizer.lr", v), "abc", "must be a number, got 'abc'"),
        (lambda v: check_non_negative("w", v), -0.5, "w must be 0 or more, got -0.5"),
        (lambda v: check_threshold("threshold", v), 1.0, "between 0 and 1 (exclusive)"),
        (lambda v: check_threshold("threshold", v), 0, "threshold=0"),
        (lambda v: check_choice("split", v, ("val", "all")), "x", "choose one of val, all"),
        (lambda v: check_size("data.size", v), [0, 10], "data.size must be [height, width]"),
        (lambda v: check_size("data.size", v), "320x480", "got '320x480'"),
        (lambda v: check_size("data.size", v), [320], "got [320]"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_the_key(check, value, message):
    with pytest.raises(ConfigError) as err:
        check(value)
    assert message in str(err.value)


def test_good_values_come_back_as_their_type():
    assert check_int("n", 3, 1) == 3
    assert check_positive("lr", 1) == 1.0 and isinstance(check_positive("lr", 1), float)
    assert check_threshold("t", 0.5) == 0.5
    assert check_size("s", [320, 480]) == (320, 480)
    assert check_choice("c", "a", ("a", "b")) == "a"


def test_a_required_key_left_empty_is_named():
    assert check_required({"input": "photos/"}, "input", "a folder") == "photos/"
    for cfg in ({}, {"input": None}, {"input": ""}):
        with pytest.raises(ConfigError, match="input is required: an image file or a folder"):
            check_required(cfg, "input", "an image file or a folder")
