"""FixMatch's data augmentations, one PIL image at a time: the readable reference.

weak   = random horizontal flip, then a random 32x32 crop of the image reflect-padded by 4 pixels.
strong = weak, then RandAugment as FixMatch defines it (`num_ops` operations drawn uniformly WITH
         replacement from the 14 below, each always applied, each with a magnitude drawn uniformly
         from its range at every call; FixMatch paper, Table 12), then Cutout.

That is the paper's recipe, and own's default. Where TorchSSL chose otherwise (implementations/ledger.py),
an `AugmentationRecipe` switches to its choice: 3 operations; RandAugment + Cutout on the raw image, flip
and crop last; black where a geometric op uncovers pixels; Posterize keeping 4..7 bits; its Cutout colour
and square; its normalisation constants.

All randomness comes from the `random.Random` passed in, so a seed makes every call deterministic
and `rng.getstate()` checkpoints it. The fast batched path (augment_batched.py) takes its op table,
ranges and recipe from this module and is tested against these functions.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from implementations.interface import TrainConfig

# Per-channel mean and std that standardise images, by TrainConfig.normalization. kekmodel/FixMatch-pytorch's
# CIFAR-10 training-set statistics (own's default); TorchSSL's (datasets/ssl_dataset.py) agree to 2e-4.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "kekmodel": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "torchssl": (tuple(value / 255 for value in (125.3, 123.0, 113.9)),
                 tuple(value / 255 for value in (63.0, 62.1, 66.7))),
}

IMAGE_SIZE = 32
CROP_PADDING = 4  # weak augmentation: reflect-pad by this many pixels, crop back to IMAGE_SIZE
# Cutout as the paper's Table 12: a square of side uniform in [0, CUTOUT_MAX_FRACTION]·IMAGE_SIZE pixels
# (TorchSSL too; kekmodel always 16) at a random position, clipped at the border (see `cutout`).
CUTOUT_MAX_FRACTION = 0.5


@dataclass(frozen=True)
class AugmentOp:
    """One RandAugment operation and the range its magnitude is drawn from, uniformly, at every call."""

    name: str
    low: float
    high: float
    integer: bool = False  # magnitude drawn uniformly from the integers low, low + 1, ..., high

    def draw_magnitude(self, rng: random.Random) -> float:
        if self.integer:
            return rng.randint(int(self.low), int(self.high))
        return self.low + (self.high - self.low) * rng.random()


# FixMatch paper, Table 12. AutoContrast, Equalize and Identity take no magnitude (range [0, 0]).
RANDAUGMENT_OPS: tuple[AugmentOp, ...] = (
    AugmentOp("AutoContrast", 0.0, 0.0),
    AugmentOp("Brightness", 0.05, 0.95),  # enhancement factor; 1 would leave the image unchanged
    AugmentOp("Color", 0.05, 0.95),
    AugmentOp("Contrast", 0.05, 0.95),
    AugmentOp("Equalize", 0.0, 0.0),
    AugmentOp("Identity", 0.0, 0.0),
    AugmentOp("Posterize", 4, 8, integer=True),  # bits kept per channel
    AugmentOp("Rotate", -30.0, 30.0),  # degrees, counter-clockwise
    AugmentOp("Sharpness", 0.05, 0.95),
    AugmentOp("ShearX", -0.3, 0.3),
    AugmentOp("ShearY", -0.3, 0.3),
    AugmentOp("Solarize", 0.0, 256.0),  # threshold: values >= it are inverted
    AugmentOp("TranslateX", -0.3, 0.3),  # fraction of the image size
    AugmentOp("TranslateY", -0.3, 0.3),
)
OP_NAMES = tuple(op.name for op in RANDAUGMENT_OPS)
GEOMETRIC_OP_NAMES = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")  # the ops that uncover pixels


@functools.cache
def randaugment_ops(posterize_max_bits: int = 8) -> tuple[AugmentOp, ...]:
    """RANDAUGMENT_OPS with Posterize drawing its bits from 4..posterize_max_bits."""
    return tuple(dataclasses.replace(op, high=posterize_max_bits) if op.name == "Posterize" else op
                 for op in RANDAUGMENT_OPS)


@dataclass(frozen=True)
class AugmentationRecipe:
    """The choices of the strong augmentation where the paper and TorchSSL differ; the defaults are the
    paper's (TrainConfig's). Each field says what TorchSSL does instead."""

    num_ops: int = 2  # RandAugment operations per image; TorchSSL 3
    # "flip_crop_first": flip + crop, then RandAugment, then Cutout (the paper code, kekmodel).
    # "randaugment_first": RandAugment + Cutout on the raw image, then flip + crop (TorchSSL).
    order: Literal["flip_crop_first", "randaugment_first"] = "flip_crop_first"
    # Grey level of the pixels Rotate, Shear and Translate uncover: kekmodel's 128; TorchSSL leaves PIL's black.
    geometric_fill: int = 128
    # Cutout's colour: kekmodel's grey; TorchSSL paints the CIFAR-10 mean colour (125, 123, 114).
    cutout_fill: tuple[int, int, int] = (127, 127, 127)
    # Which pixels Cutout covers and where its centre is drawn; see `cutout` and `draw_cutout_centre`.
    cutout_geometry: Literal["pixel_centres", "truncated_corners"] = "pixel_centres"
    # Posterize keeps 4..posterize_max_bits bits: the paper's 8; TorchSSL's int(uniform(4, 8)) is at most 7.
    posterize_max_bits: int = 8
    normalization: Literal["kekmodel", "torchssl"] = "kekmodel"  # a key of NORMALIZATIONS

    @classmethod
    def from_config(cls, config: TrainConfig) -> AugmentationRecipe:
        return cls(num_ops=config.randaugment_ops, order=config.strong_augment_order,
                   geometric_fill=config.geometric_fill, cutout_fill=tuple(config.cutout_fill),
                   cutout_geometry=config.cutout_geometry, posterize_max_bits=config.posterize_max_bits,
                   normalization=config.normalization)

    @property
    def ops(self) -> tuple[AugmentOp, ...]:
        """The RandAugment op table with this recipe's Posterize range."""
        return randaugment_ops(self.posterize_max_bits)


