"""Own's augmentation under TorchSSL's recipe against TorchSSL's own augmentation code, on real CIFAR-10 images.

TorchSSL's functions run in a child process of their own (its top-level packages `datasets`, `utils` and
`models` would clash with anything in this one): per op the same pixels at the same magnitudes, its Cutout
the same pixels given the same draws, and its whole strong transform the same distribution of images as
own's batched strong augmentation configured as TorchSSL has it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from implementations.interface import ImageData, TrainConfig
from implementations.ledger import TORCHSSL_CHOICES
from implementations.own import augment, augment_batched, augment_ops
from implementations.own.batches import TrainingBatches
from tests.cifar_images import cifar_images
from tests.fixtures_data import REPO_ROOT, torchssl_checkout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCHSSL_CONFIG = TrainConfig().replace(**TORCHSSL_CHOICES)
TORCHSSL = augment.AugmentationRecipe.from_config(TORCHSSL_CONFIG)
OP_IMAGES = 32  # real images per op and magnitude
FIXED_ROUNDS = 4  # rounds with one magnitude for every image; one more round has a magnitude per image
CUTOUT_REPEATS = 16  # Cutouts per real image
CUTOUT_SEED = 5  # TorchSSL's CutoutAbs draws its centre from the global np.random, seeded with this
KS_IMAGES, KS_REPEATS = 1102, 4  # as the PIL-vs-batched test: 4,408 augmented images per side




def op_magnitudes() -> dict[str, list[list[float]]]:
    """Per op, rounds of one magnitude per image: both ends and two points of its range under TorchSSL's
    recipe, then one magnitude per image drawn uniformly from TorchSSL's range (for Posterize 4 + 4·U,
    which TorchSSL truncates, as own does)."""
    rng = random.Random(0)
    magnitudes = {}
    for op in TORCHSSL.ops:
        if op.integer:
            fixed = [float(bits) for bits in range(int(op.low), int(op.high) + 1)]
            drawn = [op.low + (op.high + 1 - op.low) * rng.random() for _ in range(OP_IMAGES)]
        else:
            fixed = [op.low, op.high, (op.low + op.high) / 2, op.low + (op.high - op.low) * 0.3125]
            drawn = [op.low + (op.high - op.low) * rng.random() for _ in range(OP_IMAGES)]
        magnitudes[op.name] = [[value] * OP_IMAGES for value in fixed[:FIXED_ROUNDS]] + [drawn]
    return magnitudes


def cutout_sides() -> list[float]:
    """One side per Cutout: TorchSSL's draw (random() · 0.5 · 32) and whole and near-whole sides, where the
    far corner's truncation decides a row."""
    rng = random.Random(1)
    special = [1.0, 8.0, 16.0, 15.999999, 0.5, 7.0000001, 12.5, 3.0]
    return special + [rng.random() * 0.5 * 32 for _ in range(OP_IMAGES * CUTOUT_REPEATS - len(special))]


# What TorchSSL's own code makes of the images: its 14 ops at the magnitudes above, its Cutout given the sides
# above, and its FixMatch strong transform (built by its BasicDataset, RandAugment(3, 5) then its weak flip and
# crop) minus ToTensor and Normalize, whose constants are reported instead.
TORCHSSL_SCRIPT = """
import json, random, sys
sys.path.insert(0, {checkout!r})
import implementations.torchvision_compat  # before anything imports torchvision
import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from datasets.augmentation import randaugment
from datasets.dataset import BasicDataset
from datasets.ssl_dataset import get_transform, mean, std

work = {work!r}
images = np.load(work + "/images.npy")
inputs = json.load(open(work + "/inputs.json"))
pil = [Image.fromarray(image) for image in images[:{op_images}]]

op_list = [(function.__name__, low, high) for function, low, high in randaugment.augment_list()]
ops = np.stack([np.stack([np.stack([np.asarray(getattr(randaugment, name)(pil[i], magnitude))
                                    for i, magnitude in enumerate(round_magnitudes)])
                          for round_magnitudes in rounds])
                for name, rounds in inputs["op_magnitudes"].items()])

np.random.seed({cutout_seed})
cutouts = np.stack([np.asarray(randaugment.CutoutAbs(pil[i % len(pil)], side))
                    for i, side in enumerate(inputs["cutout_sides"])])

dataset = BasicDataset("fixmatch", images, None, 10, get_transform(mean["cifar10"], std["cifar10"], 32), is_ulb=True)
strong = dataset.strong_transform
*augmentations, to_tensor, normalize = strong.transforms
assert isinstance(to_tensor, transforms.ToTensor) and isinstance(normalize, transforms.Normalize)
strong.transforms = augmentations
random.seed(0)
np.random.seed(0)
torch.manual_seed(0)
strong_images = np.stack([np.asarray(strong(Image.fromarray(image))) for image in images])

np.savez(work + "/torchssl.npz", ops=ops, cutouts=cutouts, strong=strong_images)
json.dump({{"op_list": op_list, "mean": list(normalize.mean), "std": list(normalize.std),
           "strong_transform": [type(t).__name__ for t in augmentations]}}, open(work + "/torchssl.json", "w"))
"""


