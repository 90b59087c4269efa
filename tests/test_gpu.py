"""What only a GPU can show: own's training loop queues every step without waiting for the device.

Runs wherever CUDA exists (benchmarks/gpu_check.py runs it on a GPU machine); skipped on a CPU with that reason.
"""

from __future__ import annotations

import pytest
import torch

from implementations.interface import TrainConfig, for_algorithm
from implementations.own.batches import TrainingBatches
from implementations.own.methods import OWN_ALGORITHMS
from implementations.own.trainer import OwnTraining
from implementations.training_window import TrainingWindow

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: no GPU visible (the suite hides "
                                "GPUs unless SSL_BENCH_GPU_TESTS=1; benchmarks/gpu_check.py runs these)")

SMALL = TrainConfig(preset="test", iterations=100, labeled_batch_size=8, unlabeled_ratio=2, depth=10, widen_factor=1,
                    device="cuda", precision="bf16")


@pytest.mark.parametrize("algorithm", OWN_ALGORITHMS)
def test_own_training_steps_never_synchronise_with_the_gpu(algorithm):
    from tests.test_own_training import subset, run_inputs

    config = for_algorithm(SMALL, algorithm).replace(threshold=0.3)  # pseudo-labels kept: every branch runs
    data, device = subset(), torch.device("cuda")
    run = run_inputs(config, None)
    training = OwnTraining(config, data.num_classes, len(data.train_images), device)
    batches = TrainingBatches(data, run.labeled_indices, config, device)
    signals = TrainingWindow(data.class_names, device)
    for iteration in range(1, 3):  # allocations, cuDNN's algorithm search and per-device constants first
        batch = batches.next()
        _add(signals, training.step(batch)[0], batch, iteration)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for iteration in range(3, 8):
            batch = batches.next()
            _add(signals, training.step(batch)[0], batch, iteration)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert signals.iterations == 7


def _add(window: TrainingWindow, loss, batch, iteration: int) -> None:
    window.add(iteration, loss.supervised, loss.unsupervised, loss.total, kept=loss.mask,
               pseudo_labels=loss.pseudo_labels, true_labels=batch.unlabeled_true_labels,
               class_thresholds=loss.class_thresholds)
