"""Where the real CIFAR-10 data of ../shared lives, for any test that needs it.

The subset (5,482 train / 1,017 test images, row i = official row i of each batch) and
official-labels.json (all 50,000 + 10,000 official labels) sit beside the repository:
/work/main ↔ /work/shared here, and the same layout in CI.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

# $SSL_BENCH_SUBSET_DIR where the subset was copied elsewhere (benchmarks/gpu_check.py on a GPU machine)
SUBSET_DIR = Path(os.environ.get("SSL_BENCH_SUBSET_DIR") or Path(__file__).resolve().parents[2] / "shared/data/cifar10-subset")
SUBSET_BATCHES_DIR = SUBSET_DIR / "cifar-10-batches-py"
TRAIN_BATCH_NAMES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def official_labels() -> dict[str, np.ndarray]:
    """All official labels of every batch file, by file name (int64, 10,000 each)."""
    by_batch = json.loads((SUBSET_DIR / "official-labels.json").read_text())
    return {name: np.asarray(labels, dtype=np.int64) for name, labels in by_batch.items()}


@functools.cache
def official_train_labels() -> np.ndarray:
    """The 50,000 official training labels in torchvision's order (data_batch_1..5)."""
    labels = np.concatenate([official_labels()[name] for name in TRAIN_BATCH_NAMES])
    labels.setflags(write=False)
    return labels


@functools.cache
def subset_manifest() -> dict:
    return json.loads((SUBSET_DIR / "MANIFEST.json").read_text())

# A git bundle of TorchSSL holding the pinned commit, beside the project here and in CI (tests/conftest.py
# syncs the checkout from it, so that every TorchSSL test runs against the real reference).
TORCHSSL_BUNDLE = Path(__file__).resolve().parents[2] / "shared/mirrors/TorchSSL.bundle"


def torchssl_checkout() -> Path:
    """The verified pinned TorchSSL checkout; the calling test is skipped, with the reason, only when there is
    no bundle to sync it from (tests/conftest.py) and no checkout."""
    import pytest

    from implementations.torchssl import checkout as vendor

    try:
        return vendor.verify_checkout().path
    except vendor.VendorError as error:
        if TORCHSSL_BUNDLE.exists():
            raise  # conftest synced it from the bundle: a missing checkout now is a failure, not a skip
        pytest.skip(f"needs the TorchSSL checkout ({error})")
