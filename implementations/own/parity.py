"""Own's side of `bench parity`: K steps of `OwnTraining` on fixed batches, every intermediate recorded.

The batches are drawn and augmented once, by own's training batches (the config's recipe), and then used as
fixed tensors by both implementations; augmentation randomness is not part of the check. The trace has the
same layout as TorchSSL's (implementations/torchssl/parity_child.py), tensor lists in the model's
registration order, which is the same in both WRNs.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from implementations.interface import ImageData, TrainConfig
from implementations.own.batches import Batch, TrainingBatches
from implementations.own.trainer import OwnTraining, build_model

CPU = torch.device("cpu")


def fixed_batches(data: ImageData, labeled_indices: np.ndarray, config: TrainConfig, steps: int) -> list[Batch]:
    batches = TrainingBatches(data, labeled_indices, config, CPU)
    return [batches.next() for _ in range(steps)]


def threshold_between_confidences(config: TrainConfig, num_classes: int, batch: Batch) -> float:
    """A confidence threshold that keeps about half of the first batch's pseudo-labels, midway between two
    confidences of the initial model (so no confidence lies near it): at the paper's 0.95 an untrained
    network keeps none, and the masked part of the loss would go unchecked."""
    torch.manual_seed(config.seed)
    model = build_model(config, num_classes)  # the same initial weights OwnTraining will build
    with torch.no_grad():
        weak_logits = copy.deepcopy(model).train()(batch.weak_images.contiguous())
    confidences = torch.softmax(weak_logits, dim=-1).max(dim=-1).values.sort().values
    middle = confidences[len(confidences) // 4: 3 * len(confidences) // 4 + 1]
    gaps = middle[1:] - middle[:-1]
    widest = int(gaps.argmax())
    return float((middle[widest] + middle[widest + 1]) / 2)


def trace(config: TrainConfig, num_classes: int, batches: list[Batch]) -> dict:
    """The initial weights (state_dict order) and, after each step, what parity compares."""
    torch.manual_seed(config.seed)
    training = OwnTraining(config, num_classes, unlabeled_images=0, device=CPU)  # FixMatch keeps no per-image state
    model = training.model
    state = model.state_dict()
    recorded = {"state_names": list(state), "initialisation": [tensor.detach().clone() for tensor in state.values()],
                "steps": []}
    for batch in batches:
        loss, learning_rate = training.step(batch)
        recorded["steps"].append({
            "logits": loss.logits.detach().float().clone(),
            "supervised_loss": loss.supervised.detach().clone(),
            "unsupervised_loss": loss.unsupervised.detach().clone(),
            "total_loss": loss.total.detach().clone(),
            "mask": loss.mask.detach().clone(),
            "pseudo_labels": loss.pseudo_labels.detach().clone(),
            "learning_rate": learning_rate,
            "gradients": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
            "parameters": [p.detach().clone() for p in model.parameters()],
            "ema_parameters": [p.detach().clone() for p in training.ema.module.parameters()],
            "buffers": [buffer.detach().clone() for buffer in model.buffers()],
        })
    return recorded


def torchssl_inputs(batches: list[Batch], data: ImageData, eval_images_per_class: int, normalization: str) -> dict:
    """The fixed batches as TorchSSL's loops take them (contiguous NCHW floats), and a small evaluation batch
    of test images with every class in it (TorchSSL's evaluation computes a one-vs-one AUC)."""
    from implementations.own.augment_batched import normalize

    chosen = np.concatenate([np.flatnonzero(data.test_labels == label)[:eval_images_per_class]
                             for label in range(data.num_classes)])
    test = torch.from_numpy(data.test_images[chosen]).permute(0, 3, 1, 2).contiguous()
    return {
        "steps": [{"labeled_images": batch.labeled_images.contiguous(), "labels": batch.labels,
                   "weak_images": batch.weak_images.contiguous(), "strong_images": batch.strong_images.contiguous()}
                  for batch in batches],
        "eval_images": normalize(test, normalization).contiguous(),
        "eval_labels": torch.from_numpy(data.test_labels[chosen]),
    }
