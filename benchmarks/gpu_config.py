"""What the GPU benchmark measures: its settings, and the grid of training variants.

The issue's configuration is the paper's U-Net: ``conf/model/unet.yaml`` with base_width 64,
depth 4 and transposed convolutions (31.0 M parameters), trained at 640x960, batch 4. The grid
crosses precision (32-true, 16-mixed, bf16-mixed), memory layout (NCHW, channels_last) and
compile (off, on); Lightning runs the fastest of them and the GPU recipe's default. Nothing here
needs a GPU, so the tests check it on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from fixtures import default_model_config

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")  # Lightning's names for them
MODEL_OVERRIDES = {"base_width": 64, "depth": 4, "bilinear": False}  # the U-Net
FULL_SIZE = (1280, 1918)  # Carvana's photos, (height, width)


@dataclass(frozen=True)
class Combo:
    """One training configuration: precision x memory layout x compile."""

    precision: str
    channels_last: bool
    compile: bool

    @property
    def name(self) -> str:
        layout = "channels_last" if self.channels_last else "nchw"
        return f"{self.precision}.{layout}.{'compile' if self.compile else 'eager'}"

    @property
    def label(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{self.precision}, {layout}" + (", compile" if self.compile else "")


SHIPPED = Combo("16-mixed", channels_last=True, compile=True)  # the GPU recipe's default


def grid(compile_: bool) -> list[Combo]:
    """The plain loop's variants: every precision x layout, eager, and compiled if ``compile_``."""
    modes = (False, True) if compile_ else (False,)
    return [Combo(p, cl, c) for c in modes for p in PRECISIONS for cl in (False, True)]


def lightning_combos(fastest: Combo | None, compile_: bool) -> list[Combo]:
    """Lightning's variants: the grid's fastest and the recipe's default (eager under
    ``--no-compile``), once each."""
    shipped = SHIPPED if compile_ else Combo(SHIPPED.precision, SHIPPED.channels_last, False)
    return list(dict.fromkeys(c for c in (fastest, shipped) if c is not None))


@dataclass(frozen=True)
class GpuSettings:
    """What the GPU run measures and how often (the default run, or ``--quick``)."""

    quick: bool
    repeats: int  # timed runs per variant, after `warmup` untimed ones
    warmup: int
    size: tuple[int, int]  # training (height, width)
    batch: int
    steps: int  # timed training steps per run
    skip_steps: int  # untimed steps at the start of every run
    compile: bool
    matmul_n: int
    matmuls_per_run: int
    loader_sizes: tuple[tuple[int, int], ...]
    loader_batches_per_worker: int  # a loader run is this many batches per worker
    synthetic_cars: int  # generated when the real sample is absent (a split by car needs 2)


def gpu_settings(
    quick: bool,
    compile_: bool | None,
    size: tuple[int, int] | None = None,
    batch: int | None = None,
) -> GpuSettings:
    """The GPU run's settings; ``compile_`` None: compile except with ``quick`` (as on the CPU:
    a smoke run should not wait minutes for cold compiles)."""
    size = tuple(size) if size else ((64, 96) if quick else (640, 960))
    batch = batch or (2 if quick else 4)
    if quick:
        return GpuSettings(
            quick=True, repeats=2, warmup=1, size=size, batch=batch, steps=3, skip_steps=1,
            compile=bool(compile_), matmul_n=1024, matmuls_per_run=3, loader_sizes=(size,),
            loader_batches_per_worker=4, synthetic_cars=2,
        )  # fmt: skip
    return GpuSettings(
        quick=False, repeats=5, warmup=1, size=size, batch=batch, steps=20, skip_steps=3,
        compile=compile_ is not False, matmul_n=8192, matmuls_per_run=50,
        loader_sizes=tuple(dict.fromkeys((size, FULL_SIZE))), loader_batches_per_worker=8,
        synthetic_cars=2,
    )  # fmt: skip


def gpu_model_config(combo: Combo | None = None) -> dict:
    """``conf/model/unet.yaml`` with the issue's overrides and the combo's switches, passed as
    explicit booleans (both off without a combo: the plain loop applies them itself)."""
    cl, compiled = (combo.channels_last, combo.compile) if combo else (False, False)
    return default_model_config(**MODEL_OVERRIDES, channels_last=cl, compile=compiled)


def cuda_missing() -> str | None:
    """Why this machine cannot run the GPU benchmark, in one line; None when it can."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (
        f"--device cuda needs an NVIDIA GPU, and torch {torch.__version__} ({build}) sees none; "
        "run it on a GPU machine, or leave --device out for the CPU benchmark"
    )
