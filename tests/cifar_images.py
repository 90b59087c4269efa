"""A few real CIFAR-10 training images from ../shared, read straight from the official pickle.

For the augmentation tests, which need real pixels but not the data loader: rows 0.. of
data_batch_1 of the real subset (uint8 (K, 3072) in R, G, B planes of 32 x 32).
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np

DATA_BATCH_1 = Path(__file__).resolve().parents[2] / "shared/data/cifar10-subset/cifar-10-batches-py/data_batch_1"


@functools.cache
def _first_rows(count: int) -> np.ndarray:
    with open(DATA_BATCH_1, "rb") as file:
        batch = pickle.load(file, encoding="latin1")
    images = np.asarray(batch["data"][:count], dtype=np.uint8).reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)
    images = np.ascontiguousarray(images)
    images.setflags(write=False)
    return images


def cifar_images(count: int) -> np.ndarray:
    """The first `count` training images, uint8 (count, 32, 32, 3) RGB, read-only."""
    return _first_rows(count)
