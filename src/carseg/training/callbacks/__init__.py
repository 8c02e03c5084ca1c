"""Lightning callbacks that make a run readable, one per file.

- ``images.ValidationImageLogger``: a grid of fixed validation images with their true and
  predicted masks, every epoch, in TensorBoard's IMAGES tab (``carseg.utils.drawing``'s colours).
- ``hparams.HyperparameterLogger``: the hyperparameters and the final metrics in the HPARAMS tab.
- ``summary.RunSummary``: ``summary.json`` in the run folder when ``fit`` ends (or fails).
- ``record.CheckpointRecorder``: carseg's record (the model's construction, threshold, training
  size and split by car) in every checkpoint; ``carseg.training.train`` adds it to every run.

All are no-ops where they have nothing to do (no TensorBoard logger, a sanity check,
``fast_dev_run``), and only the global-zero process writes.
"""

from carseg.training.callbacks.hparams import HyperparameterLogger
from carseg.training.callbacks.images import ValidationImageLogger
from carseg.training.callbacks.record import CheckpointRecorder
from carseg.training.callbacks.summary import RunSummary

__all__ = ["CheckpointRecorder", "HyperparameterLogger", "RunSummary", "ValidationImageLogger"]
