"""harness.splits: TorchSSL's seeded class-balanced label split, as a value with a stable digest."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.data import load_cifar10
from harness.splits import LabelSplit, SplitError, draw_split
from tests.fixtures_data import REPO_ROOT, SUBSET_DIR, official_train_labels, torchssl_checkout

SEEDS = (0, 1, 2)
LABEL_COUNTS = (40, 250, 4000)


def torchssl_rule(labels: np.ndarray, num_labels: int, seed: int, num_classes: int = 10) -> np.ndarray:
    """The specification, in its literal form: TorchSSL's main_worker seeds the global NumPy RNG,
    then sample_labeled_data draws each class in order without replacement."""
    saved_state = np.random.get_state()
    try:
        np.random.seed(seed)
        labeled_indices = []
        for c in range(num_classes):
            indices_of_c = np.where(labels == c)[0]
            labeled_indices.extend(np.random.choice(indices_of_c, num_labels // num_classes, False))
        return np.array(labeled_indices)
    finally:
        np.random.set_state(saved_state)


@pytest.fixture(scope="module")
def subset_labels() -> np.ndarray:
    return load_cifar10(SUBSET_DIR).train_labels


# --- TorchSSL's rule --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_labels", LABEL_COUNTS)
def test_split_of_the_full_official_training_set_equals_torchssl_rule(num_labels, seed):
    labels = official_train_labels()
    assert len(labels) == 50_000
    split = draw_split(labels, num_labels, seed)
    np.testing.assert_array_equal(split.labeled_indices, torchssl_rule(labels, num_labels, seed))


def test_split_of_the_subset_equals_torchssl_rule(subset_labels):
    split = draw_split(subset_labels, 250, 1, dataset_identity="subset")
    np.testing.assert_array_equal(split.labeled_indices, torchssl_rule(subset_labels, 250, 1))


def _torchssl_sampled_indices(checkout: Path, cases: list[tuple[int, int]], tmp_path: Path) -> dict[str, list[int]]:
    """Run TorchSSL's own sample_labeled_data in a child process (its `datasets` package name
    clashes with anything), seeded as its main_worker seeds it, on the 50,000 official labels."""
    labels_file = tmp_path / "labels.npy"
    np.save(labels_file, official_train_labels())
    script = textwrap.dedent(f"""
        import json, os, sys, types
        import numpy as np
        import implementations.torchvision_compat  # lets TorchSSL's torchvision import work on CPU torch
        sys.path.insert(0, {str(checkout)!r})
        from datasets.data_utils import sample_labeled_data

        labels = np.load({str(labels_file)!r})
        images = np.arange(len(labels))  # sample_labeled_data only indexes the images
        drawn = {{}}
        for seed, num_labels in {cases!r}:
            args = types.SimpleNamespace(save_dir={str(tmp_path)!r}, save_name=f"seed{{seed}}_labels{{num_labels}}")
            os.makedirs(os.path.join(args.save_dir, args.save_name))
            np.random.seed(seed)  # main_worker: np.random.seed(args.seed)
            _, _, labeled_indices = sample_labeled_data(args, images, labels, num_labels, 10)
            drawn[f"{{seed}}-{{num_labels}}"] = [int(index) for index in labeled_indices]
        print(json.dumps(drawn))
    """)
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_split_equals_the_one_torchssl_itself_samples(tmp_path):
    cases = [(seed, num_labels) for seed in SEEDS for num_labels in LABEL_COUNTS]
    drawn_by_torchssl = _torchssl_sampled_indices(torchssl_checkout(), cases, tmp_path)
    for seed, num_labels in cases:
        ours = draw_split(official_train_labels(), num_labels, seed).labeled_indices
        assert ours.tolist() == drawn_by_torchssl[f"{seed}-{num_labels}"], (seed, num_labels)


def test_drawing_leaves_the_global_numpy_rng_untouched(subset_labels):
    np.random.seed(1234)
    expected_next = np.random.random_sample(3)
    np.random.seed(1234)
    draw_split(subset_labels, 40, 0, dataset_identity="subset")
    np.testing.assert_array_equal(np.random.random_sample(3), expected_next)


# --- determinism and balance ------------------------------------------------------------------


def test_same_seed_gives_the_same_split():
    labels = official_train_labels()
    assert draw_split(labels, 250, 2) == draw_split(labels, 250, 2)


def test_different_seeds_give_different_splits():
    labels = official_train_labels()
    assert draw_split(labels, 250, 0).digest != draw_split(labels, 250, 1).digest


def test_split_has_the_same_number_of_distinct_indices_in_every_class():
    labels = official_train_labels()
    split = draw_split(labels, 4000, 0)
    assert len(np.unique(split.labeled_indices)) == 4000
    assert np.bincount(labels[split.labeled_indices], minlength=10).tolist() == [400] * 10


def test_indices_are_int64_in_draw_order_class_by_class():
    labels = official_train_labels()
    split = draw_split(labels, 40, 0)
    assert split.labeled_indices.dtype == np.int64
    assert labels[split.labeled_indices].tolist() == [c for c in range(10) for _ in range(4)]
    np.testing.assert_array_equal(split.labeled_indices_sorted, np.sort(split.labeled_indices))


def test_split_records_its_parameters():
    split = draw_split(official_train_labels(), 250, 1, dataset_identity="cifar10")
    assert (split.num_labels, split.seed, split.dataset_identity) == (250, 1, "cifar10")


def test_split_indices_cannot_be_modified_in_place():
    split = draw_split(official_train_labels(), 40, 0)
    with pytest.raises(ValueError):
        split.labeled_indices[0] = 0


def test_a_pickled_split_is_equal_and_still_read_only():
    split = draw_split(official_train_labels(), 40, 0)
    copy = pickle.loads(pickle.dumps(split))
    assert copy == split and copy.digest == split.digest
    assert not copy.labeled_indices.flags.writeable


def test_a_split_refuses_repeated_indices_or_a_wrong_count():
    with pytest.raises(SplitError, match="repeat"):
        LabelSplit(np.array([1, 2, 2, 3]), 4, 0, "cifar10")
    with pytest.raises(SplitError, match="cannot hold 3 indices"):
        LabelSplit(np.array([1, 2, 3]), 4, 0, "cifar10")


# --- digest -----------------------------------------------------------------------------------


def test_digest_is_sha256_of_sorted_little_endian_int64_indices_then_identity():
    split = draw_split(official_train_labels(), 40, 0, dataset_identity="cifar10")
    content = np.sort(split.labeled_indices).astype("<i8").tobytes() + b"cifar10"
    assert split.digest == hashlib.sha256(content).hexdigest()


def test_digest_of_seed_0_with_40_labels_on_official_cifar10_is_stable():
    # regression anchor: changes only if the sampling rule, the label order or the digest definition changes
    split = draw_split(official_train_labels(), 40, 0, dataset_identity="cifar10")
    assert split.digest == "917c082823f5378e1882bfbddd1c2e7e1c2bdc34d3cf77fab90811511f8054d5"


def test_digest_ignores_draw_order_but_not_the_data_identity():
    split = draw_split(official_train_labels(), 40, 0, dataset_identity="cifar10")
    reversed_order = LabelSplit(split.labeled_indices[::-1], 40, 0, "cifar10")
    other_data = LabelSplit(split.labeled_indices, 40, 0, "cifar10-nonofficial-5482-5e05dc25365c")
    assert reversed_order.digest == split.digest
    assert other_data.digest != split.digest


# --- save / load ------------------------------------------------------------------------------


def test_save_writes_the_indices_and_a_sidecar(tmp_path):
    split = draw_split(official_train_labels(), 250, 2)
    npy_path = split.save(tmp_path / "splits" / "cifar10-labels250-seed2")
    assert npy_path == tmp_path / "splits" / "cifar10-labels250-seed2.npy"
    np.testing.assert_array_equal(np.load(npy_path), split.labeled_indices)
    sidecar = json.loads(npy_path.with_suffix(".json").read_text())
    assert sidecar == {"num_labels": 250, "seed": 2, "dataset_identity": "cifar10", "digest": split.digest}
    assert sorted(path.name for path in npy_path.parent.iterdir()) == [
        "cifar10-labels250-seed2.json", "cifar10-labels250-seed2.npy"]  # no temporary files left


@pytest.mark.parametrize("given", ["stem", "npy", "json"])
def test_load_round_trips_from_the_npy_path_or_the_stem(tmp_path, given):
    split = draw_split(official_train_labels(), 40, 1)
    split.save(tmp_path / "split")
    path = {"stem": tmp_path / "split", "npy": tmp_path / "split.npy", "json": tmp_path / "split.json"}[given]
    loaded = LabelSplit.load(path)
    assert loaded == split and loaded.digest == split.digest


def test_save_replaces_an_existing_split(tmp_path):
    labels = official_train_labels()
    draw_split(labels, 40, 0).save(tmp_path / "split")
    newer = draw_split(labels, 40, 1)
    newer.save(tmp_path / "split")
    assert LabelSplit.load(tmp_path / "split") == newer


def test_load_rejects_indices_that_do_not_match_the_recorded_digest(tmp_path):
    labels = official_train_labels()
    draw_split(labels, 40, 0).save(tmp_path / "split")
    np.save(tmp_path / "split.npy", draw_split(labels, 40, 1).labeled_indices)
    with pytest.raises(SplitError, match="digest") as error:
        LabelSplit.load(tmp_path / "split")
    assert str(tmp_path / "split.npy") in str(error.value)


def test_load_checks_the_data_identity_when_given(tmp_path):
    draw_split(official_train_labels(), 40, 0, dataset_identity="cifar10").save(tmp_path / "split")
    assert LabelSplit.load(tmp_path / "split", dataset_identity="cifar10").dataset_identity == "cifar10"
    with pytest.raises(SplitError, match="drawn on data 'cifar10'"):
        LabelSplit.load(tmp_path / "split", dataset_identity="cifar10-nonofficial-5482-5e05dc25365c")


def test_bare_npy_without_sidecar_needs_the_data_identity(tmp_path):
    split = draw_split(official_train_labels(), 40, 0)
    np.save(tmp_path / "sampled_label_idx.npy", split.labeled_indices)
    with pytest.raises(SplitError, match="no sidecar"):
        LabelSplit.load(tmp_path / "sampled_label_idx.npy")
    loaded = LabelSplit.load(tmp_path / "sampled_label_idx.npy", dataset_identity="cifar10")
    assert loaded.digest == split.digest and loaded.seed is None


def test_load_of_a_missing_split_names_the_path(tmp_path):
    with pytest.raises(SplitError, match="does not exist") as error:
        LabelSplit.load(tmp_path / "absent")
    assert str(tmp_path / "absent.npy") in str(error.value)


def test_load_of_a_corrupt_npy_names_the_path(tmp_path):
    (tmp_path / "split.npy").write_bytes(b"not numpy")
    with pytest.raises(SplitError, match="not a readable") as error:
        LabelSplit.load(tmp_path / "split", dataset_identity="cifar10")
    assert str(tmp_path / "split.npy") in str(error.value)


def test_load_of_a_corrupt_sidecar_names_the_path(tmp_path):
    draw_split(official_train_labels(), 40, 0).save(tmp_path / "split")
    (tmp_path / "split.json").write_text("{ not json")
    with pytest.raises(SplitError, match="not valid") as error:
        LabelSplit.load(tmp_path / "split")
    assert str(tmp_path / "split.json") in str(error.value)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_labels", [45, 0, -10, 7])
def test_label_count_must_be_a_positive_multiple_of_the_class_count(subset_labels, num_labels):
    with pytest.raises(SplitError, match="positive multiple of the 10 classes"):
        draw_split(subset_labels, num_labels, 0)


def test_asking_more_labels_per_class_than_a_class_has_names_the_class_and_counts(subset_labels):
    # subset class counts: 542, 571, 531, ... → class 2 is the first with fewer than 540
    with pytest.raises(SplitError, match="need 540 images of each class, but class 2 has only 531"):
        draw_split(subset_labels, 5400, 0)


def test_a_class_without_training_images_is_named(subset_labels):
    without_trucks = subset_labels[subset_labels != 9]
    with pytest.raises(SplitError, match="class 9 has no training images"):
        draw_split(without_trucks, 40, 0)


def test_labels_outside_the_classes_are_rejected(subset_labels):
    with pytest.raises(SplitError, match="outside"):
        draw_split(np.append(subset_labels, 10), 40, 0)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_seed_must_be_valid_for_numpy_legacy_seeding(subset_labels, seed):
    with pytest.raises(SplitError, match="seed"):
        draw_split(subset_labels, 40, seed)


def test_split_error_is_a_value_error(subset_labels):
    with pytest.raises(ValueError):
        draw_split(subset_labels, 45, 0)
