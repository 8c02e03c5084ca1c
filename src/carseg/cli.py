"""What the entry points share: turning user errors into one clear message and exit code 2."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from hydra.errors import InstantiationException

from carseg.errors import CarsegError, ConfigError


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Print a ``CarsegError`` (also when Hydra's instantiate wrapped it) and exit with status 2.

    Other exceptions are bugs and keep their traceback.
    """
    try:
        yield
    except (CarsegError, InstantiationException) as err:
        cause = err if isinstance(err, CarsegError) else err.__cause__
        if not isinstance(cause, CarsegError):
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def require(cfg, key: str, what: str) -> None:
    """Stop with a message naming ``key`` when the config leaves it empty."""
    if cfg.get(key) in (None, ""):
        raise ConfigError(f"{key} is required: {what}")
