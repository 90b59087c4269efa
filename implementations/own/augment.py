"""FixMatch's data augmentations, one PIL image at a time: the readable reference.

weak   = random horizontal flip, then a random 32x32 crop of the image reflect-padded by 4 pixels.
strong = weak, then RandAugment as FixMatch defines it (`num_ops` operations drawn uniformly WITH
         replacement from the 14 below, each always applied, each with a magnitude drawn uniformly
         from its range at every call; FixMatch paper, Table 12), then Cutout.

The order flip/crop -> RandAugment -> Cutout is the one of the FixMatch code and kekmodel; TorchSSL
applies RandAugment + Cutout before flip/crop. TorchSSL uses 3 operations, the paper 2.

All randomness comes from the `random.Random` passed in, so a seed makes every call deterministic
and `rng.getstate()` checkpoints it. The fast batched path (augment_batched.py) takes its op table,
ranges and fill values from this module and is tested against these functions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

import harness.torchvision_compat  # noqa: F401  (must precede any torchvision import)
from torchvision.transforms import functional as tv_functional

# CIFAR-10 per-channel statistics of the training set, as in kekmodel/FixMatch-pytorch; TorchSSL's
# (125.3, 123.0, 113.9)/255 and (63.0, 62.1, 66.7)/255 agree to 2e-4.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

IMAGE_SIZE = 32
CROP_PADDING = 4  # weak augmentation: reflect-pad by this many pixels, crop back to IMAGE_SIZE
# Pixels that a rotation, shear or translation uncovers: mid grey, as kekmodel (fillcolor=(128, 128, 128));
# TorchSSL leaves PIL's default, black.
GEOMETRIC_FILL = (128, 128, 128)
# Cutout as the paper's Table 12: a square of side uniform in [0, CUTOUT_MAX_FRACTION]·IMAGE_SIZE pixels
# (TorchSSL too; kekmodel always 16) at a centre uniform over the image, clipped at the border, set to
# grey: kekmodel's (127, 127, 127); TorchSSL paints the CIFAR mean colour (125, 123, 114). Pixel (x, y)
# is covered when its centre (x + 0.5, y + 0.5) lies inside the square.
CUTOUT_MAX_FRACTION = 0.5
CUTOUT_FILL = 127


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


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    # Pillow's coefficients (a, b, c, d, e, f) send the output pixel centre (x, y) = (column + 0.5, row + 0.5)
    # to the input point (a·x + b·y + c, d·x + e·y + f); nearest neighbour, uncovered pixels grey.
    return image.transform(image.size, Image.Transform.AFFINE, coefficients,
                           resample=Image.Resampling.NEAREST, fillcolor=GEOMETRIC_FILL)


_OP_FUNCTIONS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "AutoContrast": lambda image, _: ImageOps.autocontrast(image),
    "Brightness": lambda image, factor: ImageEnhance.Brightness(image).enhance(factor),
    "Color": lambda image, factor: ImageEnhance.Color(image).enhance(factor),
    "Contrast": lambda image, factor: ImageEnhance.Contrast(image).enhance(factor),
    "Equalize": lambda image, _: ImageOps.equalize(image),
    "Identity": lambda image, _: image,
    "Posterize": lambda image, bits: ImageOps.posterize(image, int(bits)),
    "Rotate": lambda image, degrees: image.rotate(degrees, resample=Image.Resampling.NEAREST,
                                                  fillcolor=GEOMETRIC_FILL),
    "Sharpness": lambda image, factor: ImageEnhance.Sharpness(image).enhance(factor),
    "ShearX": lambda image, shear: _affine(image, (1, shear, 0, 0, 1, 0)),
    "ShearY": lambda image, shear: _affine(image, (1, 0, 0, shear, 1, 0)),
    "Solarize": lambda image, threshold: ImageOps.solarize(image, threshold),
    "TranslateX": lambda image, fraction: _affine(image, (1, 0, fraction * image.size[0], 0, 1, 0)),
    "TranslateY": lambda image, fraction: _affine(image, (1, 0, 0, 0, 1, fraction * image.size[1])),
}
assert tuple(_OP_FUNCTIONS) == OP_NAMES


def apply_op(image: Image.Image, name: str, magnitude: float) -> Image.Image:
    """One RandAugment operation at a fixed magnitude."""
    return _OP_FUNCTIONS[name](image, magnitude)


def rand_augment(image: Image.Image, num_ops: int, rng: random.Random) -> Image.Image:
    """FixMatch's RandAugment: `num_ops` ops drawn with replacement, each at a freshly drawn magnitude."""
    for op in rng.choices(RANDAUGMENT_OPS, k=num_ops):
        image = apply_op(image, op.name, op.draw_magnitude(rng))
    return image


def cutout(image: Image.Image, side: float, center_x: float, center_y: float) -> Image.Image:
    """Paint grey the pixels whose centres lie in the square of `side` pixels centred at (center_x, center_y)."""
    pixels = np.array(image)
    rows = np.abs(np.arange(image.height) + 0.5 - center_y) < side / 2
    columns = np.abs(np.arange(image.width) + 0.5 - center_x) < side / 2
    pixels[np.ix_(rows, columns)] = CUTOUT_FILL
    return Image.fromarray(pixels)


def random_cutout(image: Image.Image, rng: random.Random) -> Image.Image:
    side = CUTOUT_MAX_FRACTION * image.width * rng.random()
    return cutout(image, side, image.width * rng.random(), image.height * rng.random())


def flip_and_crop(image: Image.Image, flip: bool, top: int, left: int) -> Image.Image:
    """Mirror (if `flip`), reflect-pad by CROP_PADDING, crop IMAGE_SIZE² at (top, left) of the padded image."""
    if flip:
        image = ImageOps.mirror(image)
    padded = tv_functional.pad(image, CROP_PADDING, padding_mode="reflect")
    return tv_functional.crop(padded, top, left, IMAGE_SIZE, IMAGE_SIZE)


def weak_augment(image: Image.Image, rng: random.Random) -> Image.Image:
    flip = rng.random() < 0.5
    top = rng.randint(0, 2 * CROP_PADDING)
    left = rng.randint(0, 2 * CROP_PADDING)
    return flip_and_crop(image, flip, top, left)


def strong_augment(image: Image.Image, num_ops: int, rng: random.Random) -> Image.Image:
    return random_cutout(rand_augment(weak_augment(image, rng), num_ops, rng), rng)


def weak_augment_batch(images: np.ndarray, rng: random.Random) -> np.ndarray:
    """`weak_augment` over uint8 (N, H, W, 3) RGB images; returns the same layout."""
    return np.stack([np.asarray(weak_augment(Image.fromarray(image), rng)) for image in images])


def strong_augment_batch(images: np.ndarray, num_ops: int, rng: random.Random) -> np.ndarray:
    """`strong_augment` over uint8 (N, H, W, 3) RGB images; returns the same layout."""
    return np.stack([np.asarray(strong_augment(Image.fromarray(image), num_ops, rng)) for image in images])
