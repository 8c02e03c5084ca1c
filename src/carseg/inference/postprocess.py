"""What may be done to a predicted mask before it is scored or written: keep the largest connected
component (the car; specks of false car elsewhere go) and fill holes (background enclosed by
car). Each is an option of eval and predict (``postprocess`` in ``conf/inference``); whether it
helps is measured on validation cars (benchmarks/README.md: "Post-processing, threshold, TTA")."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from carseg.utils.checks import check_bool


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a {0, 1} mask ``(H, W)`` (an empty mask as it is)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 2:  # background and at most one component: nothing to remove
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == biggest).astype(mask.dtype)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region that does not touch the frame's border made car."""
    background = (mask == 0).astype(np.uint8)
    count, labels = cv2.connectedComponents(background, connectivity=4)
    if count <= 1:
        return mask
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    enclosed = (labels > 0) & ~np.isin(labels, border)
    return np.where(enclosed, 1, mask).astype(mask.dtype)


@dataclass(frozen=True)
class PostProcess:
    """The post-processing a run applies to every predicted mask, in this order."""

    largest_component: bool
    fill_holes: bool

    def __post_init__(self) -> None:
        check_bool("postprocess.largest_component", self.largest_component)
        check_bool("postprocess.fill_holes", self.fill_holes)

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        if self.largest_component:
            mask = largest_component(mask)
        if self.fill_holes:
            mask = fill_holes(mask)
        return mask
