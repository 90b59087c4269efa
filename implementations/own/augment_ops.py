"""RandAugment's fourteen ops on whole uint8 batches (N, 3, H, W) on the training device, each image at its own
magnitude, and one round of them (every image applies the op it drew); augment_batched.py draws the ops and
builds the two augmentations from them.

The arithmetic follows Pillow 13 step by step (blend truncation, the ITU-R 601 "L" conversion, SMOOTH's
rounding, autocontrast's and equalize's tables, the 16.16 fixed point of rotations and shears), so every
op gives Pillow's pixels exactly; tests/test_augment_batched.py checks it op by op.
"""

from __future__ import annotations

import math

import torch

from implementations.own.augment import OP_NAMES, PAPER_RECIPE

OP_INDEX = {name: index for index, name in enumerate(OP_NAMES)}


def per_image(values: torch.Tensor, dimensions: int = 4) -> torch.Tensor:
    """(N,) -> (N, 1, ...) for broadcasting against (N, ...) tensors of `dimensions` dimensions."""
    return values.reshape(-1, *([1] * (dimensions - 1)))


# ---------------------------------------------------------------- colour ops: lookup tables and blends
def _values(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H·W) int64 pixel values: the index for table lookups and histograms."""
    return images.reshape(images.shape[0], images.shape[1], -1).long()


def _lookup(tables: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """out[n, c, p] = tables[n, c, values[n, c, p]]; tables (N or 1, 1 or C, 256) of integers 0..255."""
    tables = tables.to(torch.uint8).expand(values.shape[0], values.shape[1], 256)
    return tables.gather(2, values).view(shape)


def _identity_tables(device: torch.device) -> torch.Tensor:
    return torch.arange(256, device=device).view(1, 1, 256)


def _blend(degenerate: torch.Tensor, values: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Pillow's Image.blend(degenerate, image, factor): uint8(degenerate + factor·(image − degenerate)).

    float32 and truncated as Pillow computes it; factor 1 returns the image exactly. All arguments are
    float32 and broadcast against `values` (pixels, or 0..255 to build a table).
    """
    return ((values - degenerate) * factors).add_(degenerate).clamp_(0, 255).to(torch.uint8)


