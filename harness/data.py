"""CIFAR-10 from the official python batches (`cifar-10-batches-py`), held in memory as uint8 HWC.

`load_cifar10(data_dir)` reads the folder torchvision and TorchSSL read: `data_batch_1..5` (the
training set, concatenated in that order, as torchvision's `CIFAR10(train=True)` does, so index i
here is index i there), `test_batch` and `batches.meta` (class names). `data_dir` is either that
folder or a folder containing it; with `download=True` a missing folder is fetched by torchvision.

Every file's MD5 is compared with the official one. `ImageData.official` is True only for the
unmodified full set (50,000 + 10,000 rows); anything else (e.g. the real prefix subset in
../shared/data/cifar10-subset) is accepted and marked `official=False`, so a run's record says
that its numbers are not on the official data.

`ImageData.identity` names the training data a label split indexes into, and enters every split
digest (harness/splits.py):
- "cifar10" for the official set;
- otherwise "cifar10-nonofficial-<rows>-<12 hex>", the hex being the start of the sha256 of the
  training labels (little-endian int64) followed by the training images (uint8, N×32×32×3 HWC).
  It depends on the content only, not on how the pickles encode it, and is the same on every load.

Any problem with the files raises `DataError`, one sentence naming the path.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implementations.interface import ImageData

BATCHES_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
# MD5 of the official files of cifar-10-python.tar.gz (the same sums torchvision's CIFAR10 checks).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
OFFICIAL_TRAIN_ROWS = 50_000
OFFICIAL_TEST_ROWS = 10_000
OFFICIAL_IDENTITY = "cifar10"
IMAGE_SHAPE = (32, 32, 3)
PIXELS_PER_IMAGE = 32 * 32 * 3


class DataError(ValueError):
    """The data folder is missing or its files are not valid CIFAR-10 batches."""


def load_cifar10(data_dir: Path | str, download: bool = False) -> ImageData:
    """Read CIFAR-10 from `data_dir` (the `cifar-10-batches-py` folder or its parent)."""
    folder = _batches_folder(Path(data_dir), download)
    class_names = _read_class_names(folder / META_FILE)
    train_batches = [_read_batch(folder / name, len(class_names)) for name in TRAIN_BATCHES]
    test_batch = _read_batch(folder / TEST_BATCH, len(class_names))

    train_images = _images_hwc([batch.pixels for batch in train_batches])
    train_labels = np.concatenate([batch.labels for batch in train_batches])
    official = (
        all(batch.md5 == OFFICIAL_MD5[batch.path.name] for batch in [*train_batches, test_batch])
        and len(train_labels) == OFFICIAL_TRAIN_ROWS
        and len(test_batch.labels) == OFFICIAL_TEST_ROWS
    )
    return ImageData(
        train_images=train_images,
        train_labels=train_labels,
        test_images=_images_hwc([test_batch.pixels]),
        test_labels=test_batch.labels,
        class_names=class_names,
        identity=OFFICIAL_IDENTITY if official else nonofficial_identity(train_labels, train_images),
        official=official,
        source_dir=str(folder.resolve()),
    )


def nonofficial_identity(train_labels: np.ndarray, train_images: np.ndarray) -> str:
    """The identity of training data that is not the official set (see the module docstring)."""
    content = hashlib.sha256(np.ascontiguousarray(train_labels, dtype="<i8").tobytes())
    content.update(np.ascontiguousarray(train_images, dtype=np.uint8).data)
    return f"cifar10-nonofficial-{len(train_labels)}-{content.hexdigest()[:12]}"


def _batches_folder(data_dir: Path, download: bool) -> Path:
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir} is a file, not a folder holding {BATCHES_FOLDER}.")
    for candidate in (data_dir / BATCHES_FOLDER, data_dir):
        if candidate.is_dir() and any((candidate / name).exists() for name in (*TRAIN_BATCHES, TEST_BATCH, META_FILE)):
            return candidate
    if not download:
        raise DataError(
            f"CIFAR-10 was not found at {data_dir}: place the {BATCHES_FOLDER} folder there "
            f"(or pass it as the data folder itself), or pass --download to fetch it with torchvision."
        )
    root = data_dir.parent if data_dir.name == BATCHES_FOLDER else data_dir
    _download(root)
    return root / BATCHES_FOLDER


def _download(root: Path) -> None:
    import implementations.torchvision_compat  # noqa: F401  (must precede any torchvision import)
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(root=str(root), train=True, download=True)
    except Exception as error:  # urllib, tarfile and torchvision's integrity check raise many kinds
        raise DataError(
            f"could not download CIFAR-10 into {root} ({error}); place the {BATCHES_FOLDER} folder there instead."
        ) from error


@dataclass(frozen=True)
class _Batch:
    path: Path
    pixels: np.ndarray  # uint8 (K, 3072): 1024 R, 1024 G, 1024 B values per row, row-major 32×32
    labels: np.ndarray  # int64 (K,)
    md5: str


def _read_batch(path: Path, num_classes: int) -> _Batch:
    raw = _read_bytes(path)
    entry = _unpickle(raw, path)
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        found = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(f"{path} is not a CIFAR-10 batch: expected the keys 'data' and 'labels', found {found}.")
    pixels = entry["data"]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != PIXELS_PER_IMAGE:
        described = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DataError(f"{path} holds data of {described}, expected a uint8 array of shape (rows, {PIXELS_PER_IMAGE}).")
    labels = _labels_array(entry["labels"], path)
    if len(labels) != len(pixels):
        raise DataError(f"{path} holds {len(pixels)} images but {len(labels)} labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path} holds labels from {labels.min()} to {labels.max()}, outside 0..{num_classes - 1}.")
    return _Batch(path=path, pixels=pixels, labels=labels, md5=hashlib.md5(raw, usedforsecurity=False).hexdigest())


def _read_class_names(path: Path) -> tuple[str, ...]:
    entry = _unpickle(_read_bytes(path), path)
    names = entry.get("label_names") if isinstance(entry, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise DataError(f"{path} is not CIFAR-10's batches.meta: expected a list of class names under 'label_names'.")
    return tuple(names)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} is missing: a CIFAR-10 folder needs {', '.join(TRAIN_BATCHES)}, "
                        f"{TEST_BATCH} and {META_FILE}.") from None
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror}).") from error


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches and nothing else: a pickle may name any callable, so only the
    numpy array reconstructors the batch files use are allowed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise _ForeignReference(f"{module}.{name}")
        return super().find_class(module, name)


class _ForeignReference(pickle.UnpicklingError):
    """The pickle names a callable a CIFAR-10 batch never uses (and that we refuse to run)."""


def _unpickle(raw: bytes, path: Path) -> object:
    # The official batches are Python 2 pickles: latin1 turns their str keys into str, bytes intact.
    try:
        return _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _ForeignReference as error:
        raise DataError(f"{path} is not a CIFAR-10 batch: its pickle calls {error}, which we refuse to run.") from None
    except Exception as error:  # truncated or corrupt pickles fail with many exception types
        reason = str(error).rstrip(".") or type(error).__name__
        raise DataError(f"{path} is not a readable CIFAR-10 pickle (truncated or corrupt: {reason}).") from error


def _labels_array(labels: object, path: Path) -> np.ndarray:
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path} holds labels that are not a list of integers ({error}).") from error
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise DataError(f"{path} holds labels of {array.dtype} {array.shape}, expected a list of integers.")
    return array.astype(np.int64, copy=False)


def _images_hwc(batches: list[np.ndarray]) -> np.ndarray:
    """Planar rows (K, 3072) → contiguous (N, 32, 32, 3), copied once straight into place.

    One colour plane at a time: each write reads contiguous memory, faster than copying the (0, 2, 3, 1)
    transpose in one go (docs/performance.md, "Measured choices in the code").
    """
    images = np.empty((sum(len(batch) for batch in batches), *IMAGE_SHAPE), dtype=np.uint8)
    start = 0
    for batch in batches:
        planes = batch.reshape(len(batch), 3, 32, 32)
        for channel in range(3):
            images[start:start + len(batch), :, :, channel] = planes[:, channel]
        start += len(batch)
    return images