@pytest.fixture(scope="module")
def torchssl_outputs(tmp_path_factory) -> dict:
    checkout = torchssl_checkout()
    work = tmp_path_factory.mktemp("torchssl_augment")
    np.save(work / "images.npy", np.concatenate([cifar_images(KS_IMAGES)] * KS_REPEATS))
    (work / "inputs.json").write_text(json.dumps({"op_magnitudes": op_magnitudes(), "cutout_sides": cutout_sides()}))
    script = TORCHSSL_SCRIPT.format(checkout=str(checkout), work=str(work), op_images=OP_IMAGES,
                                    cutout_seed=CUTOUT_SEED)
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    with np.load(work / "torchssl.npz") as arrays:
        outputs = {name: arrays[name] for name in arrays.files}
    return {**outputs, **json.loads((work / "torchssl.json").read_text())}


# ---------------------------------------------------------------- the ops, one by one
def test_torchssls_op_list_is_owns_table_under_its_recipe(torchssl_outputs):
    ours = [(op.name, op.low, op.high) for op in TORCHSSL.ops]
    theirs = [tuple(entry) for entry in torchssl_outputs["op_list"]]
    assert [name for name, _, _ in theirs] == [name for name, _, _ in ours]
    for (name, low, high), (_, their_low, their_high) in zip(ours, theirs):
        if name in ("AutoContrast", "Equalize", "Identity"):
            assert (their_low, their_high) == (0, 1)  # drawn by TorchSSL, never read by the op
        elif name == "Posterize":
            assert (their_low, their_high, low, high) == (4, 8, 4, 7)  # int(uniform(4, 8)): 4..7, as own's
        else:
            assert (their_low, their_high) == (low, high), name


@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_every_op_under_torchssls_recipe_gives_the_pixels_of_torchssls_own_op(name, torchssl_outputs):
    images = cifar_images(OP_IMAGES)
    rounds = op_magnitudes()[name]
    theirs = torchssl_outputs["ops"][augment.OP_NAMES.index(name)]
    for round_index, magnitudes in enumerate(rounds):
        ours = np.stack([np.asarray(augment.apply_op(Image.fromarray(image), name, magnitude, TORCHSSL.geometric_fill))
                         for image, magnitude in zip(images, magnitudes)])
        assert np.array_equal(ours, theirs[round_index]), f"{name}, round {round_index}"


def test_owns_truncated_corners_cutout_equals_torchssls_given_the_same_draws(torchssl_outputs):
    images = cifar_images(OP_IMAGES)
    centres = np.random.RandomState(CUTOUT_SEED)  # the stream TorchSSL's np.random.seed(CUTOUT_SEED) gives
    for index, side in enumerate(cutout_sides()):
        center_x, center_y = centres.uniform(32), centres.uniform(32)  # as CutoutAbs draws them
        ours = augment.cutout(Image.fromarray(images[index % OP_IMAGES]), side, center_x, center_y,
                              TORCHSSL.cutout_fill, TORCHSSL.cutout_geometry)
        assert np.array_equal(np.asarray(ours), torchssl_outputs["cutouts"][index]), (side, center_x, center_y)


def test_torchssls_normalisation_constants_are_owns_torchssl_choice(torchssl_outputs):
    mean, std = augment.NORMALIZATIONS[TORCHSSL.normalization]
    assert torchssl_outputs["mean"] == list(mean) and torchssl_outputs["std"] == list(std)


# ---------------------------------------------------------------- draws
def test_posterize_keeps_4_to_7_bits_each_a_quarter_of_the_time_under_torchssls_recipe():
    posterize = TORCHSSL.ops[augment.OP_NAMES.index("Posterize")]
    rng = random.Random(0)
    by_pil = np.array([posterize.draw_magnitude(rng) for _ in range(8000)])
    op_indices, magnitudes = augment_batched.draw_ops(40000, TORCHSSL, torch.Generator().manual_seed(0))
    batched = magnitudes[op_indices == augment_ops.OP_INDEX["Posterize"]].numpy()
    for drawn in (by_pil, batched):
        values, counts = np.unique(drawn, return_counts=True)
        assert values.tolist() == [4, 5, 6, 7]
        assert np.allclose(counts / len(drawn), 0.25, atol=0.02)