PAPER_RECIPE = AugmentationRecipe()


def _affine(image: Image.Image, coefficients: tuple[float, ...], fill: tuple[int, ...]) -> Image.Image:
    # Pillow's coefficients (a, b, c, d, e, f) send the output pixel centre (x, y) = (column + 0.5, row + 0.5)
    # to the input point (a·x + b·y + c, d·x + e·y + f); nearest neighbour, uncovered pixels `fill`.
    return image.transform(image.size, Image.Transform.AFFINE, coefficients,
                           resample=Image.Resampling.NEAREST, fillcolor=fill)


_COLOUR_OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "AutoContrast": lambda image, _: ImageOps.autocontrast(image),
    "Brightness": lambda image, factor: ImageEnhance.Brightness(image).enhance(factor),
    "Color": lambda image, factor: ImageEnhance.Color(image).enhance(factor),
    "Contrast": lambda image, factor: ImageEnhance.Contrast(image).enhance(factor),
    "Equalize": lambda image, _: ImageOps.equalize(image),
    "Identity": lambda image, _: image,
    "Posterize": lambda image, bits: ImageOps.posterize(image, int(bits)),
    "Sharpness": lambda image, factor: ImageEnhance.Sharpness(image).enhance(factor),
    "Solarize": lambda image, threshold: ImageOps.solarize(image, threshold),
}
# The geometric ops also take the colour of the pixels they uncover.
_GEOMETRIC_OPS: dict[str, Callable[[Image.Image, float, tuple[int, ...]], Image.Image]] = {
    "Rotate": lambda image, degrees, fill: image.rotate(degrees, resample=Image.Resampling.NEAREST, fillcolor=fill),
    "ShearX": lambda image, shear, fill: _affine(image, (1, shear, 0, 0, 1, 0), fill),
    "ShearY": lambda image, shear, fill: _affine(image, (1, 0, 0, shear, 1, 0), fill),
    "TranslateX": lambda image, fraction, fill: _affine(image, (1, 0, fraction * image.size[0], 0, 1, 0), fill),
    "TranslateY": lambda image, fraction, fill: _affine(image, (1, 0, 0, 0, 1, fraction * image.size[1]), fill),
}
assert set(_COLOUR_OPS) | set(_GEOMETRIC_OPS) == set(OP_NAMES) and tuple(_GEOMETRIC_OPS) == GEOMETRIC_OP_NAMES


def apply_op(image: Image.Image, name: str, magnitude: float,
             geometric_fill: int = PAPER_RECIPE.geometric_fill) -> Image.Image:
    """One RandAugment operation at a fixed magnitude; the pixels a geometric op uncovers get grey `geometric_fill`."""
    if name in _GEOMETRIC_OPS:
        return _GEOMETRIC_OPS[name](image, magnitude, (geometric_fill,) * len(image.getbands()))
    return _COLOUR_OPS[name](image, magnitude)


def rand_augment(image: Image.Image, recipe: AugmentationRecipe, rng: random.Random) -> Image.Image:
    """FixMatch's RandAugment: `recipe.num_ops` ops drawn with replacement, each at a freshly drawn magnitude."""
    for op in rng.choices(recipe.ops, k=recipe.num_ops):
        image = apply_op(image, op.name, op.draw_magnitude(rng), recipe.geometric_fill)
    return image


