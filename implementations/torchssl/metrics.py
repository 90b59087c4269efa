"""TorchSSL's numbers under our metric names (implementations/interface.py).

Evaluation. TorchSSL's `evaluate` returns, for the EMA model on the test set:

    eval/top-1-acc  -> eval/top1              eval/precision -> eval/precision_macro
    eval/top-5-acc  -> eval/top5              eval/recall    -> eval/recall_macro
    eval/loss       -> eval/loss              eval/F1        -> eval/f1_macro
    eval/AUC        -> eval/auc_ovo

all fractions in [0, 1] like ours. Half of its algorithms (MixMatch, ReMixMatch, Mean Teacher, Π-model, VAT,
fullysupervised) return only the first three; for them the adapter computes the other four from the same
predictions with the sklearn calls TorchSSL's FixMatch makes. Its confusion matrix is only printed (normalised
by row), so the adapter recomputes the count matrix from the same predictions; the per-class accuracy
(`eval/class_accuracy/<class>`) is that matrix's diagonal over its row sums.

Training. TorchSSL logs its training dict only at evaluation iterations, one iteration's values.
The adapter reads the same tensors every iteration from the loop's variables (algorithms.py) and averages
them over our log interval in the window own's loop uses too (training_window.py):

    sup_loss  -> train/supervised_loss         unsup_loss -> train/unsupervised_loss
    total_loss -> train/total_loss             lr (the rate the step used) -> train/lr
    the mask (per image: 1 where a pseudo-label counts) -> train/mask_rate_above_threshold
    its per-class thresholds -> train/class_threshold/<class>, and train/class_mask_rate/<class>

TorchSSL's own `train/mask_ratio` is `1 - mask`, the fraction BELOW the threshold: ours is its
complement (`mask_rate_from_torchssl_mask_ratio`). Pseudo-label accuracy (kept pseudo-labels that
equal the hidden true label), iterations per second and data wait are ours; TorchSSL has no such
entries (its `prefecth_time`/`run_time` are single-iteration timings).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from implementations import interface

EVAL_NAMES = {
    "eval/top-1-acc": interface.EVAL_TOP1,
    "eval/top-5-acc": interface.EVAL_TOP5,
    "eval/precision": interface.EVAL_PRECISION,
    "eval/recall": interface.EVAL_RECALL,
    "eval/F1": interface.EVAL_F1,
    "eval/AUC": interface.EVAL_AUC,
    "eval/loss": interface.EVAL_LOSS,
}


def mask_rate_from_torchssl_mask_ratio(torchssl_mask_ratio: float) -> float:
    """TorchSSL logs the fraction of unlabeled images BELOW the threshold; ours is the fraction kept."""
    return 1.0 - float(torchssl_mask_ratio)


def per_class_accuracy(confusion_counts: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """`eval/class_accuracy/<class>` from a count matrix (rows = true class); classes without test images are left out."""
    counts = np.asarray(confusion_counts)
    totals = counts.sum(axis=1)
    return {interface.EVAL_CLASS_ACCURACY_PREFIX + class_name: float(counts[index, index] / totals[index])
            for index, class_name in enumerate(class_names) if totals[index]}


def eval_metrics(torchssl_eval: Mapping[str, object], confusion_counts: np.ndarray,
                 class_names: tuple[str, ...], scores: tuple[list, list] | None = None) -> dict[str, float]:
    """TorchSSL's evaluation dict (and the count matrix of the same predictions) under our names; what the dict
    lacks is computed from `scores`, the (true labels, softmax outputs) its evaluation scored.
    Keys it adds beyond the evaluation (`eval/best_acc`, `eval/best_it`) are not metrics of one evaluation and are left out."""
    torchssl_eval = {**_missing_scores(torchssl_eval, scores), **torchssl_eval}
    metrics = {ours: float(torchssl_eval[theirs]) for theirs, ours in EVAL_NAMES.items() if theirs in torchssl_eval}
    metrics.update(per_class_accuracy(confusion_counts, class_names))
    return metrics


def _missing_scores(torchssl_eval: Mapping[str, object], scores: tuple[list, list] | None) -> dict[str, float]:
    """eval/precision, recall, F1 and AUC as TorchSSL's FixMatch.evaluate computes them, where `torchssl_eval` has none."""
    if scores is None or "eval/AUC" in torchssl_eval:
        return {}
    import sklearn.metrics

    true_labels, probabilities = scores
    predicted = np.asarray(probabilities).argmax(axis=1)
    return {
        "eval/precision": sklearn.metrics.precision_score(true_labels, predicted, average="macro"),
        "eval/recall": sklearn.metrics.recall_score(true_labels, predicted, average="macro"),
        "eval/F1": sklearn.metrics.f1_score(true_labels, predicted, average="macro"),
        "eval/AUC": sklearn.metrics.roc_auc_score(true_labels, probabilities, multi_class="ovo"),
    }
