"""harness.data.load_cifar10 on the real CIFAR-10 subset of ../shared, and on broken copies of it."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from harness.data import OFFICIAL_MD5, DataError, load_cifar10
from tests.fixtures_data import SUBSET_BATCHES_DIR, SUBSET_DIR, TRAIN_BATCH_NAMES, official_labels, subset_manifest

ALL_FILES = (*TRAIN_BATCH_NAMES, "test_batch", "batches.meta")


@pytest.fixture(scope="module")
def subset():
    return load_cifar10(SUBSET_DIR)


@pytest.fixture
def batches_copy(tmp_path: Path) -> Path:
    """A cifar-10-batches-py folder in tmp_path whose files link to the real subset; replace one to break it."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ALL_FILES:
        (folder / name).symlink_to(SUBSET_BATCHES_DIR / name)
    return folder


def _replace(path: Path, content: bytes) -> None:
    path.unlink()
    path.write_bytes(content)


def _pickled_batch(**entry) -> bytes:
    return pickle.dumps(entry, protocol=2)


def _raw_batch(name: str) -> dict:
    with open(SUBSET_BATCHES_DIR / name, "rb") as file:
        return pickle.load(file, encoding="latin1")


# --- the real subset -------------------------------------------------------------------------


def test_subset_has_its_row_counts_as_uint8_hwc_images_and_int64_labels(subset):
    assert subset.train_images.shape == (5482, 32, 32, 3)
    assert subset.test_images.shape == (1017, 32, 32, 3)
    assert subset.train_images.dtype == subset.test_images.dtype == np.uint8
    assert subset.train_labels.shape == (5482,) and subset.test_labels.shape == (1017,)
    assert subset.train_labels.dtype == subset.test_labels.dtype == np.int64
    assert subset.train_images.flags.c_contiguous and subset.test_images.flags.c_contiguous


def test_subset_is_accepted_but_marked_not_official(subset):
    assert subset.official is False
    assert subset.identity != "cifar10"


def test_class_names_come_from_batches_meta(subset):
    assert subset.class_names == ("airplane", "automobile", "bird", "cat", "deer",
                                  "dog", "frog", "horse", "ship", "truck")
    assert subset.num_classes == 10


def test_first_training_label_is_the_official_first_label(subset):
    assert subset.train_labels[0] == official_labels()["data_batch_1"][0]


def test_training_labels_are_batches_1_to_5_in_order_each_an_official_prefix(subset):
    batches = subset_manifest()["batches"]
    expected = np.concatenate([official_labels()[name][: batches[name]["rows_recovered"]]
                               for name in TRAIN_BATCH_NAMES])
    np.testing.assert_array_equal(subset.train_labels, expected)
    np.testing.assert_array_equal(subset.test_labels, official_labels()["test_batch"][:1017])


def test_class_counts_match_the_manifest(subset):
    totals = subset_manifest()["totals"]
    assert np.bincount(subset.train_labels, minlength=10).tolist() == totals["train_class_counts"]
    assert np.bincount(subset.test_labels, minlength=10).tolist() == totals["test_class_counts"]


def test_images_are_the_planar_rgb_rows_laid_out_as_height_width_channel(subset):
    # Row layout of the official files: 1024 red, 1024 green, 1024 blue values, each 32x32 row-major.
    first_batch_rows = _raw_batch("data_batch_1")["data"]
    second_batch_rows = _raw_batch("data_batch_2")["data"]
    for row, image in ((first_batch_rows[0], subset.train_images[0]),
                       (first_batch_rows[-1], subset.train_images[len(first_batch_rows) - 1]),
                       (second_batch_rows[0], subset.train_images[len(first_batch_rows)])):
        for y, x, channel in ((0, 0, 0), (5, 17, 1), (31, 30, 2), (12, 3, 0)):
            assert image[y, x, channel] == row[channel * 1024 + y * 32 + x]
    test_rows = _raw_batch("test_batch")["data"]
    np.testing.assert_array_equal(subset.test_images[7], test_rows[7].reshape(3, 32, 32).transpose(1, 2, 0))


def test_identity_is_stable_across_loads_and_is_the_documented_content_hash(subset):
    again = load_cifar10(SUBSET_DIR)
    assert again.identity == subset.identity
    content = hashlib.sha256(subset.train_labels.astype("<i8").tobytes() + subset.train_images.tobytes())
    assert subset.identity == f"cifar10-nonofficial-5482-{content.hexdigest()[:12]}"


def test_identity_changes_when_one_training_pixel_changes(subset, batches_copy):
    entry = _raw_batch("data_batch_3")
    entry["data"] = entry["data"].copy()
    entry["data"][0, 0] ^= 1
    _replace(batches_copy / "data_batch_3", _pickled_batch(**entry))
    assert load_cifar10(batches_copy).identity != subset.identity


