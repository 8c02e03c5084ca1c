"""carseg.utils.errors: a user's mistake ends a command with one message and exit status 2 (a
SIGTERM with 143), whatever wrapped it; a full disk and a read-only destination are named as
such, and torch's words for a failed write are read as a full disk only where one is."""

from __future__ import annotations

import errno
import pickle
import shutil

import pytest

from carseg.utils.errors import (
    NEARLY_FULL,
    USER_ERROR,
    CarsegError,
    ConfigError,
    DataError,
    DataNotFoundError,
    DiskFullError,
    TerminatedError,
    TrainingDivergedError,
    UnreadableFileError,
    exit_user_error,
    first_line,
    free_space,
    from_os_error,
    is_disk_full,
    without_worker_traceback,
)

TORCH_FULL = (
    "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
    "data/3: file write failed"
)


def _disk(monkeypatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 0, free))


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfigError, ValueError),
        (DataError, ValueError),
        (DataNotFoundError, FileNotFoundError),
        (TrainingDivergedError, ArithmeticError),
        (DiskFullError, OSError),
        (UnreadableFileError, DataError),
    ],
)
def test_each_error_is_a_carseg_error_and_the_builtin_a_caller_would_catch(error, builtin):
    assert issubclass(error, CarsegError) and issubclass(error, builtin)


def test_a_users_mistake_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:
        exit_user_error(ConfigError("trainer.gpus=2: this machine has none"))
    assert stop.value.code == USER_ERROR == 2
    assert capsys.readouterr().err == "error: trainer.gpus=2: this machine has none\n"


def test_a_sigterm_exits_143_as_a_process_the_signal_ended(capsys):
    with pytest.raises(SystemExit) as stop:
        exit_user_error(TerminatedError("Stopped by SIGTERM"))
    assert stop.value.code == 143 == 128 + 15
    assert capsys.readouterr().err == "error: Stopped by SIGTERM\n"


def test_an_error_from_a_loader_worker_is_printed_without_the_workers_traceback(capsys):
    wrapped = (
        "Caught DataError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 3, in read\n'
        "    raise DataError(msg)\n"
        "carseg.utils.errors.UnreadableFileError: Cannot read x.gif: not an image\n"
        "Convert it to PNG"
    )
    assert without_worker_traceback(wrapped) == "Cannot read x.gif: not an image\nConvert it to PNG"
    assert without_worker_traceback("plain message") == "plain message"
    with pytest.raises(SystemExit):
        exit_user_error(DataError(wrapped))
    assert capsys.readouterr().err == "error: Cannot read x.gif: not an image\nConvert it to PNG\n"


def test_first_line_quotes_only_what_went_wrong():
    assert first_line(RuntimeError("CUDA out of memory.\nTried to allocate ...")) == (
        "CUDA out of memory."
    )
    assert first_line(KeyError()) == "KeyError"


def test_an_unreadable_file_names_it_and_survives_a_workers_reraise():
    err = UnreadableFileError("/data/x.gif", "not an image")
    assert str(err) == "Cannot read /data/x.gif: not an image"
    assert (err.path, err.reason) == ("/data/x.gif", "not an image")
    again = type(err)(str(err))  # how torch's DataLoader re-raises a worker's error
    assert str(again) == str(err)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_no_space_and_no_quota_are_a_full_disk(code):
    assert is_disk_full(OSError(code, "No space left on device", "x.ckpt"))


def test_other_failures_are_not_a_full_disk(tmp_path):
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied", "x.ckpt"))
    assert not is_disk_full(RuntimeError("CUDA out of memory"))
    assert not is_disk_full(ValueError(TORCH_FULL))


def test_torchs_failed_write_is_a_full_disk_only_where_the_disk_is_nearly_full(
    tmp_path, monkeypatch
):
    for words in (
        TORCH_FULL,
        "[enforce fail at inline_container.cc:778] . unexpected pos 640 vs 512",
    ):
        assert is_disk_full(RuntimeError(words))  # no folder to look at: taken at its word
        _disk(monkeypatch, NEARLY_FULL - 1)
        assert is_disk_full(RuntimeError(words), tmp_path)
        _disk(monkeypatch, NEARLY_FULL)
        assert not is_disk_full(RuntimeError(words), tmp_path)  # room enough: something else


def test_free_space_is_said_in_mib_or_not_at_all(tmp_path, monkeypatch):
    _disk(monkeypatch, 12 * 2**20)
    assert free_space(tmp_path / "last.ckpt") == " (12 MiB free)"
    assert free_space(None) == ""

    def unreachable(path):
        raise OSError(errno.ENOENT, "gone")

    monkeypatch.setattr(shutil, "disk_usage", unreachable)
    assert free_space(tmp_path / "last.ckpt") == ""


def test_a_full_disk_is_named_with_the_file_and_what_is_left(tmp_path, monkeypatch):
    _disk(monkeypatch, 3 * 2**20)
    err = from_os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.png")))
    assert isinstance(err, DiskFullError)
    assert str(err).startswith(f"No space left on the device while writing {tmp_path / 'm.png'}")
    assert "(3 MiB free)" in str(err) and "paths.log_dir" in str(err)
    torch_err = from_os_error(RuntimeError(TORCH_FULL))
    assert isinstance(torch_err, DiskFullError) and "is the disk full?" in str(torch_err)
    assert "PytorchStreamWriter failed writing file data/3" in str(torch_err)


def test_a_read_only_destination_is_a_config_error_naming_it():
    err = from_os_error(OSError(errno.EROFS, "Read-only file system", "/runs/x"))
    assert isinstance(err, ConfigError)
    assert "Cannot write /runs/x: Read-only file system" in str(err) and "output_dir=" in str(err)
    assert from_os_error(OSError(errno.EACCES, "Permission denied")) is None  # no file to name


@pytest.mark.parametrize(
    "err",
    [OSError(errno.EIO, "Input/output error", "x"), RuntimeError("CUDA error"), KeyError("x")],
)
def test_other_failures_stay_bugs_with_their_traceback(err):
    assert from_os_error(err) is None
