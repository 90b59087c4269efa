"""FixMatch's augmentations on whole uint8 batches on the training device (airbench-style).

The same definitions, op table, ranges and recipes (`AugmentationRecipe`: the paper's or TorchSSL's
choices) as the per-image PIL reference (augment.py), on uint8 tensors (N, 3, H, W) already on the
training device, with randomness from a `torch.Generator` on that device: every image draws its own flip,
crop, RandAugment ops, magnitudes and Cutout square, and no Python loop runs over the images.

The arithmetic follows Pillow 13 step by step (blend truncation, the ITU-R 601 "L" conversion, SMOOTH's
rounding, autocontrast's and equalize's tables, the 16.16 fixed point of rotations and shears), so every
op gives Pillow's pixels exactly; tests/test_augment_batched.py checks it op by op.

One RandAugment round (every image applies the one op it drew) runs in one of two ways, same pixels:
  * draws on the host (CPU): the images are grouped by the op they drew and each op runs once, on its
    group (`apply_ops_by_group`);
  * draws on an accelerator: reading which ops were drawn would make the host wait for the device, so
    `apply_ops_without_sync` runs three op families on the whole batch, each the identity at a neutral
    parameter for the images that drew another op: per-channel lookup tables (AutoContrast, Brightness,
    Contrast, Equalize, Identity, Posterize, Solarize), a blend with a degenerate image (Color,
    Sharpness; factor 1), and one nearest-neighbour warp (Rotate, ShearX/Y, TranslateX/Y; identity
    matrix). Nothing in it reads a tensor value on the host.
On the CPU a round is faster by group than on the whole batch (docs/performance.md, "Measured choices in the
code"), so CPU draws use the groups; benchmarks/augment_throughput.py measures the whole strong augmentation
against per-image PIL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from implementations.own.augment import (
    CROP_PADDING,
    CUTOUT_MAX_FRACTION,
    IMAGE_SIZE,
    NORMALIZATIONS,
    OP_NAMES,
    PAPER_RECIPE,
    AugmentationRecipe,
    randaugment_ops,
)
from implementations.own.augment_ops import apply_ops, apply_ops_without_sync, per_image



# Host values made into device tensors once per device and value: copying them to an accelerator at every
# call would synchronise.
@functools.lru_cache(maxsize=None)
def _magnitude_ranges(device: torch.device, posterize_max_bits: int) -> dict[str, torch.Tensor]:
    ops = randaugment_ops(posterize_max_bits)
    return {
        "low": torch.tensor([op.low for op in ops], dtype=torch.float32, device=device),
        "high": torch.tensor([op.high for op in ops], dtype=torch.float32, device=device),
        "integer": torch.tensor([op.integer for op in ops], dtype=torch.bool, device=device),
    }


@functools.lru_cache(maxsize=None)
def _normalization_constants(device: torch.device, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = NORMALIZATIONS[normalization]
    return (torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1))


@functools.lru_cache(maxsize=None)
def _colour(device: torch.device, rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8, device=device).view(1, 3, 1, 1)


def draw_ops(num_images: int, recipe: AugmentationRecipe,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For every round and image an op uniform over the recipe's ops and a magnitude uniform in its range.

    Returns op_indices (recipe.num_ops, N) int64 and magnitudes (recipe.num_ops, N) float32, on the
    generator's device; integer ranges (Posterize) give each integer low..high with equal probability.
    """
    device = generator.device
    ranges = _magnitude_ranges(device, recipe.posterize_max_bits)
    op_indices = torch.randint(len(OP_NAMES), (recipe.num_ops, num_images), generator=generator, device=device)
    uniform = torch.rand((recipe.num_ops, num_images), generator=generator, device=device)
    low, high, integer = ranges["low"][op_indices], ranges["high"][op_indices], ranges["integer"][op_indices]
    continuous = low + uniform * (high - low)
    whole = torch.minimum(low + (uniform * (high - low + 1)).floor(), high)
    return op_indices, torch.where(integer, whole, continuous)


def rand_augment(images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator) -> torch.Tensor:
    """FixMatch's RandAugment: `recipe.num_ops` rounds, each image drawing its op and magnitude in each."""
    return apply_rounds(images, *draw_ops(images.shape[0], recipe, generator), recipe.geometric_fill)


def apply_rounds(images: torch.Tensor, op_indices: torch.Tensor, magnitudes: torch.Tensor, geometric_fill: int,
                 whole_batch: bool = False) -> torch.Tensor:
    """Every round of drawn ops (rounds × N) in turn; `whole_batch`: without reading the draws on the host."""
    apply = apply_ops_without_sync if whole_batch else apply_ops
    for round_ops, round_magnitudes in zip(op_indices, magnitudes):
        images = apply(images, round_ops, round_magnitudes, geometric_fill)
    return images