def test_the_batches_folder_itself_or_its_parent_may_be_given(subset):
    direct = load_cifar10(SUBSET_BATCHES_DIR)
    assert direct.identity == subset.identity
    assert direct.source_dir == subset.source_dir == str(SUBSET_BATCHES_DIR.resolve())


def test_download_is_not_attempted_when_the_data_is_present(subset):
    assert load_cifar10(SUBSET_DIR, download=True).identity == subset.identity


def test_official_md5_sums_are_those_of_the_manifest():
    manifest_md5 = {name: entry["md5"] for name, entry in subset_manifest()["official_file_sizes_md5"].items()}
    assert OFFICIAL_MD5 == manifest_md5


def test_a_python3_repickled_batch_reads_the_same(subset, batches_copy):
    # protocol 2 from Python 3 stores bytes through _codecs.encode; protocol 4 without it
    for protocol in (2, 4):
        for name in ALL_FILES[:-1]:
            _replace(batches_copy / name, pickle.dumps(_raw_batch(name), protocol=protocol))
        reread = load_cifar10(batches_copy)
        np.testing.assert_array_equal(reread.train_images, subset.train_images)
        assert reread.identity == subset.identity


# --- one clear error naming the path ---------------------------------------------------------


def test_missing_folder_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="--download") as error:
        load_cifar10(missing)
    assert str(missing) in str(error.value)


@pytest.mark.parametrize("layout", ["empty-folder", "empty-batches-folder"])
def test_folder_without_cifar_batches_is_reported_as_missing(tmp_path, layout):
    if layout == "empty-batches-folder":
        (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="not found") as error:
        load_cifar10(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_a_file_given_as_data_dir_is_reported(tmp_path):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("hello")
    with pytest.raises(DataError, match="not a folder") as error:
        load_cifar10(not_a_folder)
    assert str(not_a_folder) in str(error.value)


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
def test_missing_batch_file_is_named(batches_copy, name):
    (batches_copy / name).unlink()
    with pytest.raises(DataError, match="missing") as error:
        load_cifar10(batches_copy)
    assert str(batches_copy / name) in str(error.value)


@pytest.mark.parametrize("keep_fraction", [0.5, 0.9999])
def test_truncated_copy_of_a_real_batch_is_named(batches_copy, keep_fraction):
    real = (SUBSET_BATCHES_DIR / "data_batch_2").read_bytes()
    _replace(batches_copy / "data_batch_2", real[: int(len(real) * keep_fraction)])
    with pytest.raises(DataError, match="truncated or corrupt") as error:
        load_cifar10(batches_copy)
    assert str(batches_copy / "data_batch_2") in str(error.value)


@pytest.mark.parametrize("garbage", [b"", b"this is not a pickle at all", bytes(range(256)) * 64],
                         ids=["empty", "text", "binary"])
def test_garbage_bytes_are_named(batches_copy, garbage):
    _replace(batches_copy / "test_batch", garbage)
    with pytest.raises(DataError) as error:
        load_cifar10(batches_copy)
    assert str(batches_copy / "test_batch") in str(error.value)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(batches_copy, tmp_path):
    marker = tmp_path / "code-ran"
    _replace(batches_copy / "data_batch_1", pickle.dumps({"data": _RunsCode(marker), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="refuse") as error:
        load_cifar10(batches_copy)
    assert str(batches_copy / "data_batch_1") in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"images": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, "expected the keys"),
        ([np.zeros((2, 3072), np.uint8), [0, 1]], "expected the keys"),
        ({"data": np.zeros((2, 3071), np.uint8), "labels": [0, 1]}, r"shape \(rows, 3072\)"),
        ({"data": np.zeros((2, 3, 32, 32), np.uint8), "labels": [0, 1]}, r"shape \(rows, 3072\)"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1, 2]}, "2 images but 3 labels"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"outside 0\.\.9"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [-1, 3]}, r"outside 0\.\.9"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": ["cat", "dog"]}, "integers"),
    ],
    ids=["wrong-keys", "not-a-dict", "short-rows", "4d", "float", "label-count", "label-10", "label-negative",
         "label-strings"],
)
def test_wrong_content_is_named(batches_copy, entry, message):
    _replace(batches_copy / "data_batch_4", pickle.dumps(entry, protocol=2))
    with pytest.raises(DataError, match=message) as error:
        load_cifar10(batches_copy)
    assert str(batches_copy / "data_batch_4") in str(error.value)


def test_batches_meta_without_class_names_is_named(batches_copy):
    _replace(batches_copy / "batches.meta", pickle.dumps({"num_vis": 3072}, protocol=2))
    with pytest.raises(DataError, match="label_names") as error:
        load_cifar10(batches_copy)
    assert str(batches_copy / "batches.meta") in str(error.value)


def test_data_error_is_a_value_error_with_one_sentence(tmp_path):
    with pytest.raises(ValueError) as error:
        load_cifar10(tmp_path / "nowhere")
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")