# ---------------------------------------------------------------- the whole strong augmentation
def image_statistics(images: np.ndarray, originals: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics that an op count, an order, a range, a colour or a Cutout square would move."""
    values = images.astype(np.float32)
    return {"mean absolute change": np.abs(values - originals).mean(axis=(1, 2, 3)),
            "fraction of TorchSSL's Cutout colour": (images == TORCHSSL.cutout_fill).all(axis=-1).mean(axis=(1, 2)),
            "fraction of black": (images == 0).all(axis=-1).mean(axis=(1, 2)),
            "mean": values.mean(axis=(1, 2, 3)),
            "spread": values.std(axis=(1, 2, 3))}


def ks_pvalues(recipe: augment.AugmentationRecipe, torchssl_images: np.ndarray) -> dict[str, float]:
    originals = np.concatenate([cifar_images(KS_IMAGES)] * KS_REPEATS)
    batch = torch.from_numpy(originals).permute(0, 3, 1, 2).contiguous()
    ours = augment_batched.strong_augment(batch, recipe, torch.Generator().manual_seed(3)).permute(0, 2, 3, 1).numpy()
    reference, own = image_statistics(torchssl_images, originals), image_statistics(ours, originals)
    return {name: stats.ks_2samp(reference[name], own[name]).pvalue for name in reference}


def test_torchssls_strong_transform_is_its_rand_augment_then_flip_then_crop(torchssl_outputs):
    assert torchssl_outputs["strong_transform"] == ["RandAugment", "RandomHorizontalFlip", "RandomCrop"]


def test_owns_batched_strong_augmentation_under_torchssls_recipe_has_the_distribution_of_torchssls(torchssl_outputs):
    pvalues = ks_pvalues(TORCHSSL, torchssl_outputs["strong"])
    assert min(pvalues.values()) > 1e-3, pvalues


@pytest.mark.parametrize("recipe", [
    augment.PAPER_RECIPE,
    dataclasses.replace(TORCHSSL, num_ops=2),
    dataclasses.replace(TORCHSSL, order="flip_crop_first"),
    dataclasses.replace(TORCHSSL, cutout_geometry="pixel_centres"),
], ids=["paper recipe", "2 ops", "paper order", "paper cutout square"])
def test_the_distribution_check_tells_other_recipes_from_torchssls(recipe, torchssl_outputs):
    # TorchSSL's recipe with the paper's Posterize range (4..8 bits) is one it cannot tell apart.
    pvalues = ks_pvalues(recipe, torchssl_outputs["strong"])
    assert min(pvalues.values()) < 1e-6, pvalues


# ---------------------------------------------------------------- the training batches
def nchw(images_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_hwc)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("augmentation", ["batched", "pil"])
def test_training_batches_augment_and_normalise_with_the_configs_recipe(augmentation):
    images = np.array(cifar_images(64))  # writable, as a loaded data set is
    data = ImageData(images, np.zeros(64, dtype=np.int64), images[:8], np.zeros(8, dtype=np.int64),
                     tuple(str(label) for label in range(10)), identity="first-64", official=False)
    config = TORCHSSL_CONFIG.replace(labeled_batch_size=4, unlabeled_ratio=3, augmentation=augmentation,
                                     channels_last=False)
    batch = TrainingBatches(data, np.arange(10), config, torch.device("cpu")).next()

    # The same draws, made here in the order TrainingBatches makes them, with TorchSSL's recipe.
    generator, rng = torch.Generator().manual_seed(config.seed), random.Random(config.seed)

    def weak(hwc: np.ndarray) -> torch.Tensor:
        if augmentation == "batched":
            return augment_batched.weak_augment(nchw(hwc), generator)
        return nchw(augment.weak_augment_batch(hwc, rng))

    def strong(hwc: np.ndarray) -> torch.Tensor:
        if augmentation == "batched":
            return augment_batched.strong_augment(nchw(hwc), TORCHSSL, generator)
        return nchw(augment.strong_augment_batch(hwc, TORCHSSL, rng))

    labeled = torch.randint(10, (4,), generator=generator)
    expected_labeled = augment_batched.normalize(weak(images[labeled.numpy()]), "torchssl")
    unlabeled = torch.randint(64, (12,), generator=generator).numpy()
    expected_weak = augment_batched.normalize(weak(images[unlabeled]), "torchssl")
    expected_strong = augment_batched.normalize(strong(images[unlabeled]), "torchssl")
    assert torch.equal(batch.labeled_images, expected_labeled)
    assert torch.equal(batch.weak_images, expected_weak) and torch.equal(batch.strong_images, expected_strong)
