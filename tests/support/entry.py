"""Running the entry points as a user does: ``src/<script>.py`` with its overrides, in a new
interpreter (``run_script``) or in this one (``run_entry``), and the tiny training run every
end-to-end test starts from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# A set of 3 small generated cars and a tiny U-Net: the whole pipeline in seconds.
TINY_TRAIN = [
    "data.synthetic.n_cars=3",
    "data.synthetic.height=64",
    "data.synthetic.width=96",
    "data.size=[32,48]",
    "data.num_workers=0",
    "model/net=unet_small",
    "model.net.base_width=4",
    "trainer.max_epochs=2",
]


def run_script(
    root: Path, script: str, *overrides: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``src/<script>.py`` as a user would, with runs landing in ``root/outputs``."""
    env = {**os.environ, "CARSEG_ROOT": str(root), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "src" / f"{script}.py"), *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_entry(root: Path, script: str, *overrides: str) -> subprocess.CompletedProcess:
    """Run ``src/<script>.py`` as ``run_script`` does, but in this process: the same argv, folder
    and environment, a tenth of the time (no new interpreter importing torch and Lightning).

    An exception that escapes the entry point is returned as exit status 1 with its traceback in
    ``stderr``, as the interpreter would print it. The logging set-up Hydra changes is restored.
    """
    import contextlib
    import io
    import logging
    import runpy
    import traceback

    out, err = io.StringIO(), io.StringIO()
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    saved_argv, saved_cwd = sys.argv[:], os.getcwd()
    saved_env = {"CARSEG_ROOT": os.environ.get("CARSEG_ROOT")}
    os.environ.update(CARSEG_ROOT=str(root))
    sys.argv = [str(REPO / "src" / f"{script}.py"), *overrides]
    os.chdir(root)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 (what the interpreter would print, and exit 1)
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for handler in root_logger.handlers[:]:
            if handler not in handlers:
                root_logger.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root_logger.handlers:
                root_logger.addHandler(handler)
        root_logger.setLevel(level)
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())
