"""Benchmark 2: strong-augmentation images/s, own batched vs the per-image PIL pipeline.

Both sides turn the same real CIFAR-10 images (../shared) into normalised float batches of 448
(the paper's unlabeled batch, μ·B = 7·64), measured alternately in one run:
  * own batched: augment_batched.strong_augment (flip/crop + RandAugment + Cutout on a uint8
    tensor batch, the paper's recipe or with --recipe torchssl TorchSSL's choices) + normalize,
    randomness from a torch.Generator, on one torch thread unless --threads says otherwise (the
    per-image side is one thread too: images/s per core);
  * per-image PIL: TorchSSL's own strong transform when its checkout is present (vendor/TorchSSL,
    or $SSL_BENCH_TORCHSSL_DIR): RandAugment(n) + Cutout, flip, reflect crop, ToTensor, Normalize,
    one image at a time as its data loader does, then stacked; otherwise our PIL reference
    (augment.strong_augment_batch), saying so. One process, as one loader worker.

    python benchmarks/augment_throughput.py [--recipe paper|torchssl] [--num-ops N] [--batches 8]
                                            [--batch-size 448] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import time
from typing import Callable

import numpy as np
import torch
from common import SUBSET_DIR

import implementations.torchvision_compat  # noqa: F401  (must precede any torchvision import)
from implementations.torchssl import checkout as vendor
from harness.data import DataError, load_cifar10
from implementations.interface import TrainConfig
from implementations.ledger import TORCHSSL_CHOICES
from implementations.own import augment, augment_batched


def torchssl_strong_transform(num_ops: int) -> tuple[Callable | None, str]:
    """TorchSSL's CIFAR strong transform built from its checkout, or None and why not."""
    try:
        info = vendor.verify_checkout()
    except vendor.VendorError as error:
        return None, str(error)
    # Its randaugment module imports only PIL, numpy and torch: load it by path, under a private name,
    # so TorchSSL's top-level package names (datasets, models, utils) never enter this process.
    path = info.path / "datasets" / "augmentation" / "randaugment.py"
    spec = importlib.util.spec_from_file_location("_torchssl_randaugment", path)
    randaugment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(randaugment)
    from torchvision import transforms

    # TorchSSL datasets/ssl_dataset.py get_transform(train=True) for CIFAR-10, with RandAugment(n, 5)
    # inserted first as its BasicDataset does for the strong view.
    transform = transforms.Compose([
        randaugment.RandAugment(num_ops, 5),
        transforms.RandomHorizontalFlip(),
        transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
        transforms.ToTensor(),
        transforms.Normalize([x / 255 for x in [125.3, 123.0, 113.9]], [x / 255 for x in [63.0, 62.1, 66.7]]),
    ])
    return transform, f"TorchSSL's RandAugment({num_ops}, 5) + Cutout pipeline ({info.path}, commit {info.commit[:10]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=("paper", "torchssl"), default="paper",
                        help="own's augmentation recipe: the paper's choices or TorchSSL's (implementations/ledger.py)")
    parser.add_argument("--num-ops", type=int, default=None,
                        help="RandAugment ops per image, the same on both sides (default: the recipe's, "
                             "paper 2, TorchSSL 3)")
    parser.add_argument("--batches", type=int, default=8, help="measured batches per side")
    parser.add_argument("--batch-size", type=int, default=7 * 64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the batched side (default 1: one core each, like for like)")
    arguments = parser.parse_args()
    config = TrainConfig() if arguments.recipe == "paper" else TrainConfig().replace(**TORCHSSL_CHOICES)
    if arguments.num_ops is not None:
        config = config.replace(randaugment_ops=arguments.num_ops)
    recipe = augment.AugmentationRecipe.from_config(config)
    batch_size, num_ops = arguments.batch_size, recipe.num_ops
    torch.set_num_threads(arguments.threads)

    try:
        train_images = load_cifar10(SUBSET_DIR).train_images  # uint8 (N, 32, 32, 3)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    batches_hwc = [train_images[np.arange(i * batch_size, (i + 1) * batch_size) % len(train_images)]
                   for i in range(arguments.batches + 1)]  # the first batch of each side is a warm-up
    batches_nchw = [torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous() for batch in batches_hwc]

    torchssl_transform, pil_source = torchssl_strong_transform(num_ops)
    if torchssl_transform is None:
        reference_random = random.Random(0)
        pil_source = f"our PIL reference (augment.strong_augment), TorchSSL not used: {pil_source}"

        def per_image_pil(batch_hwc: np.ndarray) -> torch.Tensor:
            augmented = augment.strong_augment_batch(batch_hwc, recipe, reference_random)
            return augment_batched.normalize(torch.from_numpy(augmented).permute(0, 3, 1, 2), recipe.normalization)
    else:
        from PIL import Image

        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)

        def per_image_pil(batch_hwc: np.ndarray) -> torch.Tensor:
            return torch.stack([torchssl_transform(Image.fromarray(image)) for image in batch_hwc])

    generator = torch.Generator().manual_seed(0)

    def batched(batch_nchw: torch.Tensor) -> torch.Tensor:
        return augment_batched.normalize(augment_batched.strong_augment(batch_nchw, recipe, generator),
                                         recipe.normalization)

    # The sides alternate batch by batch, so a change in machine load hits both; the median batch time of
    # each side gives its rate (robust to a load spike during one batch).
    seconds: dict[str, list[float]] = {"batched": [], "pil": []}
    for index, (batch_hwc, batch_nchw) in enumerate(zip(batches_hwc, batches_nchw)):
        for side, run in (("pil", lambda: per_image_pil(batch_hwc)), ("batched", lambda: batched(batch_nchw))):
            started = time.perf_counter()
            output = run()
            elapsed = time.perf_counter() - started
            assert output.shape == (batch_size, 3, 32, 32) and output.dtype == torch.float32
            if index > 0:
                seconds[side].append(elapsed)

    batched_rate = batch_size / statistics.median(seconds["batched"])
    pil_rate = batch_size / statistics.median(seconds["pil"])
    print(f"setting: {arguments.batches} batches of {batch_size} real CIFAR-10 images per side, {num_ops} RandAugment "
          f"ops + Cutout (own: {arguments.recipe} recipe), uint8 -> normalised float32, CPU; batched side on "
          f"{torch.get_num_threads()} torch thread(s), per-image side on one; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"per-image PIL side: {pil_source}")
    print(f"strong augmentation: batched {batched_rate:.0f} img/s vs per-image PIL {pil_rate:.0f} img/s "
          f"-> ratio {batched_rate / pil_rate:.1f}x")


if __name__ == "__main__":
    main()