def _grey(pixels: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L, (19595 R + 38470 G + 7471 B + 2^15) >> 16, of float32 pixels: (N, 1, H, W).

    Every intermediate is an integer below 2^24, so float32 is exact.
    """
    weighted = pixels[:, 0:1] * 19595 + pixels[:, 1:2] * 38470
    weighted += pixels[:, 2:3] * 7471
    return weighted.add_(32768).mul_(1 / 65536).floor_()


def _mean_grey(grey: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast's degenerate level, int(mean of L + 0.5), per image: (N,)."""
    return (grey.sum(dim=(1, 2, 3)) / (grey.shape[-2] * grey.shape[-1]) + 0.5).floor()


def _smoothed(pixels: torch.Tensor) -> torch.Tensor:
    # Pillow's SMOOTH filter: kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 rounded to nearest, on the
    # interior; the one-pixel border keeps its values. The weighted sum s is an integer and s / 13 is never
    # within float error of a rounding tie, so float32 gives Pillow's integers exactly.
    rows = pixels[:, :, :-2] + pixels[:, :, 1:-1]
    rows += pixels[:, :, 2:]
    weighted = rows[..., :-2] + rows[..., 1:-1]
    weighted += rows[..., 2:]
    weighted.add_(pixels[:, :, 1:-1, 1:-1], alpha=4)
    smoothed = pixels.clone()
    smoothed[:, :, 1:-1, 1:-1] = weighted.mul_(1 / 13).add_(0.5).floor_()
    return smoothed


def _channel_extremes(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest value per image and channel, (N, C, 1) int32 each (reduced in int32: torch.compile's CPU
    code gets the uint8 minimum wrong, at torch 2.13)."""
    flat = images.reshape(images.shape[0], images.shape[1], -1).to(torch.int32)
    return flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)


def _histograms(values: torch.Tensor) -> torch.Tensor:
    """(N, C, 256) counts of each value per image and channel (a fixed-size scatter: bincount's data-sized
    output would make CUDA synchronise)."""
    ones = torch.ones(1, dtype=torch.int32, device=values.device).expand(values.shape)
    counts = torch.zeros((values.shape[0], values.shape[1], 256), dtype=torch.int32, device=values.device)
    return counts.scatter_add_(2, values, ones)


def _autocontrast_tables(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    # ImageOps.autocontrast: per channel, int(value·scale + offset) stretches [low, high] to [0, 255], in
    # double as Pillow computes it; the identity when the channel is flat.
    low, high = low.double(), high.double()
    # full_like(255) / x, not 255.0 / x: torch computes scalar / tensor as 255.0 · (1 / x), one rounding more.
    scale = torch.full_like(high, 255.0) / (high - low).clamp(min=1)
    values = torch.arange(256, dtype=torch.float64, device=low.device).view(1, 1, 256)
    stretched = (values * scale + (-low * scale)).trunc().clamp(0, 255).long()
    return torch.where(high > low, stretched, values.long())


def _equalize_tables(histograms: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    # ImageOps.equalize: step = (pixels − count of the highest occurring value) // 255,
    # table[v] = (step // 2 + number of pixels below v) // step; the identity when step is 0.
    count_of_highest = histograms.gather(2, high.long())
    step = torch.div(histograms.sum(dim=2, keepdim=True) - count_of_highest, 255, rounding_mode="floor")
    below = histograms.cumsum(dim=2) - histograms
    # Float division then floor is exact: the quotient of these integers is at least 1/step from the next
    # integer, and step ≤ pixels/255 keeps that far above float32's rounding error for such images.
    numerator = (torch.div(step, 2, rounding_mode="floor") + below).to(torch.float32)
    table = (numerator / step.clamp(min=1).to(torch.float32)).floor_().clamp_(max=255).long()
    return torch.where(step > 0, table, _identity_tables(histograms.device))


def _posterize_masks(bits: torch.Tensor) -> torch.Tensor:
    dropped_bits = 8 - bits.long()
    return ((255 >> dropped_bits) << dropped_bits).to(torch.uint8)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    return _lookup(_autocontrast_tables(*_channel_extremes(images)), _values(images), images.shape)


def equalize(images: torch.Tensor) -> torch.Tensor:
    values = _values(images)
    return _lookup(_equalize_tables(_histograms(values), _channel_extremes(images)[1]), values, images.shape)


def identity(images: torch.Tensor) -> torch.Tensor:
    return images


def brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    # ImageEnhance.Brightness blends with black.
    return _blend(torch.zeros((), device=images.device), images.to(torch.float32), per_image(factors.float()))


def contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    # ImageEnhance.Contrast blends with the image's mean grey level.
    pixels = images.to(torch.float32)
    return _blend(per_image(_mean_grey(_grey(pixels))), pixels, per_image(factors.float()))


def color(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    # ImageEnhance.Color blends with the grey (L) version of the image.
    pixels = images.to(torch.float32)
    return _blend(_grey(pixels), pixels, per_image(factors.float()))


def sharpness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    # ImageEnhance.Sharpness blends with the SMOOTH-filtered image.
    pixels = images.to(torch.float32)
    return _blend(_smoothed(pixels), pixels, per_image(factors.float()))


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    return images & per_image(_posterize_masks(bits), images.dim())


def solarize(images: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    return torch.where(images < per_image(thresholds, images.dim()), images, 255 - images)


# ---------------------------------------------------------------- geometric ops: nearest-neighbour warps
# A warp is given by Pillow's affine coefficients (a, b, c, d, e, f) per image, (N, 2, 3) float64: the
# output pixel centre (x + 0.5, y + 0.5) reads the input point (a·x' + b·y' + c, d·x' + e·y' + f), and
# the input pixel is its floor; outside the image the output is the grey level `fill`.
def _affine_matrices(a, b, c, d, e, f) -> torch.Tensor:
    return torch.stack([torch.stack([a, b, c], dim=-1), torch.stack([d, e, f], dim=-1)], dim=-2)


def _rotation_matrices(degrees: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # Image.rotate: counter-clockwise about (width / 2, height / 2), coefficients composed as Pillow does
    # (it also rounds cos and sin to 15 decimals, which moves nothing at this image size).
    radians = -degrees.to(torch.float64) * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    center_x, center_y = width / 2, height / 2
    return _affine_matrices(cos, sin, (cos * -center_x + sin * -center_y) + center_x,
                            -sin, cos, (-sin * -center_x + cos * -center_y) + center_y)


def _shear_matrices(shears: torch.Tensor, axis: str) -> torch.Tensor:
    shears = shears.to(torch.float64)
    one, zero = torch.ones_like(shears), torch.zeros_like(shears)
    if axis == "x":
        return _affine_matrices(one, shears, zero, zero, one, zero)
    return _affine_matrices(one, zero, zero, shears, one, zero)


def _translation_matrices(fractions: torch.Tensor, axis: str, size: int) -> torch.Tensor:
    pixels = fractions.to(torch.float64) * size
    one, zero = torch.ones_like(pixels), torch.zeros_like(pixels)
    if axis == "x":
        return _affine_matrices(one, zero, pixels, zero, one, zero)
    return _affine_matrices(one, zero, zero, zero, one, pixels)


def _pixel_grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.arange(width, dtype=torch.int32, device=device).view(1, 1, width),
            torch.arange(height, dtype=torch.int32, device=device).view(1, height, 1))


def _rotation_or_shear_sources(matrices: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Input (column, row) per output pixel, (N, 2, H, W) int32, as Pillow computes it when b or d is non-zero:
    in 16.16 fixed point, coefficients rounded to 1/65536 and the pixel-centre offset folded into c and f."""
    def fixed(values: torch.Tensor) -> torch.Tensor:
        return (values * 65536.0 + 0.5).floor().to(torch.int32)

    linear = fixed(matrices[:, :, :2])  # (N, 2, 2): (a, b), (d, e)
    start = fixed(matrices[:, :, 2] + 0.5 * (matrices[:, :, 0] + matrices[:, :, 1]))  # (N, 2)
    xs, ys = _pixel_grid(height, width, matrices.device)
    sources = (start[:, :, None, None] + linear[:, :, 0, None, None] * xs.unsqueeze(1)
               + linear[:, :, 1, None, None] * ys.unsqueeze(1))
    return sources >> 16  # an arithmetic shift: the floor, also below zero


def _translation_sources(matrices: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Input (column, row) per output pixel, (N, 2, H, W) int32, for matrices without rotation or shear part
    and a = e = 1 (translations): Pillow evaluates them in double, floor(x + 0.5 + c) = x + floor(c + 0.5)."""
    shifts = (matrices[:, :, 2] + 0.5).floor().to(torch.int32)  # (N, 2)
    xs, ys = _pixel_grid(height, width, matrices.device)
    columns = (xs + shifts[:, 0, None, None]).expand(-1, height, width)
    rows = (ys + shifts[:, 1, None, None]).expand(-1, height, width)
    return torch.stack([columns, rows], dim=1)


def _warp(images: torch.Tensor, sources: torch.Tensor, fill: int) -> torch.Tensor:
    """out[n, :, y, x] = images[n, :, row, column] at sources[n, :, y, x] = (column, row), grey `fill` outside."""
    batch, channels, height, width = images.shape
    columns, rows = sources[:, 0], sources[:, 1]
    inside = ((columns | rows) >= 0) & (columns < width) & (rows < height)
    # Pixels from outside read one extra pixel of fill colour appended to every image.
    flat_sources = torch.where(inside, rows * width + columns, height * width).view(batch, 1, height * width)
    fill_pixels = images.new_full((batch, channels, 1), fill)  # a fill on the device, no copy from the host
    padded = torch.cat([images.reshape(batch, channels, -1), fill_pixels], dim=2)
    return padded.gather(2, flat_sources.long().expand(batch, channels, -1)).view(images.shape)


def rotate(images: torch.Tensor, degrees: torch.Tensor, fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    height, width = images.shape[-2:]
    return _warp(images, _rotation_or_shear_sources(_rotation_matrices(degrees, height, width), height, width), fill)


def shear_x(images: torch.Tensor, shears: torch.Tensor, fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    return _warp(images, _rotation_or_shear_sources(_shear_matrices(shears, "x"), *images.shape[-2:]), fill)


def shear_y(images: torch.Tensor, shears: torch.Tensor, fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    return _warp(images, _rotation_or_shear_sources(_shear_matrices(shears, "y"), *images.shape[-2:]), fill)


def translate_x(images: torch.Tensor, fractions: torch.Tensor, fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    height, width = images.shape[-2:]
    return _warp(images, _translation_sources(_translation_matrices(fractions, "x", width), height, width), fill)


def translate_y(images: torch.Tensor, fractions: torch.Tensor, fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    height, width = images.shape[-2:]
    return _warp(images, _translation_sources(_translation_matrices(fractions, "y", height), height, width), fill)


# ---------------------------------------------------------------- RandAugment
# Each op on a batch, at per-image magnitudes (N,); the same names, order and ranges as augment.py. The
# geometric ops also take the grey level of the pixels they uncover.
COLOUR_OP_FUNCTIONS = {
    "AutoContrast": lambda images, _: autocontrast(images),
    "Brightness": brightness,
    "Color": color,
    "Contrast": contrast,
    "Equalize": lambda images, _: equalize(images),
    "Identity": lambda images, _: identity(images),
    "Posterize": posterize,
    "Sharpness": sharpness,
    "Solarize": solarize,
}
GEOMETRIC_OP_FUNCTIONS = {
    "Rotate": rotate,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
}
assert set(COLOUR_OP_FUNCTIONS) | set(GEOMETRIC_OP_FUNCTIONS) == set(OP_NAMES)


def apply_op(images: torch.Tensor, name: str, magnitudes: torch.Tensor,
             geometric_fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    """One RandAugment op on every image, at per-image magnitudes (N,)."""
    if name in GEOMETRIC_OP_FUNCTIONS:
        return GEOMETRIC_OP_FUNCTIONS[name](images, magnitudes, geometric_fill)
    return COLOUR_OP_FUNCTIONS[name](images, magnitudes)


def apply_ops(images: torch.Tensor, op_indices: torch.Tensor, magnitudes: torch.Tensor,
              geometric_fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    """One RandAugment round: image n gets op OP_NAMES[op_indices[n]] at magnitudes[n].

    Grouped by op when the draws are on the host (CPU), on the whole batch without reading them otherwise.
    """
    if op_indices.device.type == "cpu":
        return apply_ops_by_group(images, op_indices, magnitudes, geometric_fill)
    return apply_ops_without_sync(images, op_indices, magnitudes, geometric_fill)


def apply_ops_by_group(images: torch.Tensor, op_indices: torch.Tensor, magnitudes: torch.Tensor,
                       geometric_fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    """`apply_ops` running each op once, on the images that drew it (reads the draws on the host)."""
    order = torch.argsort(op_indices, stable=True)
    group_sizes = torch.bincount(op_indices, minlength=len(OP_NAMES)).tolist()
    augmented = torch.empty_like(images)  # every image drew exactly one op: every image is written
    for name, members in zip(OP_NAMES, torch.split(order, group_sizes)):
        if len(members) > 0:
            members = members.to(images.device)
            augmented[members] = apply_op(images[members], name, magnitudes[members], geometric_fill)
    return augmented


def apply_ops_without_sync(images: torch.Tensor, op_indices: torch.Tensor, magnitudes: torch.Tensor,
                           geometric_fill: int = PAPER_RECIPE.geometric_fill) -> torch.Tensor:
    """`apply_ops` that never reads a tensor value on the host: three op families on the whole batch."""
    batch, _, height, width = images.shape
    magnitudes = magnitudes.to(torch.float32)

    def drew(name: str, dimensions: int = 3) -> torch.Tensor:
        return per_image(op_indices == OP_INDEX[name], dimensions)

    # 1. Per-channel lookup tables; the identity table for images that drew no table op.
    pixels = images.to(torch.float32)
    grey = _grey(pixels)
    low, high = _channel_extremes(images)
    values = _values(images)
    levels = torch.arange(256, dtype=torch.float32, device=images.device).view(1, 1, 256)
    level_bytes = levels.to(torch.uint8).expand(batch, 1, 256)
    table_builders = {  # the same arithmetic as the single-op functions, applied to the levels 0..255
        "AutoContrast": lambda: _autocontrast_tables(low, high),
        "Brightness": lambda: _blend(torch.zeros((), device=images.device), levels, per_image(magnitudes, 3)),
        "Contrast": lambda: _blend(per_image(_mean_grey(grey), 3), levels, per_image(magnitudes, 3)),
        "Equalize": lambda: _equalize_tables(_histograms(values), high),
        "Posterize": lambda: posterize(level_bytes, magnitudes),
        "Solarize": lambda: solarize(level_bytes, magnitudes),
    }
    tables = _identity_tables(images.device)
    for name, build in table_builders.items():
        tables = torch.where(drew(name), build().long(), tables)
    tabled = _lookup(tables, values, images.shape)

    # 2. Blend with a degenerate image; factor 1 for images that drew neither Color nor Sharpness. Images
    # that drew one of them passed step 1 unchanged, so `pixels`, `grey` are still theirs.
    factors = torch.where(drew("Color", 4) | drew("Sharpness", 4), per_image(magnitudes), 1.0)
    degenerate = torch.where(drew("Color", 4), grey, _smoothed(pixels))
    blended = _blend(degenerate, tabled.to(torch.float32), factors)

    # 3. One warp; the identity matrix for images that drew no geometric op.
    matrices = torch.eye(2, 3, dtype=torch.float64, device=images.device).expand(batch, 2, 3)
    matrix_builders = {
        "Rotate": lambda: _rotation_matrices(magnitudes, height, width),
        "ShearX": lambda: _shear_matrices(magnitudes, "x"),
        "ShearY": lambda: _shear_matrices(magnitudes, "y"),
        "TranslateX": lambda: _translation_matrices(magnitudes, "x", width),
        "TranslateY": lambda: _translation_matrices(magnitudes, "y", height),
    }
    for name, build in matrix_builders.items():
        matrices = torch.where(drew(name), build(), matrices)
    rotates_or_shears = drew("Rotate", 4) | drew("ShearX", 4) | drew("ShearY", 4)
    sources = torch.where(rotates_or_shears, _rotation_or_shear_sources(matrices, height, width),
                          _translation_sources(matrices, height, width))
    return _warp(blended, sources, geometric_fill)
