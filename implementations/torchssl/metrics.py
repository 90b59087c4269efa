"""TorchSSL's numbers under our metric names (implementations/interface.py).

Evaluation. TorchSSL's `FixMatch.evaluate` returns, for the EMA model on the test set:

    eval/top-1-acc  -> eval/top1              eval/precision -> eval/precision_macro
    eval/top-5-acc  -> eval/top5              eval/recall    -> eval/recall_macro
    eval/loss       -> eval/loss              eval/F1        -> eval/f1_macro
    eval/AUC        -> eval/auc_ovo

all fractions in [0, 1] like ours. Its confusion matrix is only printed (normalised by row), so the
adapter recomputes the count matrix from the same predictions; the per-class accuracy
(`eval/class_accuracy/<class>`) is that matrix's diagonal over its row sums.

Training. TorchSSL logs its training dict only at evaluation iterations, one iteration's values.
The adapter takes the same tensors every iteration (the supervised loss from `ce_loss`, the
unsupervised loss, mask and pseudo-labels from `consistency_loss`) and averages them over our log
interval, as the own implementation does:

    sup_loss  -> train/supervised_loss         unsup_loss -> train/unsupervised_loss
    total_loss = sup_loss + λ·unsup_loss -> train/total_loss
    mask (fraction of confidences ≥ τ) -> train/mask_rate_above_threshold
    lr (the rate the step used) -> train/lr

TorchSSL's own `train/mask_ratio` is `1 - mask`, the fraction BELOW the threshold: ours is its
complement (`mask_rate_from_torchssl_mask_ratio`). Pseudo-label accuracy (kept pseudo-labels that
equal the hidden true label), iterations per second and data wait are ours; TorchSSL has no such
entries (its `prefecth_time`/`run_time` are single-iteration timings).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from implementations import interface as names
from implementations.interface import training_signal_metrics

EVAL_NAMES = {
    "eval/top-1-acc": names.EVAL_TOP1,
    "eval/top-5-acc": names.EVAL_TOP5,
    "eval/precision": names.EVAL_PRECISION,
    "eval/recall": names.EVAL_RECALL,
    "eval/F1": names.EVAL_F1,
    "eval/AUC": names.EVAL_AUC,
    "eval/loss": names.EVAL_LOSS,
}


def mask_rate_from_torchssl_mask_ratio(torchssl_mask_ratio: float) -> float:
    """TorchSSL logs the fraction of unlabeled images BELOW the threshold; ours is the fraction kept."""
    return 1.0 - float(torchssl_mask_ratio)


def per_class_accuracy(confusion_counts: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """`eval/class_accuracy/<class>` from a count matrix (rows = true class); classes without test images are left out."""
    counts = np.asarray(confusion_counts)
    totals = counts.sum(axis=1)
    return {names.EVAL_CLASS_ACCURACY_PREFIX + class_name: float(counts[index, index] / totals[index])
            for index, class_name in enumerate(class_names) if totals[index]}


def eval_metrics(torchssl_eval: Mapping[str, object], confusion_counts: np.ndarray,
                 class_names: tuple[str, ...]) -> dict[str, float]:
    """TorchSSL's evaluation dict (and the count matrix of the same predictions) under our names.
    Keys it adds beyond the evaluation (`eval/best_acc`, `eval/best_it`) are not metrics of one evaluation and are left out."""
    metrics = {ours: float(torchssl_eval[theirs]) for theirs, ours in EVAL_NAMES.items() if theirs in torchssl_eval}
    metrics.update(per_class_accuracy(confusion_counts, class_names))
    return metrics


class TrainingWindow:
    """Sums of the per-iteration training signals since the last log, kept on the training device."""

    # supervised, unsupervised, total loss; kept pseudo-labels; unlabeled images; correct kept pseudo-labels
    SIZE = 6

    def __init__(self, device: torch.device | str = "cpu"):
        self.sums = torch.zeros(self.SIZE, dtype=torch.float64, device=device)
        self.iterations = 0
        self.data_wait_seconds = 0.0
        self.training_seconds = 0.0
        self.learning_rate = float("nan")

    def add(self, supervised_loss: torch.Tensor, unsupervised_loss: torch.Tensor, unsupervised_weight: float,
            kept: torch.Tensor, pseudo_labels: torch.Tensor, true_labels: torch.Tensor, learning_rate: float,
            data_wait_seconds: float, training_seconds: float) -> None:
        """One iteration: `kept` is TorchSSL's per-image mask (confidence ≥ τ), `pseudo_labels` its argmax labels."""
        kept = kept.detach().to(self.sums.device).double()
        correct = (pseudo_labels.detach().to(self.sums.device) == true_labels.to(self.sums.device)).double()
        supervised = supervised_loss.detach().to(self.sums.device).double()
        unsupervised = unsupervised_loss.detach().to(self.sums.device).double()
        self.sums += torch.stack([
            supervised, unsupervised, supervised + unsupervised_weight * unsupervised,
            kept.sum(), torch.tensor(float(kept.numel()), dtype=torch.float64, device=self.sums.device),
            (kept * correct).sum(),
        ])
        self.iterations += 1
        self.learning_rate = float(learning_rate)
        self.data_wait_seconds += data_wait_seconds
        self.training_seconds += training_seconds

    def summarise(self) -> dict[str, float]:
        """The means since the last summary (one host synchronisation), then start afresh."""
        metrics = training_signal_metrics(self.sums.tolist(), self.iterations, self.learning_rate,
                                          self.training_seconds, self.data_wait_seconds)
        self.sums.zero_()
        self.iterations = 0
        self.data_wait_seconds = 0.0
        self.training_seconds = 0.0
        return metrics
