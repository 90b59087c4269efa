"""Training batches: the labeled batch and the unlabeled batch, augmented weakly and strongly.

The training set lives on the training device as uint8 (150 MB for CIFAR-10); batches are
indexed there and augmented as whole batches, with every random draw taken from one
`torch.Generator` on that device (airbench-style: no loader workers, no per-image Python).
`augmentation="pil"` keeps the per-image PIL reference path, drawing from a `random.Random`.
Both sample with replacement, as TorchSSL's RandomSampler does, and both follow the config's augmentation
recipe (the paper's choices or TorchSSL's, augment.AugmentationRecipe), normalisation included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from implementations.interface import ImageData, TrainConfig
from implementations.own import augment, augment_batched
from implementations.own.methods import own_method


@dataclass
class Batch:
    labeled_images: torch.Tensor  # normalised float, weakly augmented
    labels: torch.Tensor
    unlabeled_views: tuple[torch.Tensor, ...]  # the unlabeled batch as the method's VIEWS (empty: none)
    unlabeled_true_labels: torch.Tensor | None  # hidden from training; only for pseudo-label accuracy
    unlabeled_indices: torch.Tensor | None = None  # of the unlabeled images in the training set

    @property
    def weak_images(self) -> torch.Tensor | None:
        return self.unlabeled_views[0] if self.unlabeled_views else None

    @property
    def strong_images(self) -> torch.Tensor | None:  # FixMatch's second view
        return self.unlabeled_views[1] if len(self.unlabeled_views) > 1 else None


class TrainingBatches:
    def __init__(self, data: ImageData, labeled_indices: np.ndarray, config: TrainConfig, device: torch.device):
        self.config = config
        self.recipe = augment.AugmentationRecipe.from_config(config)
        self.device = device
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.train_images = torch.from_numpy(data.train_images).to(device).permute(0, 3, 1, 2).contiguous()
        self.train_labels = torch.from_numpy(data.train_labels).to(device)
        self.labeled_indices = torch.tensor(np.asarray(labeled_indices), dtype=torch.int64, device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(config.seed)
        self.pil_random = random.Random(config.seed)
        self.host_images = data.train_images  # HWC uint8, for the PIL path

    def next(self) -> Batch:
        config = self.config
        picks = torch.randint(len(self.labeled_indices), (config.labeled_batch_size,),
                              generator=self.generator, device=self.device)
        labeled = self.labeled_indices[picks]
        labeled_images = self._augment(self._gather(labeled), strong=False)
        views = own_method(config.algorithm).VIEWS
        if not views:
            return Batch(labeled_images, self.train_labels[labeled], (), None)
        unlabeled = torch.randint(len(self.train_images), (config.unlabeled_batch_size,),
                                  generator=self.generator, device=self.device)
        unlabeled_images = self._gather(unlabeled)  # once, for every view
        return Batch(
            labeled_images,
            self.train_labels[labeled],
            tuple(self._augment(unlabeled_images, strong=view == "strong") for view in views),
            self.train_labels[unlabeled],
            unlabeled,
        )

    def _gather(self, indices: torch.Tensor) -> torch.Tensor | np.ndarray:
        """uint8 images: NCHW on the device, or NHWC on the host for the PIL path."""
        if self.config.augmentation == "pil":
            return self.host_images[indices.cpu().numpy()]
        return self.train_images[indices]

    def _augment(self, images: torch.Tensor | np.ndarray, strong: bool) -> torch.Tensor:
        if self.config.augmentation == "pil":
            images = self._augment_per_image(images, strong)
        elif strong:
            images = augment_batched.strong_augment(images, self.recipe, self.generator,
                                                    compiled=self.config.compile_augmentation)
        else:
            images = augment_batched.weak_augment(images, self.generator, compiled=self.config.compile_augmentation)
        normalised = augment_batched.normalize(images, self.recipe.normalization)
        return normalised.contiguous(memory_format=self.memory_format)

    def _augment_per_image(self, images: np.ndarray, strong: bool) -> torch.Tensor:
        if strong:
            images = augment.strong_augment_batch(images, self.recipe, self.pil_random)
        else:
            images = augment.weak_augment_batch(images, self.pil_random)
        batch = torch.from_numpy(images).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "pil_random": self.pil_random.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.pil_random.setstate(state["pil_random"])
