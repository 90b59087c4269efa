"""The batched on-device augmentations (augment_batched.py) against the per-image PIL reference (augment.py).

Same op table, same distribution of ops and magnitudes, and per op the same pixels as Pillow at fixed
magnitudes, on real CIFAR-10 images; under the paper's recipe and under TorchSSL's.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from implementations.interface import TrainConfig
from implementations.ledger import TORCHSSL_CHOICES
from implementations.own import augment, augment_batched, augment_ops
from tests.cifar_images import cifar_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAPER = augment.PAPER_RECIPE
TORCHSSL = augment.AugmentationRecipe.from_config(TrainConfig().replace(**TORCHSSL_CHOICES))
both_recipes = pytest.mark.parametrize("recipe", [PAPER, TORCHSSL], ids=["paper", "torchssl"])
# Every op reproduces Pillow's integer and float32 arithmetic, so the pixels are equal. Rotate alone may
# differ on another machine: cos and sin come from torch there and from libm in Pillow, and a last-ulp
# difference can move a rotated pixel centre across a pixel edge (a handful of values, never a shift).
MAX_DIFFERING_FRACTION = 1e-3


def allowed_differing_fraction(name: str) -> float:
    return MAX_DIFFERING_FRACTION if name == "Rotate" else 0.0




def batch_of(images_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(images_hwc)).permute(0, 3, 1, 2).contiguous()


def hwc(batch: torch.Tensor) -> np.ndarray:
    return batch.permute(0, 2, 3, 1).numpy().astype(np.int16)


def pil_reference(images_hwc: np.ndarray, transform) -> np.ndarray:
    return np.stack([np.asarray(transform(Image.fromarray(image), index), dtype=np.int16)
                     for index, image in enumerate(images_hwc)])


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fixed_magnitudes(op: augment.AugmentOp) -> list[float]:
    if op.integer:
        return [float(bits) for bits in range(int(op.low), int(op.high) + 1)]
    # both ends, and values between that float32 holds exactly
    return sorted({op.low, op.high, (op.low + op.high) / 2, op.low + (op.high - op.low) * 0.3125})


def op_of(recipe: augment.AugmentationRecipe, name: str) -> augment.AugmentOp:
    return {op.name: op for op in recipe.ops}[name]


@both_recipes
@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_every_op_matches_pillow_at_fixed_magnitudes(name, recipe):
    images = cifar_images(32)
    fill = recipe.geometric_fill
    for magnitude in fixed_magnitudes(op_of(recipe, name)):
        magnitude = float(np.float32(magnitude))  # what both sides see
        batched = augment_ops.apply_op(batch_of(images), name, torch.full((len(images),), magnitude), fill)
        reference = pil_reference(images, lambda image, _: augment.apply_op(image, name, magnitude, fill))
        differing = np.mean(hwc(batched) != reference)
        assert differing <= allowed_differing_fraction(name), f"{name} at {magnitude}: {differing:.2%} of values differ"


@both_recipes
@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_every_op_matches_pillow_with_a_different_magnitude_per_image(name, recipe):
    images = cifar_images(32)
    op, fill = op_of(recipe, name), recipe.geometric_fill
    if op.integer:
        magnitudes = torch.randint(int(op.low), int(op.high) + 1, (len(images),), generator=generator(1)).float()
    else:
        magnitudes = op.low + torch.rand(len(images), generator=generator(1)) * (op.high - op.low)
    batched = augment_ops.apply_op(batch_of(images), name, magnitudes, fill)
    per_image = magnitudes.tolist()
    reference = pil_reference(images, lambda image, index: augment.apply_op(image, name, per_image[index], fill))
    assert np.mean(hwc(batched) != reference) <= allowed_differing_fraction(name)


@both_recipes
def test_one_round_applies_each_images_own_op_as_the_single_op_functions_do(recipe):
    images = batch_of(cifar_images(64))
    op_indices, magnitudes = augment_batched.draw_ops(len(images), recipe, generator(3))
    fused = augment_ops.apply_ops(images, op_indices[0], magnitudes[0], recipe.geometric_fill)
    for index in range(len(images)):
        name = augment.OP_NAMES[int(op_indices[0, index])]
        alone = augment_ops.apply_op(images[index:index + 1], name, magnitudes[0, index:index + 1],
                                         recipe.geometric_fill)
        assert torch.equal(fused[index:index + 1], alone), name


@both_recipes
def test_draw_ops_draws_one_round_per_op_of_the_recipe(recipe):
    op_indices, magnitudes = augment_batched.draw_ops(10, recipe, generator(0))
    assert op_indices.shape == magnitudes.shape == (recipe.num_ops, 10)


def test_ops_are_drawn_uniformly_per_image_and_round():
    op_indices, _ = augment_batched.draw_ops(7000, PAPER, generator(0))
    assert op_indices.shape == (2, 7000) and op_indices.dtype == torch.int64
    counts = torch.bincount(op_indices.flatten(), minlength=14).double()
    expected = op_indices.numel() / 14
    assert ((counts - expected) ** 2 / expected).sum() < 36.1  # chi-square, 13 dof, p = 0.001
    # each image draws its own ops, independently in each round and with replacement
    assert (op_indices[0] == op_indices[1]).double().mean() == pytest.approx(1 / 14, abs=0.01)


@both_recipes
@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_magnitudes_are_uniform_in_the_same_range_as_the_reference(name, recipe):
    op = op_of(recipe, name)
    op_indices, magnitudes = augment_batched.draw_ops(30000, augment.AugmentationRecipe(
        num_ops=2, posterize_max_bits=recipe.posterize_max_bits), generator(1))
    drawn = magnitudes[op_indices == augment_ops.OP_INDEX[name]].double()
    assert len(drawn) > 3500
    assert drawn.min() >= op.low and drawn.max() <= op.high
    if op.integer:
        values, counts = torch.unique(drawn, return_counts=True)
        assert values.tolist() == [float(bits) for bits in range(int(op.low), int(op.high) + 1)]
        assert counts.min() > 0.8 * len(drawn) / len(values)
    elif op.high > op.low:
        width = op.high - op.low
        assert drawn.min() < op.low + 0.01 * width and drawn.max() > op.high - 0.01 * width
        quarter_counts = torch.histc(drawn, bins=4, min=op.low, max=op.high)
        assert quarter_counts.min() > 0.9 * len(drawn) / 4


def test_flip_and_crop_matches_pillow_for_every_flip_and_offset():
    images = cifar_images(4)
    for flip in (False, True):
        for top in range(9):
            for left in range(9):
                batched = augment_batched.flip_and_crop(batch_of(images), torch.full((4,), flip),
                                                        torch.full((4,), top), torch.full((4,), left))
                reference = pil_reference(images, lambda image, _: augment.flip_and_crop(image, flip, top, left))
                assert np.array_equal(hwc(batched), reference), (flip, top, left)


def test_weak_augment_draws_flips_half_the_time_and_offsets_uniformly():
    flips, tops, lefts = augment_batched.draw_flip_and_crop(9000, generator(0))
    assert flips.double().mean() == pytest.approx(0.5, abs=0.02)
    for offsets in (tops, lefts):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 0.85 * 1000


CUTOUT_GEOMETRIES = ["pixel_centres", "truncated_corners"]
CUTOUT_FILLS = [PAPER.cutout_fill, TORCHSSL.cutout_fill]


@pytest.mark.parametrize("geometry", CUTOUT_GEOMETRIES)
@pytest.mark.parametrize("fill", CUTOUT_FILLS, ids=["grey", "cifar_mean"])
def test_cutout_matches_pillow_at_fixed_squares(geometry, fill):
    images = cifar_images(8)
    sides = torch.tensor([0.0, 3.0, 10.0, 16.0, 16.0, 7.5, 0.25, 15.999])
    centers_x = torch.tensor([5.0, 16.0, 16.0, 0.0, 31.9, 20.25, 32.0, 1.0001])
    centers_y = torch.tensor([5.0, 16.0, 8.0, 32.0, 0.1, 3.75, 1.0001, 32.0])
    batched = augment_batched.cutout(batch_of(images), sides, centers_x, centers_y, fill, geometry)
    reference = pil_reference(images, lambda image, i: augment.cutout(
        image, float(sides[i]), float(centers_x[i]), float(centers_y[i]), fill, geometry))
    assert np.array_equal(hwc(batched), reference)


@both_recipes
def test_cutout_matches_pillow_on_the_squares_it_draws(recipe):
    images = cifar_images(256)
    squares = augment_batched.draw_cutout(len(images), generator(6), geometry=recipe.cutout_geometry)
    batched = augment_batched.cutout(batch_of(images), *squares, recipe.cutout_fill, recipe.cutout_geometry)
    sides, centers_x, centers_y = (values.tolist() for values in squares)
    reference = pil_reference(images, lambda image, i: augment.cutout(
        image, sides[i], centers_x[i], centers_y[i], recipe.cutout_fill, recipe.cutout_geometry))
    assert np.array_equal(hwc(batched), reference)


@both_recipes
def test_random_cutout_squares_have_sides_between_zero_and_half_the_image(recipe):
    blank = torch.zeros((2000, 3, 32, 32), dtype=torch.uint8)
    fill = torch.tensor(recipe.cutout_fill, dtype=torch.uint8).view(1, 3, 1, 1)
    painted = (augment_batched.random_cutout(blank, recipe, generator(0)) == fill).all(dim=1)
    rows, columns = painted.any(dim=2).sum(dim=1), painted.any(dim=1).sum(dim=1)
    assert torch.equal(painted.sum(dim=(1, 2)), rows * columns)  # one rectangle per image
    longest_side = 16 if recipe.cutout_geometry == "pixel_centres" else 17  # truncated corners: one more
    assert rows.max() <= longest_side and columns.max() <= longest_side and rows.max() >= longest_side - 1
    sides = augment_batched.draw_cutout(20000, generator(1), geometry=recipe.cutout_geometry)[0]
    assert sides.min() >= 0 and sides.max() <= 16 and sides.mean() == pytest.approx(8, abs=0.15)


def test_torchssls_cutout_centres_are_uniform_between_1_and_the_size():
    _, centers_x, centers_y = augment_batched.draw_cutout(20000, generator(2), geometry="truncated_corners")
    for centres in (centers_x, centers_y):
        assert centres.min() > 1 and centres.max() <= 32 and centres.min() < 1.01 and centres.max() > 31.99
        assert torch.histc(centres, bins=4, min=1, max=32).min() > 0.9 * 20000 / 4


@both_recipes
def test_augmentations_keep_dtype_shape_and_device(recipe):
    images = batch_of(cifar_images(16))
    for out in (augment_batched.weak_augment(images, generator(0)),
                augment_batched.strong_augment(images, recipe, generator(0))):
        assert (out.dtype, out.shape, out.device) == (torch.uint8, images.shape, images.device)


@both_recipes
def test_augmentations_are_deterministic_under_a_generator_seed(recipe):
    images = batch_of(cifar_images(32))
    for augmentation in (lambda g: augment_batched.weak_augment(images, g),
                         lambda g: augment_batched.strong_augment(images, recipe, g)):
        assert torch.equal(augmentation(generator(4)), augmentation(generator(4)))
        assert not torch.equal(augmentation(generator(4)), augmentation(generator(5)))


def test_strong_augment_is_flip_and_crop_then_rand_augment_then_cutout_in_the_papers_order():
    images = batch_of(cifar_images(32))
    g = generator(8)
    expected = augment_batched.random_cutout(
        augment_batched.rand_augment(augment_batched.weak_augment(images, g), PAPER, g), PAPER, g)
    assert torch.equal(augment_batched.strong_augment(images, PAPER, generator(8)), expected)


def test_strong_augment_is_rand_augment_then_cutout_then_flip_and_crop_in_torchssls_order():
    images = batch_of(cifar_images(32))
    g = generator(8)
    expected = augment_batched.weak_augment(
        augment_batched.random_cutout(augment_batched.rand_augment(images, TORCHSSL, g), TORCHSSL, g), g)
    assert torch.equal(augment_batched.strong_augment(images, TORCHSSL, generator(8)), expected)


@both_recipes
def test_the_whole_strong_pipeline_matches_pillow_given_the_same_draws(recipe):
    # The batched stages in the recipe's order, fed the draws the batched path makes, against the PIL
    # functions fed the same draws image by image (the two tests above tie strong_augment to these stages).
    images = cifar_images(128)
    g = generator(12)
    if recipe.order == "randaugment_first":
        op_indices, magnitudes = augment_batched.draw_ops(len(images), recipe, g)
        squares = augment_batched.draw_cutout(len(images), g, geometry=recipe.cutout_geometry)
        flips_and_crops = augment_batched.draw_flip_and_crop(len(images), g)
    else:
        flips_and_crops = augment_batched.draw_flip_and_crop(len(images), g)
        op_indices, magnitudes = augment_batched.draw_ops(len(images), recipe, g)
        squares = augment_batched.draw_cutout(len(images), g, geometry=recipe.cutout_geometry)

    def batched_rand_augment_and_cutout(batch: torch.Tensor) -> torch.Tensor:
        for round_ops, round_magnitudes in zip(op_indices, magnitudes):
            batch = augment_ops.apply_ops(batch, round_ops, round_magnitudes, recipe.geometric_fill)
        return augment_batched.cutout(batch, *squares, recipe.cutout_fill, recipe.cutout_geometry)

    def pil_rand_augment_and_cutout(image: Image.Image, i: int) -> Image.Image:
        for round_ops, round_magnitudes in zip(op_indices.tolist(), magnitudes.tolist()):
            image = augment.apply_op(image, augment.OP_NAMES[round_ops[i]], round_magnitudes[i], recipe.geometric_fill)
        side, center_x, center_y = (float(values[i]) for values in squares)
        return augment.cutout(image, side, center_x, center_y, recipe.cutout_fill, recipe.cutout_geometry)

    def flip_and_crop(image: Image.Image, i: int) -> Image.Image:
        flips, tops, lefts = flips_and_crops
        return augment.flip_and_crop(image, bool(flips[i]), int(tops[i]), int(lefts[i]))
    if recipe.order == "randaugment_first":
        batched = augment_batched.flip_and_crop(batched_rand_augment_and_cutout(batch_of(images)), *flips_and_crops)
        reference = pil_reference(images, lambda image, i: flip_and_crop(pil_rand_augment_and_cutout(image, i), i))
    else:
        batched = batched_rand_augment_and_cutout(augment_batched.flip_and_crop(batch_of(images), *flips_and_crops))
        reference = pil_reference(images, lambda image, i: pil_rand_augment_and_cutout(flip_and_crop(image, i), i))
    assert np.mean(hwc(batched) != reference) <= MAX_DIFFERING_FRACTION


def test_the_generator_state_checkpoints_the_augmentation_stream():
    images = batch_of(cifar_images(16))
    g = generator(2)
    augment_batched.strong_augment(images, PAPER, g)
    saved = g.get_state()
    expected = augment_batched.strong_augment(images, PAPER, g)
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert torch.equal(augment_batched.strong_augment(images, PAPER, resumed), expected)


@pytest.mark.parametrize("normalization", ["kekmodel", "torchssl"])
def test_normalize_standardises_with_the_chosen_cifar10_statistics_and_keeps_channels_last(normalization):
    images = batch_of(cifar_images(8)).contiguous(memory_format=torch.channels_last)
    normalised = augment_batched.normalize(images, normalization)
    assert normalised.dtype == torch.float32 and normalised.is_contiguous(memory_format=torch.channels_last)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in augment.NORMALIZATIONS[normalization])
    assert torch.allclose(normalised, (images.float() / 255 - mean) / std, atol=1e-5)


def test_normalize_uses_kekmodels_statistics_by_default():
    images = batch_of(cifar_images(8))
    assert torch.equal(augment_batched.normalize(images), augment_batched.normalize(images, "kekmodel"))


@both_recipes
def test_a_round_reads_no_tensor_values_on_the_host(recipe):
    # Meta tensors carry no data: any .item(), boolean indexing or data-sized output would fail here,
    # which is what would make CUDA wait for the device. Draws off the host take the whole-batch round.
    images = torch.empty((8, 3, 32, 32), dtype=torch.uint8, device="meta")
    index, flips = torch.empty(8, dtype=torch.int64, device="meta"), torch.empty(8, dtype=torch.bool, device="meta")
    values = torch.empty(8, dtype=torch.float32, device="meta")
    out = augment_ops.apply_ops(images, index, values, recipe.geometric_fill)
    out = augment_batched.cutout(augment_batched.flip_and_crop(out, flips, index, index), values, values, values,
                                 recipe.cutout_fill, recipe.cutout_geometry)
    assert augment_batched.normalize(out, recipe.normalization).shape == (8, 3, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: no GPU visible (SSL_BENCH_GPU_TESTS=1 shows it)")
@both_recipes
def test_strong_augment_on_cuda_does_not_synchronise_and_matches_cpu_ops(recipe):
    images = batch_of(cifar_images(64)).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    augment_batched.normalize(augment_batched.strong_augment(images, recipe, g), recipe.normalization)  # makes
    torch.cuda.set_sync_debug_mode("error")  # the per-device constants first
    try:
        out = augment_batched.normalize(augment_batched.strong_augment(images, recipe, g), recipe.normalization)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.dtype == torch.float32 and out.shape == images.shape
    op_indices, magnitudes = augment_batched.draw_ops(64, recipe, g)
    on_cuda = augment_ops.apply_ops(images, op_indices[0], magnitudes[0], recipe.geometric_fill).cpu()
    on_cpu = augment_ops.apply_ops(images.cpu(), op_indices[0].cpu(), magnitudes[0].cpu(), recipe.geometric_fill)
    assert (on_cuda != on_cpu).double().mean() <= MAX_DIFFERING_FRACTION


@both_recipes
def test_whole_batch_round_gives_the_same_images_as_the_grouped_round(recipe):
    images = batch_of(cifar_images(256))
    op_indices, magnitudes = augment_batched.draw_ops(len(images), recipe, generator(11))
    for round_ops, round_magnitudes in zip(op_indices, magnitudes):
        grouped = augment_ops.apply_ops_by_group(images, round_ops, round_magnitudes, recipe.geometric_fill)
        whole_batch = augment_ops.apply_ops_without_sync(images, round_ops, round_magnitudes, recipe.geometric_fill)
        assert torch.equal(whole_batch, grouped)
        images = grouped


@pytest.mark.parametrize("strength, recipe", [("weak", PAPER), ("strong", PAPER), ("strong", TORCHSSL)],
                         ids=["weak", "strong-paper", "strong-torchssl"])
def test_whole_pipelines_give_the_same_distribution_of_images_as_the_pil_reference(strength, recipe):
    # End to end, not op by op: each real image augmented 4 times by each path (independent draws), and
    # per-image statistics compared by a two-sample Kolmogorov-Smirnov test. A wrong order of ops, a
    # range or probability off, a Cutout of another size would each shift one of these distributions.
    originals = np.concatenate([cifar_images(1102)] * 4)
    if strength == "weak":
        by_pil = augment.weak_augment_batch(originals, random.Random(3))
        batched = augment_batched.weak_augment(batch_of(originals), generator(3))
    else:
        by_pil = augment.strong_augment_batch(originals, recipe, random.Random(3))
        batched = augment_batched.strong_augment(batch_of(originals), recipe, generator(3))

    def statistics(images: np.ndarray) -> dict[str, np.ndarray]:
        values = images.astype(np.float32)
        return {"mean absolute change": np.abs(values - originals).mean(axis=(1, 2, 3)),
                "fraction of Cutout colour": (images == recipe.cutout_fill).all(axis=-1).mean(axis=(1, 2)),
                "fraction of geometric fill": (images == recipe.geometric_fill).all(axis=-1).mean(axis=(1, 2)),
                "mean": values.mean(axis=(1, 2, 3)),
                "spread": values.std(axis=(1, 2, 3))}

    reference, ours = statistics(by_pil), statistics(hwc(batched).astype(np.uint8))
    for name in reference:
        assert stats.ks_2samp(reference[name], ours[name]).pvalue > 1e-3, name
    assert abs(ours["mean absolute change"].mean() - reference["mean absolute change"].mean()) < 1.0


@pytest.mark.slow
@both_recipes
def test_the_compiled_augmentation_gives_the_eager_pixels_from_the_same_draws(recipe):
    images = batch_of(cifar_images(64))
    eager_generator, compiled_generator = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    eager = augment_batched.strong_augment(images, recipe, eager_generator)
    compiled = augment_batched.strong_augment(images, recipe, compiled_generator, compiled=True)
    assert torch.equal(eager, compiled)
    assert torch.equal(augment_batched.weak_augment(images, eager_generator),
                       augment_batched.weak_augment(images, compiled_generator, compiled=True))
    assert torch.equal(eager_generator.get_state(), compiled_generator.get_state())  # the same stream, drawn alike
