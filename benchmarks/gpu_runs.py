"""The timed things of the GPU benchmark: a plain training loop, a Lightning fit, a matmul and
the project's data loader, each a closure that the harness runs and times.

The plain loop is the standard PyTorch one (``torch.autocast``, ``torch.amp.GradScaler`` for
fp16, fused Adam, channels_last model and inputs, ``torch.compile``). Training runs time
themselves: ``skip_steps`` untimed steps, then ``steps`` steps between two
``torch.cuda.synchronize()`` (inside ``Trainer.fit``, a callback does the same), so a fit's first
steps (Adam's state, Lightning's set-up) are not in the figure.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from gpu_config import Combo, GpuSettings, gpu_model_config
from harness import REPO, Variant, worker_pids

from fixtures import BARE_FIT

Run = Callable[[], tuple[int, float]]  # a self-timed run: (images, seconds)
Make = Callable[[], tuple[Callable[[], None] | None, Run]]  # builds (untimed prepare, run)


class GpuPeaks:
    """Peak GPU memory of each variant, as if it ran alone.

    ``torch.cuda.max_memory_allocated`` is the process's, and the other variants' models stay on
    the GPU between their runs. So a run's peak is taken above what was allocated when it started
    (the counter reset then), plus what the variant itself keeps between runs (weights,
    gradients, Adam's state). The CUDA context and the allocator's cache are not in it.
    """

    def __init__(self) -> None:
        self.mib: dict[str, float] = {}
        self._id = ""
        self._base = 0

    def reset(self, vid: str) -> None:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self._id, self._base = vid, torch.cuda.memory_allocated()

    def record(self, kept_bytes: int = 0) -> None:
        import torch

        peak = torch.cuda.max_memory_allocated() - self._base + kept_bytes
        self.mib[self._id] = max(self.mib.get(self._id, 0.0), peak / 2**20)


def kept_bytes(model: Any, optimizer: Any) -> int:
    """GPU bytes that a training loop keeps between steps: weights, buffers, gradients, Adam."""
    import torch

    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [t for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


def plain_loop(combo: Combo, gs: GpuSettings, loader: Any, peaks: GpuPeaks) -> Run:
    """The standard PyTorch training loop over ``loader``'s GPU batches, in ``combo``'s settings:
    autocast to the precision (GradScaler for fp16), fused Adam, the model and each input in
    channels_last, torch.compile of the model."""
    import torch

    from carseg.training.segmentation_module import SegmentationModule

    cfg = gpu_model_config()
    torch.manual_seed(0)  # the same initial weights as Lightning's model
    module = SegmentationModule(**cfg)
    model = module.net.cuda().train()
    if combo.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = module.criterion  # the same loss as the module's training_step
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=cfg["optimizer"]["lr"],
        weight_decay=cfg["optimizer"]["weight_decay"],
        fused=True,
    )
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(combo.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    net = torch.compile(model) if combo.compile else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if combo.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype is not None):
            loss = criterion(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def run() -> tuple[int, float]:
        batches = iter(loader)
        for x, y in itertools.islice(batches, gs.skip_steps):
            step(x, y)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for x, y in batches:
            step(x, y)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peaks.record(kept_bytes(model, optimizer))
        return gs.steps * gs.batch, seconds

    return run


def step_timer(skip: int, steps: int) -> Any:
    """A Lightning callback timing a fit's steps ``skip .. skip + steps - 1`` between two CUDA
    synchronisations: the plain loop's window, inside ``Trainer.fit``."""
    import pytorch_lightning as pl
    import torch

    class StepTimer(pl.Callback):
        seconds = math.nan

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.seconds = math.nan

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            if batch_idx == skip:
                torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
            if batch_idx == skip + steps - 1:
                torch.cuda.synchronize()
                self.seconds = time.perf_counter() - self.start

    return StepTimer()


def lightning_fit(
    combo: Combo, gs: GpuSettings, loader: Any, peaks: GpuPeaks
) -> tuple[Callable[[], None], Run]:
    """``Trainer.fit`` of the module in ``combo``'s settings: (build a Trainer, untimed; fit).

    The module's own switches do channels_last and compile, and its ``configure_optimizers``
    makes the Adam (torch's default implementation, not fused: what a real run gets). Lightning
    moves the model back to the CPU at the end of each fit, so everything it uses on the GPU is
    allocated inside the run and its peak needs nothing added.
    """
    import pytorch_lightning as pl
    import torch

    from carseg.training.segmentation_module import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule(**gpu_model_config(combo))
    timer = step_timer(gs.skip_steps, gs.steps)
    trainers: list[pl.Trainer] = []

    def build() -> None:
        limit = gs.skip_steps + gs.steps
        trainers[:] = [
            pl.Trainer(
                accelerator="gpu", devices=1, precision=combo.precision, benchmark=False,
                callbacks=[timer], limit_train_batches=limit, **BARE_FIT,
            )
        ]  # fmt: skip

    def run() -> tuple[int, float]:
        trainers[0].fit(module, train_dataloaders=loader)
        peaks.record()
        if not math.isfinite(timer.seconds):
            raise RuntimeError("the fit ended before its timed steps")
        return gs.steps * gs.batch, timer.seconds

    return build, run


def matmul(dtype_name: str, n: int, k: int) -> Run:
    """``k`` (n, n) @ (n, n) products, timed with CUDA events: the GPU's own clock."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = (
        torch.randn(n, n, device="cuda", dtype=dtype),
        torch.randn(n, n, device="cuda", dtype=dtype),
    )

    def run() -> tuple[int, float]:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(k):
            torch.mm(a, b)
        end.record()
        end.synchronize()
        return k, start.elapsed_time(end) / 1000

    return run


def loader_variant(gs: GpuSettings, size: tuple[int, int], root: Path, tmp: Path) -> Variant:
    """The project's training loader (conf/data/carvana.yaml: augmentations, JPEG draft, the
    machine's cores less one as workers, pinned memory) at ``size``, each batch copied to the
    GPU: the images/s that it can feed training.

    A run is the first ``loader_batches_per_worker`` x workers batches of an epoch, the epoch
    started untimed (``prepare``). Continuing one iterator across runs would not do: the
    workers fill their prefetch queues while the other variants run, and the next run would
    time queued batches, not decoding.
    """
    import torch
    from omegaconf import OmegaConf
    from torch.utils.data import ConcatDataset

    from carseg.data.datamodule import CarvanaDataModule
    from carseg.utils.processes import loader_workers

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "data" / "carvana.yaml"))
    cfg.pop("_target_", None)
    cfg.update(
        root=str(root), size=list(size), batch_size=gs.batch, num_workers="auto",
        pin_memory=True, cache_dir=str(tmp / "cache"),
    )  # fmt: skip
    dm = CarvanaDataModule(**cfg)
    dm.setup("fit")
    workers = loader_workers("auto")
    n_batches = gs.loader_batches_per_worker * max(1, workers)
    # The sample's 16 training images make an epoch shorter than a run: repeat them.
    repeat = math.ceil(n_batches * gs.batch / len(dm.train_set))
    note = f"training images x{repeat} per epoch" if repeat > 1 else ""
    if repeat > 1:
        dm.train_set = ConcatDataset([dm.train_set] * repeat)
    loader = dm.train_dataloader()
    epoch: list[Iterator] = []

    def start_epoch() -> None:
        # Persistent workers: this drains what the previous run left queued, then starts anew.
        epoch[:] = [iter(loader)]

    def run() -> int:
        images_done = 0
        for images, masks in itertools.islice(epoch[0], n_batches):
            images.to("cuda", non_blocking=True)
            masks.to("cuda", non_blocking=True)
            images_done += len(images)
        torch.cuda.synchronize()
        return images_done

    h, w = size
    what = f"loader {h}x{w} b{gs.batch}, {workers} workers, pinned, to GPU"
    pids = partial(worker_pids, loader)
    return Variant(f"gpu.loader.{h}x{w}", what, run, start_epoch, workers=pids, note=note)
