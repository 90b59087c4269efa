"""The per-image PIL reference augmentations (implementations/own/augment.py), on real CIFAR-10 images,
under the paper's recipe and TorchSSL's (tests/test_augment_torchssl.py compares them with TorchSSL's code)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from implementations.interface import TrainConfig
from implementations.ledger import TORCHSSL_CHOICES
from implementations.own import augment
from tests.cifar_images import cifar_images

OPS_BY_NAME = {op.name: op for op in augment.RANDAUGMENT_OPS}
PAPER = augment.PAPER_RECIPE
TORCHSSL = augment.AugmentationRecipe.from_config(TrainConfig().replace(**TORCHSSL_CHOICES))
both_recipes = pytest.mark.parametrize("recipe", [PAPER, TORCHSSL], ids=["paper", "torchssl"])


def real_images(count: int = 8) -> list[Image.Image]:
    return [Image.fromarray(pixels) for pixels in cifar_images(count)]


def pixels_of(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_op_table_is_fixmatch_table_12():
    assert [(op.name, op.low, op.high, op.integer) for op in augment.RANDAUGMENT_OPS] == [
        ("AutoContrast", 0, 0, False), ("Brightness", 0.05, 0.95, False), ("Color", 0.05, 0.95, False),
        ("Contrast", 0.05, 0.95, False), ("Equalize", 0, 0, False), ("Identity", 0, 0, False),
        ("Posterize", 4, 8, True), ("Rotate", -30, 30, False), ("Sharpness", 0.05, 0.95, False),
        ("ShearX", -0.3, 0.3, False), ("ShearY", -0.3, 0.3, False), ("Solarize", 0, 256, False),
        ("TranslateX", -0.3, 0.3, False), ("TranslateY", -0.3, 0.3, False),
    ]


def test_the_default_recipe_is_the_papers_and_the_train_configs():
    assert augment.AugmentationRecipe() == PAPER == augment.AugmentationRecipe.from_config(TrainConfig())
    assert (PAPER.num_ops, PAPER.order, PAPER.posterize_max_bits) == (2, "flip_crop_first", 8)


def test_the_recipe_from_torchssls_config_holds_every_choice_of_the_ledger():
    assert TORCHSSL == augment.AugmentationRecipe(
        num_ops=3, order="randaugment_first", geometric_fill=0, cutout_fill=(125, 123, 114),
        cutout_geometry="truncated_corners", posterize_max_bits=7, normalization="torchssl")


def test_a_recipe_changes_only_posterizes_range_in_the_op_table():
    assert PAPER.ops == augment.RANDAUGMENT_OPS
    changed = [(paper, torchssl) for paper, torchssl in zip(PAPER.ops, TORCHSSL.ops) if paper != torchssl]
    assert changed == [(OPS_BY_NAME["Posterize"], augment.AugmentOp("Posterize", 4, 7, integer=True))]


def test_torchssls_normalisation_constants_are_its_cifar10_statistics_over_255():
    mean, std = augment.NORMALIZATIONS["torchssl"]
    assert np.allclose(np.array(mean) * 255, (125.3, 123.0, 113.9))
    assert np.allclose(np.array(std) * 255, (63.0, 62.1, 66.7))
    kekmodel_mean, kekmodel_std = augment.NORMALIZATIONS["kekmodel"]
    assert np.allclose(mean, kekmodel_mean, atol=2e-4) and np.allclose(std, kekmodel_std, atol=2e-4)


@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_every_op_keeps_size_and_mode_across_its_range(name):
    op = OPS_BY_NAME[name]
    for magnitude in (op.low, (op.low + op.high) / 2, op.high):
        for image in real_images(4):
            out = augment.apply_op(image, name, int(magnitude) if op.integer else magnitude)
            assert (out.size, out.mode) == ((32, 32), "RGB")


@both_recipes
@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_every_op_draws_its_magnitude_uniformly_from_its_range(name, recipe):
    op = {op.name: op for op in recipe.ops}[name]
    rng = random.Random(0)
    magnitudes = np.array([op.draw_magnitude(rng) for _ in range(5000)])
    assert magnitudes.min() >= op.low and magnitudes.max() <= op.high
    if op.integer:
        values, counts = np.unique(magnitudes, return_counts=True)
        assert values.tolist() == list(range(int(op.low), int(op.high) + 1))
        assert counts.min() > 0.8 * 5000 / len(values)  # uniform over the integers, ends included
    elif op.high > op.low:
        width = op.high - op.low
        assert magnitudes.min() < op.low + 0.01 * width and magnitudes.max() > op.high - 0.01 * width
        assert abs(magnitudes.mean() - (op.low + op.high) / 2) < 0.02 * width
        quarter_counts = np.histogram(magnitudes, bins=4, range=(op.low, op.high))[0]
        assert quarter_counts.min() > 0.9 * 5000 / 4


@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_every_op_is_a_deterministic_function_of_image_and_magnitude(name):
    op = OPS_BY_NAME[name]
    magnitude = op.draw_magnitude(random.Random(1))
    for image in real_images(4):
        first = augment.apply_op(image, name, magnitude)
        second = augment.apply_op(image.copy(), name, magnitude)
        assert np.array_equal(pixels_of(first), pixels_of(second))


@pytest.mark.parametrize("name", [name for name in augment.OP_NAMES if name != "Identity"])
def test_every_op_other_than_identity_changes_real_images(name):
    op = OPS_BY_NAME[name]
    magnitude = {"Posterize": 4, "Solarize": 128}.get(name, op.low if op.high <= 0.95 else op.high)
    images = real_images(8)
    changed = [not np.array_equal(pixels_of(image), pixels_of(augment.apply_op(image, name, magnitude)))
               for image in images]
    assert sum(changed) >= 6


def test_identity_returns_the_image_unchanged():
    for image in real_images(8):
        assert np.array_equal(pixels_of(augment.apply_op(image, "Identity", 0.0)), pixels_of(image))


def test_posterize_keeps_only_the_top_bits():
    for bits in range(4, 9):
        for image in real_images(4):
            out = pixels_of(augment.apply_op(image, "Posterize", bits))
            assert np.all(out % 2 ** (8 - bits) == 0)
            assert np.all(pixels_of(image) - out < 2 ** (8 - bits)) and np.all(out <= pixels_of(image))


def test_solarize_inverts_values_at_or_above_the_threshold():
    image = real_images(1)[0]
    original = pixels_of(image)
    assert np.array_equal(pixels_of(augment.apply_op(image, "Solarize", 0.0)), 255 - original)
    assert np.array_equal(pixels_of(augment.apply_op(image, "Solarize", 256.0)), original)
    half = pixels_of(augment.apply_op(image, "Solarize", 100.5))
    assert np.array_equal(half, np.where(original < 100.5, original, 255 - original))


def test_brightness_factor_scales_every_value_down():
    image = real_images(1)[0]
    out = pixels_of(augment.apply_op(image, "Brightness", 0.5))
    assert np.array_equal(out, (pixels_of(image) * 0.5).astype(np.int16))


@both_recipes
def test_translate_shifts_by_the_fraction_of_the_size_and_fills_with_the_recipes_grey(recipe):
    image = real_images(1)[0]
    original = pixels_of(image)
    out = pixels_of(augment.apply_op(image, "TranslateX", 0.25, recipe.geometric_fill))  # reads 8 pixels to the right
    assert np.array_equal(out[:, :24], original[:, 8:])
    assert np.all(out[:, 24:] == recipe.geometric_fill)
    out = pixels_of(augment.apply_op(image, "TranslateY", -0.25, recipe.geometric_fill))
    assert np.array_equal(out[8:], original[:24]) and np.all(out[:8] == recipe.geometric_fill)


def test_rotation_by_a_right_angle_turns_the_image_counter_clockwise():
    image = real_images(1)[0]
    assert np.array_equal(pixels_of(augment.apply_op(image, "Rotate", 90.0)), np.rot90(pixels_of(image)))


@both_recipes
def test_shear_keeps_the_row_through_the_top_edge_and_fills_with_the_recipes_grey(recipe):
    image = real_images(1)[0]
    out = pixels_of(augment.apply_op(image, "ShearX", 0.3, recipe.geometric_fill))  # row y reads x + 0.3·(y + 0.5)
    assert np.array_equal(out[0, :31], pixels_of(image)[0, :31])
    assert np.all(out[31, 23:] == recipe.geometric_fill)


@both_recipes
def test_rotation_fills_the_uncovered_corners_with_the_recipes_grey(recipe):
    out = pixels_of(augment.apply_op(real_images(1)[0], "Rotate", 30.0, recipe.geometric_fill))
    assert np.all(out[0, 0] == recipe.geometric_fill) and np.all(out[31, 31] == recipe.geometric_fill)


@both_recipes
def test_rand_augment_is_deterministic_under_a_seed(recipe):
    for image in real_images(8):
        first = augment.rand_augment(image, recipe, random.Random(7))
        second = augment.rand_augment(image, recipe, random.Random(7))
        assert np.array_equal(pixels_of(first), pixels_of(second))


def test_rand_augment_applies_num_ops_ops_drawn_uniformly_with_replacement(monkeypatch):
    applied: list[list[tuple[str, float]]] = []
    apply_op = augment.apply_op

    def recording_apply_op(image, name, magnitude, geometric_fill):
        applied[-1].append((name, magnitude))
        return apply_op(image, name, magnitude, geometric_fill)

    monkeypatch.setattr(augment, "apply_op", recording_apply_op)
    rng = random.Random(0)
    image = real_images(1)[0]
    for _ in range(1400):
        applied.append([])
        augment.rand_augment(image, TORCHSSL, rng)
    assert all(len(ops) == 3 for ops in applied)
    names = [name for ops in applied for name, _ in ops]
    counts = np.array([names.count(name) for name in augment.OP_NAMES])
    expected = len(names) / len(augment.OP_NAMES)
    assert ((counts - expected) ** 2 / expected).sum() < 36.1  # chi-square, 13 dof, p = 0.001
    assert sum(len(set(name for name, _ in ops)) < 3 for ops in applied) > 0  # with replacement
    posterize_bits = {magnitude for ops in applied for name, magnitude in ops if name == "Posterize"}
    assert posterize_bits == {4, 5, 6, 7}  # TorchSSL's range
    for name, magnitude in (pair for ops in applied for pair in ops):
        assert OPS_BY_NAME[name].low <= magnitude <= OPS_BY_NAME[name].high


def test_rand_augment_state_can_be_checkpointed_and_resumed():
    image = real_images(1)[0]
    rng = random.Random(3)
    augment.rand_augment(image, PAPER, rng)
    saved = rng.getstate()
    expected = pixels_of(augment.rand_augment(image, PAPER, rng))
    resumed = random.Random()
    resumed.setstate(saved)
    assert np.array_equal(pixels_of(augment.rand_augment(image, PAPER, resumed)), expected)


@both_recipes
def test_cutout_paints_the_pixels_whose_centres_lie_in_the_square_in_the_recipes_colour(recipe):
    image = real_images(1)[0]
    out = pixels_of(augment.cutout(image, side=10.0, center_x=16.0, center_y=8.0, fill=recipe.cutout_fill))
    inside = np.zeros((32, 32), dtype=bool)
    inside[3:13, 11:21] = True  # centres 3.5 .. 12.5 within 5 of 8; 11.5 .. 20.5 within 5 of 16
    assert np.all(out[inside] == recipe.cutout_fill)
    assert np.array_equal(out[~inside], pixels_of(image)[~inside])


def test_cutout_square_is_clipped_at_the_border():
    out = pixels_of(augment.cutout(real_images(1)[0], side=16.0, center_x=0.0, center_y=32.0))
    painted = np.all(out == PAPER.cutout_fill, axis=2)
    assert painted[24:, :8].all() and painted.sum() == 8 * 8


@both_recipes
def test_truncated_corners_cover_from_the_truncated_near_corner_one_pixel_beyond_the_side(recipe):
    # near corner int(16.9 − 4.75) = 12, int(8.2 − 4.75) = 3; far corner int(12 + 9.5) = 21, int(3 + 9.5) = 12
    image = real_images(1)[0]
    out = pixels_of(augment.cutout(image, side=9.5, center_x=16.9, center_y=8.2, fill=recipe.cutout_fill,
                                   geometry="truncated_corners"))
    inside = np.zeros((32, 32), dtype=bool)
    inside[3:13, 12:22] = True  # rows 3..12, columns 12..21: 10 x 10 for a side of 9.5
    assert np.all(out[inside] == recipe.cutout_fill)
    assert np.array_equal(out[~inside], pixels_of(image)[~inside])


def test_truncated_corners_clip_at_the_border_and_paint_nothing_for_a_side_of_zero():
    image = real_images(1)[0]
    out = pixels_of(augment.cutout(image, side=16.0, center_x=1.5, center_y=32.0, geometry="truncated_corners"))
    painted = np.all(out == PAPER.cutout_fill, axis=2)
    assert painted[24:, :17].all() and painted.sum() == 8 * 17  # rows 24..32 clipped, columns 0..16
    unchanged = augment.cutout(image, side=0.0, center_x=16.0, center_y=16.0, geometry="truncated_corners")
    assert np.array_equal(pixels_of(unchanged), pixels_of(image))


@both_recipes
def test_random_cutout_side_is_between_zero_and_half_the_image(recipe):
    rng = random.Random(0)
    blank = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    longest_side = 16 if recipe.cutout_geometry == "pixel_centres" else 17  # truncated corners: one more
    sides = []
    for _ in range(400):
        painted = np.all(pixels_of(augment.random_cutout(blank, recipe, rng)) == recipe.cutout_fill, axis=2)
        rows, columns = np.flatnonzero(painted.any(axis=1)), np.flatnonzero(painted.any(axis=0))
        if len(rows) == 0:
            sides.append(0)
            continue
        assert painted.sum() == len(rows) * len(columns)  # one axis-aligned rectangle
        assert len(rows) <= longest_side and len(columns) <= longest_side
        if 0 < rows[0] and rows[-1] < 31 and 0 < columns[0] and columns[-1] < 31:
            assert abs(len(rows) - len(columns)) <= 1  # a square, rasterised
            sides.append(max(len(rows), len(columns)))
    assert max(sides) >= longest_side - 1 and min(sides) <= 1


def test_torchssls_cutout_centres_are_uniform_between_1_and_the_size():
    rng = random.Random(0)
    centres = np.array([augment.draw_cutout_centre(32, "truncated_corners", rng) for _ in range(20000)])
    assert centres.min() > 1 and centres.max() <= 32
    assert centres.min() < 1.01 and centres.max() > 31.99
    assert np.histogram(centres, bins=4, range=(1, 32))[0].min() > 0.9 * 20000 / 4


def test_flip_and_crop_at_the_centre_offset_is_the_image_or_its_mirror():
    for image in real_images(4):
        assert np.array_equal(pixels_of(augment.flip_and_crop(image, False, 4, 4)), pixels_of(image))
        assert np.array_equal(pixels_of(augment.flip_and_crop(image, True, 4, 4)), pixels_of(image)[:, ::-1])


def test_flip_and_crop_pads_by_reflection_without_repeating_the_edge():
    image = real_images(1)[0]
    original = pixels_of(image)
    out = pixels_of(augment.flip_and_crop(image, False, 0, 0))
    assert np.array_equal(out[4:, 4:], original[:28, :28])
    assert np.array_equal(out[3, 4:], original[1, :28]) and np.array_equal(out[4:, 0], original[:28, 4])


def test_weak_augment_keeps_shape_and_is_deterministic_under_a_seed():
    images = cifar_images(16)
    first = augment.weak_augment_batch(images, random.Random(5))
    second = augment.weak_augment_batch(images, random.Random(5))
    assert first.shape == images.shape and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert not np.array_equal(first, augment.weak_augment_batch(images, random.Random(6)))


@both_recipes
def test_strong_augment_keeps_shape_and_is_deterministic_under_a_seed(recipe):
    images = cifar_images(16)
    first = augment.strong_augment_batch(images, recipe, random.Random(5))
    assert first.shape == images.shape and first.dtype == np.uint8
    assert np.array_equal(first, augment.strong_augment_batch(images, recipe, random.Random(5)))
    assert not np.array_equal(first, augment.strong_augment_batch(images, recipe, random.Random(6)))


@both_recipes
def test_strong_augment_applies_its_stages_in_the_recipes_order(recipe):
    image = real_images(1)[0]
    rng = random.Random(9)
    if recipe.order == "flip_crop_first":
        expected = augment.weak_augment(image, rng)
        expected = augment.random_cutout(augment.rand_augment(expected, recipe, rng), recipe, rng)
    else:
        expected = augment.random_cutout(augment.rand_augment(image, recipe, rng), recipe, rng)
        expected = augment.weak_augment(expected, rng)
    assert np.array_equal(pixels_of(augment.strong_augment(image, recipe, random.Random(9))), pixels_of(expected))