# ---------------------------------------------------------------- Cutout, flip and crop
# Cutout's square, per axis: (N, size) booleans, which rows (or columns) of image n it covers. The same
# geometries as augment.py.
def _covered_by_pixel_centres(sides: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    # The paper's square rasterised: the pixels whose centres (index + 0.5) lie inside it.
    pixel_centres = torch.arange(size, device=sides.device, dtype=torch.float32) + 0.5
    return (pixel_centres - per_image(centres.to(torch.float32), 2)).abs() < per_image(sides.to(torch.float32), 2) / 2


def _covered_by_truncated_corners(sides: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    # TorchSSL's CutoutAbs: near corner int(max(0, centre − side/2)), far corner min(size, near + side)
    # truncated, both included; nothing for a side of 0. In float64, as Python computes it, so the integer
    # corners are exactly TorchSSL's for the same draws.
    sides, centres = per_image(sides.to(torch.float64), 2), per_image(centres.to(torch.float64), 2)
    near = (centres - sides / 2).clamp_(min=0).floor_()
    far = (near + sides).clamp_(max=size).floor_()
    indices = torch.arange(size, device=sides.device, dtype=torch.float64)
    return (near <= indices) & (indices <= far) & (sides > 0)


_CUTOUT_GEOMETRIES = {"pixel_centres": _covered_by_pixel_centres, "truncated_corners": _covered_by_truncated_corners}


def cutout(images: torch.Tensor, sides: torch.Tensor, centers_x: torch.Tensor, centers_y: torch.Tensor,
           fill: tuple[int, int, int] = PAPER_RECIPE.cutout_fill,
           geometry: str = PAPER_RECIPE.cutout_geometry) -> torch.Tensor:
    """Paint `fill` over image n's square of sides[n] pixels centred at (centers_x[n], centers_y[n]), clipped
    at the border; `geometry` says which pixels the square covers."""
    height, width = images.shape[-2:]
    covered_by = _CUTOUT_GEOMETRIES[geometry]
    rows, columns = covered_by(sides, centers_y, height), covered_by(sides, centers_x, width)
    covered = (rows.unsqueeze(2) & columns.unsqueeze(1)).unsqueeze(1).to(torch.uint8)
    # Arithmetic rather than masked_fill, which is several times slower on uint8 CPU batches.
    return images * (1 - covered) + covered * _colour(images.device, tuple(fill))


def draw_cutout(num_images: int, generator: torch.Generator, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE,
                geometry: str = PAPER_RECIPE.cutout_geometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image a side uniform in [0, CUTOUT_MAX_FRACTION·width] pixels and a centre: uniform over the image
    for the paper's square, each coordinate uniform in (1, size] for TorchSSL's (augment.draw_cutout_centre)."""
    uniform = torch.rand((3, num_images), generator=generator, device=generator.device)
    sides = uniform[0] * (CUTOUT_MAX_FRACTION * width)
    if geometry == "truncated_corners":
        return sides, width - (width - 1) * uniform[1], height - (height - 1) * uniform[2]
    return sides, uniform[1] * width, uniform[2] * height


def random_cutout(images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator) -> torch.Tensor:
    _check_devices(images, generator)
    squares = draw_cutout(images.shape[0], generator, *images.shape[-2:], geometry=recipe.cutout_geometry)
    return cutout(images, *squares, fill=recipe.cutout_fill, geometry=recipe.cutout_geometry)


def _reflect(positions: torch.Tensor, size: int) -> torch.Tensor:
    # Reflect padding without repeating the edge pixel (numpy/torch "reflect"): -1 -> 1, size -> size - 2.
    positions = positions.abs()
    return torch.where(positions > size - 1, 2 * (size - 1) - positions, positions)


def flip_and_crop(images: torch.Tensor, flips: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor) -> torch.Tensor:
    """Per image: mirror if flips[n], reflect-pad by CROP_PADDING, crop at (tops[n], lefts[n]) of the padded image."""
    batch, channels, height, width = images.shape
    rows = _reflect(torch.arange(height, device=images.device) + per_image(tops.long(), 2) - CROP_PADDING, height)
    columns = _reflect(torch.arange(width, device=images.device) + per_image(lefts.long(), 2) - CROP_PADDING, width)
    columns = torch.where(per_image(flips.bool(), 2), width - 1 - columns, columns)
    flat_sources = (rows.unsqueeze(2) * width + columns.unsqueeze(1)).view(batch, 1, height * width)
    return images.reshape(batch, channels, -1).gather(2, flat_sources.expand(batch, channels, -1)).view(images.shape)


def draw_flip_and_crop(num_images: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image a flip with probability 0.5 and crop offsets uniform in 0..2·CROP_PADDING: (flips, tops, lefts)."""
    flips = torch.rand(num_images, generator=generator, device=generator.device) < 0.5
    offsets = torch.randint(2 * CROP_PADDING + 1, (2, num_images), generator=generator, device=generator.device)
    return flips, offsets[0], offsets[1]


# ---------------------------------------------------------------- the two augmentations and normalisation
def _check_devices(images: torch.Tensor, generator: torch.Generator) -> None:
    if images.device.type != generator.device.type:
        raise ValueError(f"the augmentation generator is on {generator.device} but the images are on "
                         f"{images.device}; create the generator on the images' device.")


def weak_augment(images: torch.Tensor, generator: torch.Generator, compiled: bool = False) -> torch.Tensor:
    """Random horizontal flip (p = 0.5) and random crop of the reflect-padded image; uint8 in, uint8 out."""
    _check_devices(images, generator)
    draws = draw_flip_and_crop(images.shape[0], generator)
    return (_compiled(flip_and_crop) if compiled else flip_and_crop)(images, *draws)


@dataclass(frozen=True)
class StrongDraws:
    """Every random draw of a strong augmentation of N images: flip and crop, RandAugment's ops and magnitudes
    (rounds × N), Cutout's squares."""

    flip_and_crop: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    op_indices: torch.Tensor
    magnitudes: torch.Tensor
    cutout: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def draw_strong(images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator) -> StrongDraws:
    """The draws in the order the augmentation applies them, so that the random stream is the recipe's."""
    num_images, height, width = images.shape[0], *images.shape[-2:]
    if recipe.order == "flip_crop_first":
        weak = draw_flip_and_crop(num_images, generator)
        op_indices, magnitudes = draw_ops(num_images, recipe, generator)
        squares = draw_cutout(num_images, generator, height, width, geometry=recipe.cutout_geometry)
    else:
        op_indices, magnitudes = draw_ops(num_images, recipe, generator)
        squares = draw_cutout(num_images, generator, height, width, geometry=recipe.cutout_geometry)
        weak = draw_flip_and_crop(num_images, generator)
    return StrongDraws(weak, op_indices, magnitudes, squares)


def strong_from_draws(images: torch.Tensor, draws: StrongDraws, recipe: AugmentationRecipe,
                      whole_batch: bool = False) -> torch.Tensor:
    """The strong augmentation with the given draws: deterministic, so it can be compiled (`whole_batch` runs
    every round without reading the draws on the host, as a compiled graph must)."""
    def rand_augment_rounds(batch: torch.Tensor) -> torch.Tensor:
        return apply_rounds(batch, draws.op_indices, draws.magnitudes, recipe.geometric_fill, whole_batch)

    def cut(batch: torch.Tensor) -> torch.Tensor:
        return cutout(batch, *draws.cutout, fill=recipe.cutout_fill, geometry=recipe.cutout_geometry)

    if recipe.order == "flip_crop_first":
        return cut(rand_augment_rounds(flip_and_crop(images, *draws.flip_and_crop)))
    # TorchSSL: RandAugment and Cutout on the raw images, then the weak flip and crop.
    return flip_and_crop(cut(rand_augment_rounds(images)), *draws.flip_and_crop)


def strong_augment(images: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator,
                   compiled: bool = False) -> torch.Tensor:
    """Weak augmentation, RandAugment and Cutout, in the recipe's order and with its choices; uint8 in, uint8 out.

    `compiled`: the arithmetic as one torch.compile graph (fewer, fused kernels: on a GPU a round is otherwise
    about 200 small launches), the draws eager from the same generator, so the random stream is the same."""
    _check_devices(images, generator)
    draws = draw_strong(images, recipe, generator)
    if compiled:
        return _compiled(strong_from_draws)(images, draws, recipe, whole_batch=True)
    return strong_from_draws(images, draws, recipe)


@functools.cache
def _compiled(function):
    return torch.compile(function, dynamic=False)


def normalize(images: torch.Tensor, normalization: str = PAPER_RECIPE.normalization) -> torch.Tensor:
    """uint8 -> float32 standardised with the CIFAR-10 mean/std of `normalization` (a key of augment.NORMALIZATIONS),
    keeping the memory format (e.g. channels_last)."""
    mean, std = _normalization_constants(images.device, normalization)
    return images.to(torch.float32).div_(255).sub_(mean).div_(std)