# Cutout's square, per axis: which of the `size` rows (or columns) it covers.
def _covered_by_pixel_centres(side: float, centre: float, size: int) -> np.ndarray:
    # The paper's square rasterised: the pixels whose centres (index + 0.5) lie inside it.
    return np.abs(np.arange(size) + 0.5 - centre) < side / 2


def _covered_by_truncated_corners(side: float, centre: float, size: int) -> np.ndarray:
    # TorchSSL's CutoutAbs: near corner int(max(0, centre − side/2)), far corner min(size, near + side), a float
    # that PIL's ImageDraw.rectangle truncates and includes: int(side) + 1 pixels before clipping. TorchSSL's
    # Cutout returns the image unchanged for a side of 0.
    near = int(max(0.0, centre - side / 2))
    far = int(min(size, near + side))
    indices = np.arange(size)
    return (near <= indices) & (indices <= far) & (side > 0)


_CUTOUT_GEOMETRIES = {"pixel_centres": _covered_by_pixel_centres, "truncated_corners": _covered_by_truncated_corners}


def cutout(image: Image.Image, side: float, center_x: float, center_y: float,
           fill: tuple[int, int, int] = PAPER_RECIPE.cutout_fill,
           geometry: str = PAPER_RECIPE.cutout_geometry) -> Image.Image:
    """Paint `fill` over the square of `side` pixels centred at (center_x, center_y), clipped at the border;
    `geometry` says which pixels the square covers."""
    covered = _CUTOUT_GEOMETRIES[geometry]
    pixels = np.array(image)
    pixels[np.ix_(covered(side, center_y, image.height), covered(side, center_x, image.width))] = fill
    return Image.fromarray(pixels)


def draw_cutout_centre(size: int, geometry: str, rng: random.Random) -> float:
    """One coordinate of Cutout's centre: uniform over [0, size) for the paper's square; for TorchSSL's, uniform
    over (1, size], which is what its np.random.uniform(size) draws (the one argument is `low`, `high` is 1)."""
    if geometry == "truncated_corners":
        return size - (size - 1) * rng.random()
    return size * rng.random()


def random_cutout(image: Image.Image, recipe: AugmentationRecipe, rng: random.Random) -> Image.Image:
    side = CUTOUT_MAX_FRACTION * image.width * rng.random()
    center_x = draw_cutout_centre(image.width, recipe.cutout_geometry, rng)
    center_y = draw_cutout_centre(image.height, recipe.cutout_geometry, rng)
    return cutout(image, side, center_x, center_y, recipe.cutout_fill, recipe.cutout_geometry)


def flip_and_crop(image: Image.Image, flip: bool, top: int, left: int) -> Image.Image:
    """Mirror (if `flip`), reflect-pad by CROP_PADDING, crop IMAGE_SIZE² at (top, left) of the padded image."""
    # Imported here: training uses the batched ops only, and its processes need not pay for importing torchvision.
    import implementations.torchvision_compat  # noqa: F401  (must precede any torchvision import)
    from torchvision.transforms import functional as tv_functional

    if flip:
        image = ImageOps.mirror(image)
    padded = tv_functional.pad(image, CROP_PADDING, padding_mode="reflect")
    return tv_functional.crop(padded, top, left, IMAGE_SIZE, IMAGE_SIZE)


def weak_augment(image: Image.Image, rng: random.Random) -> Image.Image:
    flip = rng.random() < 0.5
    top = rng.randint(0, 2 * CROP_PADDING)
    left = rng.randint(0, 2 * CROP_PADDING)
    return flip_and_crop(image, flip, top, left)


def strong_augment(image: Image.Image, recipe: AugmentationRecipe, rng: random.Random) -> Image.Image:
    if recipe.order == "flip_crop_first":
        return random_cutout(rand_augment(weak_augment(image, rng), recipe, rng), recipe, rng)
    # TorchSSL: RandAugment and Cutout on the raw image, then the weak flip and crop.
    return weak_augment(random_cutout(rand_augment(image, recipe, rng), recipe, rng), rng)


def weak_augment_batch(images: np.ndarray, rng: random.Random) -> np.ndarray:
    """`weak_augment` over uint8 (N, H, W, 3) RGB images; returns the same layout."""
    return np.stack([np.asarray(weak_augment(Image.fromarray(image), rng)) for image in images])


def strong_augment_batch(images: np.ndarray, recipe: AugmentationRecipe, rng: random.Random) -> np.ndarray:
    """`strong_augment` over uint8 (N, H, W, 3) RGB images; returns the same layout."""
    return np.stack([np.asarray(strong_augment(Image.fromarray(image), recipe, rng)) for image in images])
