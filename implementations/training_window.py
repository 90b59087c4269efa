"""The training signals of one log window, summed on the training device: own's loop and TorchSSL's child add
one iteration at a time and read the means (one host synchronisation) when the window is logged."""

from __future__ import annotations

import torch

from implementations.cadence import TrainingClock
from implementations.interface import NonFiniteLossError, class_signal_metrics, training_signal_metrics


class TrainingWindow:
    """Sums of the per-iteration signals since the last log, and the first iteration whose loss was not finite
    (also on the device: checking it costs no host synchronisation until the next log, evaluation or checkpoint,
    which read it before they report anything).

    Methods with pseudo-labels add per class c how many unlabeled images were pseudo-labelled c and how many of
    those were kept; threshold methods also the threshold in force."""

    # supervised, unsupervised, total loss; kept pseudo-labels; correct kept pseudo-labels
    SIZE = 5

    def __init__(self, class_names: tuple[str, ...], device: torch.device | str, clock: TrainingClock | None = None):
        self.class_names = class_names
        self.sums = torch.zeros(self.SIZE, dtype=torch.float64, device=device)
        # per class: threshold, pseudo-labelled images, kept ones
        self.class_sums = torch.zeros(3, len(class_names), dtype=torch.float64, device=device)
        self.first_non_finite_iteration = torch.zeros((), dtype=torch.int64, device=device)  # 0: none
        self.clock = clock or TrainingClock()
        self.unlabeled_images = 0
        self.threshold_iterations = 0
        self.iterations = 0
        self.data_wait_seconds = 0.0

    def add(self, iteration: int, supervised: torch.Tensor, unsupervised: torch.Tensor, total: torch.Tensor,
            kept: torch.Tensor | None = None, pseudo_labels: torch.Tensor | None = None,
            true_labels: torch.Tensor | None = None, class_thresholds: torch.Tensor | None = None) -> None:
        """One iteration: its losses; with pseudo-labels, `kept` (per unlabeled image: 1 where its pseudo-label
        counts, or its weight), the pseudo-labels and the hidden true labels of those images."""
        device = self.sums.device
        kept_sum = correct = torch.zeros((), dtype=torch.float64, device=device)
        if kept is not None:
            kept = kept.detach().double()
            kept_sum = kept.sum()
            correct = (kept * (pseudo_labels == true_labels)).sum()
            self.unlabeled_images += kept.numel()
            counts = torch.zeros_like(self.class_sums[1:])  # index_add_, unlike bincount, needs no host sync
            self.class_sums[1:] += counts.index_add_(1, pseudo_labels, torch.stack([torch.ones_like(kept), kept]))
        if class_thresholds is not None:
            self.class_sums[0] += class_thresholds.detach().double()
            self.threshold_iterations += 1
        total = total.detach()
        self.sums += torch.stack([supervised.detach().double(), unsupervised.detach().double(), total.double(),
                                  kept_sum, correct])
        first_bad = torch.where(torch.isfinite(total), 0, iteration)
        self.first_non_finite_iteration = torch.where(self.first_non_finite_iteration > 0,
                                                      self.first_non_finite_iteration, first_bad)
        self.iterations += 1

    def raise_if_non_finite(self) -> None:
        iteration = int(self.first_non_finite_iteration)
        if iteration:
            raise NonFiniteLossError(f"the training loss became NaN or infinite at iteration {iteration}; "
                                     "the run is stopped")

    def summarise(self, learning_rate: float) -> dict[str, float]:
        """The means since the last summary (one host synchronisation), then start afresh."""
        values = torch.cat([self.sums, self.class_sums.flatten()]).tolist()
        supervised, unsupervised, total, kept, correct = values[:self.SIZE]
        per_class = values[self.SIZE:]
        classes = len(self.class_names)
        thresholds, pseudo_labelled, kept_per_class = (per_class[row * classes:(row + 1) * classes] for row in range(3))
        metrics = training_signal_metrics(
            (supervised, unsupervised, total, kept, self.unlabeled_images, correct),
            self.iterations, learning_rate, self.clock.seconds(), self.data_wait_seconds,
        )
        metrics.update(class_signal_metrics(thresholds, self.threshold_iterations, pseudo_labelled, kept_per_class,
                                            self.class_names))
        self.sums.zero_()
        self.class_sums.zero_()
        self.unlabeled_images = self.threshold_iterations = self.iterations = 0
        self.data_wait_seconds = 0.0
        self.clock.restart()
        return metrics

    def state_dict(self) -> dict:
        """The window so far (a checkpoint may fall inside a log window): a resumed run logs the same means."""
        return {"sums": self.sums.clone(), "class_sums": self.class_sums.clone(),
                "unlabeled_images": self.unlabeled_images, "threshold_iterations": self.threshold_iterations,
                "iterations": self.iterations, "data_wait_seconds": self.data_wait_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        if "class_sums" in state:  # checkpoints written before the per-class signals have none
            self.class_sums.copy_(state["class_sums"])
            self.threshold_iterations = state["threshold_iterations"]
        self.unlabeled_images = state["unlabeled_images"]
        self.iterations = state["iterations"]
        self.data_wait_seconds = state["data_wait_seconds"]
