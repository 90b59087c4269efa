"""Seeded, class-balanced label splits: the labeled subset of the training set, as a value.

`draw_split(train_labels, num_labels, seed)` draws exactly the indices TorchSSL draws for the same
seed, so our runs and TorchSSL's train on the same labeled images. TorchSSL's rule (fixmatch.py
`main_worker` → `SSL_Dataset.get_ssl_dset` → `split_ssl_data` → `sample_labeled_data`, commit
f26e1d4) is:

    np.random.seed(seed)
    for c in range(num_classes):
        labeled += list(np.random.choice(np.where(labels == c)[0], num_labels // num_classes, False))

What we checked in that code path: `main_worker` seeds `random`, `torch` and the global NumPy RNG
with `args.seed` at its top; nothing between there and `sample_labeled_data` draws from the
global NumPy RNG (building the WideResNet and the optimizer use torch's RNG; `SSL_Dataset` only
builds transforms and reads CIFAR-10 through torchvision; `split_ssl_data` samples before anything
else), so the first NumPy draws after seeding are the per-class `np.random.choice` calls. The
labels are torchvision's `CIFAR10(train=True).targets` (data_batch_1..5 in order), as
`harness.data.load_cifar10` returns them. Two TorchSSL behaviours to know:
- for CIFAR-10 with exactly 10 labels it ignores the rule and takes a fixed index table (the
  FixMatch paper's 1-label-per-class splits, `fixmatch_index[-seed - 1]`), and then also ignores
  an injected `sampled_label_idx.npy`; `draw_split` applies the rule for every label count.
- when `{save_dir}/{save_name}/sampled_label_idx.npy` exists it loads those indices instead of
  sampling, which is how the TorchSSL adapter hands it our split.

We draw from `np.random.RandomState(seed)`, which is the same legacy MT19937 stream as the
global RNG after `np.random.seed(seed)` (tests/test_splits.py checks it against the literal rule
above), without touching the caller's global NumPy state.

The unlabeled set is the whole training set, labeled images included, as in the FixMatch paper
and TorchSSL (`include_lb_to_ulb=True`): a split only names the labeled indices.

A split is identified by its digest, sha256 of its indices sorted as little-endian int64 followed
by the UTF-8 data set identity (`ImageData.identity`), so the same indices on different data
never share a digest. `LabelSplit.save(path)` writes `<path>.npy` (the indices in draw order) and
`<path>.json` (num_labels, seed, dataset_identity, digest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from implementations.common import write_atomically


class SplitError(ValueError):
    """A split that cannot be drawn, or a split file that cannot be trusted."""


def draw_split(
    train_labels: np.ndarray,
    num_labels: int,
    seed: int,
    num_classes: int = 10,
    dataset_identity: str = "cifar10",
) -> LabelSplit:
    """`num_labels // num_classes` training indices per class, drawn with TorchSSL's rule."""
    labels = np.asarray(train_labels)
    if labels.ndim != 1 or not (labels.dtype.kind in "iu" or labels.size == 0):
        raise SplitError(f"train labels must be a 1-D integer array, not {labels.dtype} {labels.shape}.")
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) \
            or num_labels <= 0 or num_labels % num_classes:
        raise SplitError(f"the number of labels must be a positive multiple of the {num_classes} classes, "
                         f"got {num_labels}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise SplitError(f"train labels range from {labels.min()} to {labels.max()}, outside the "
                         f"{num_classes} classes 0..{num_classes - 1}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise SplitError(f"the seed must be an integer in 0..2**32-1 (NumPy's legacy seeding), got {seed!r}.")

    per_class = num_labels // num_classes
    candidates_by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    for c, candidates in enumerate(candidates_by_class):
        if len(candidates) == 0:
            raise SplitError(f"class {c} has no training images, so no labels can be drawn from it.")
        if len(candidates) < per_class:
            raise SplitError(f"{num_labels} labels need {per_class} images of each class, "
                             f"but class {c} has only {len(candidates)}.")

    rng = np.random.RandomState(int(seed))
    labeled_indices = np.concatenate(
        [rng.choice(candidates, per_class, replace=False) for candidates in candidates_by_class]
    )
    return LabelSplit(labeled_indices.astype(np.int64), int(num_labels), int(seed), dataset_identity)


@dataclass(frozen=True, eq=False)
class LabelSplit:
    """The labeled training indices of one (data set, label count, seed)."""

    labeled_indices: np.ndarray  # int64, in draw order (class 0's draws first); read-only
    num_labels: int
    seed: int | None  # None for a split loaded from a bare .npy without its sidecar
    dataset_identity: str

    def __post_init__(self) -> None:
        indices = np.array(self.labeled_indices, copy=True)
        if indices.ndim != 1 or not (indices.dtype.kind in "iu" or indices.size == 0):
            raise SplitError(f"labeled indices must be a 1-D integer array, not {indices.dtype} {indices.shape}.")
        indices = indices.astype(np.int64)
        if len(indices) != self.num_labels:
            raise SplitError(f"a split of {self.num_labels} labels cannot hold {len(indices)} indices.")
        if indices.size and indices.min() < 0:
            raise SplitError(f"labeled indices must not be negative, found {indices.min()}.")
        if len(np.unique(indices)) != len(indices):
            raise SplitError("labeled indices must not repeat an index.")
        indices.setflags(write=False)
        object.__setattr__(self, "labeled_indices", indices)

    @cached_property
    def labeled_indices_sorted(self) -> np.ndarray:
        indices = np.sort(self.labeled_indices)
        indices.setflags(write=False)
        return indices

    @cached_property
    def digest(self) -> str:
        content = self.labeled_indices_sorted.astype("<i8").tobytes() + self.dataset_identity.encode("utf-8")
        return hashlib.sha256(content).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSplit):
            return NotImplemented
        return (self.num_labels, self.seed, self.dataset_identity) == (other.num_labels, other.seed,
                                                                       other.dataset_identity) \
            and np.array_equal(self.labeled_indices, other.labeled_indices)

    def __hash__(self) -> int:
        return hash((self.digest, self.seed))

    def __reduce__(self):
        # rebuild through __init__ so a copy sent to another process is checked and read-only too
        return (LabelSplit, (self.labeled_indices, self.num_labels, self.seed, self.dataset_identity))

    def sidecar(self) -> dict[str, object]:
        return {"num_labels": self.num_labels, "seed": self.seed, "dataset_identity": self.dataset_identity,
                "digest": self.digest}

    def save(self, path: Path | str) -> Path:
        """Write `<path>.npy` and `<path>.json` (each atomically); returns the `.npy` path."""
        stem = _stem(path)
        stem.parent.mkdir(parents=True, exist_ok=True)
        npy_path, json_path = stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")
        write_atomically(npy_path, lambda file: np.save(file, self.labeled_indices, allow_pickle=False))
        sidecar = json.dumps(self.sidecar(), indent=2).encode("utf-8") + b"\n"
        write_atomically(json_path, lambda file: file.write(sidecar))
        return npy_path

    @classmethod
    def load(cls, path: Path | str, dataset_identity: str | None = None) -> LabelSplit:
        """Read a split saved by `save` (pass the `.npy` path or the stem) and verify its digest.

        A bare `.npy` without its `.json` sidecar (e.g. TorchSSL's `sampled_label_idx.npy`) needs
        `dataset_identity`; when both are given they must agree.
        """
        stem = _stem(path)
        npy_path, json_path = stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")
        try:
            indices = np.load(npy_path, allow_pickle=False)
        except FileNotFoundError:
            raise SplitError(f"split file {npy_path} does not exist.") from None
        except (OSError, ValueError, EOFError) as error:
            raise SplitError(f"split file {npy_path} is not a readable .npy array ({error}).") from error

        if not json_path.exists():
            if dataset_identity is None:
                raise SplitError(f"split file {npy_path} has no sidecar {json_path.name}, "
                                 f"so the data set it belongs to must be given.")
            return cls(indices, len(indices), None, dataset_identity)

        try:
            sidecar = json.loads(json_path.read_text(encoding="utf-8"))
            split = cls(indices, int(sidecar["num_labels"]),
                        None if sidecar["seed"] is None else int(sidecar["seed"]),
                        str(sidecar["dataset_identity"]))
            recorded_digest = str(sidecar["digest"])
        except (ValueError, KeyError, TypeError) as error:
            if isinstance(error, SplitError):
                raise SplitError(f"split file {npy_path} does not match its sidecar: {error}") from error
            raise SplitError(f"split sidecar {json_path} is not valid ({type(error).__name__}: {error}).") from error
        if split.digest != recorded_digest:
            raise SplitError(f"split file {npy_path} has digest {split.digest[:12]}…, "
                             f"not the {recorded_digest[:12]}… its sidecar records.")
        if dataset_identity is not None and dataset_identity != split.dataset_identity:
            raise SplitError(f"split file {npy_path} was drawn on data {split.dataset_identity!r}, "
                             f"not on {dataset_identity!r}.")
        return split


def _stem(path: Path | str) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".npy", ".json") else path


