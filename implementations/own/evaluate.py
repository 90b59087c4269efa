"""Test-set metrics of a classifier, from its logits: the same numbers for every implementation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from implementations import interface


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...]
) -> tuple[dict[str, float], np.ndarray]:
    """Top-1/5, macro precision/recall/F1, one-vs-one AUC, loss and per-class accuracy; and the
    confusion matrix (rows = true class, columns = predicted)."""
    logits = logits.float().cpu()
    labels = labels.cpu()
    num_classes = len(class_names)
    loss = F.cross_entropy(logits, labels).item()
    top5 = logits.topk(min(5, num_classes), dim=1).indices
    probabilities = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    true = labels.numpy()
    predicted = top5[:, 0].numpy()
    classes = list(range(num_classes))

    matrix = confusion_matrix(true, predicted, labels=classes)
    precision, recall, f1, _ = precision_recall_fscore_support(
        true, predicted, labels=classes, average="macro", zero_division=0
    )
    metrics = {
        interface.EVAL_TOP1: float((predicted == true).mean()),
        interface.EVAL_TOP5: float((top5 == labels[:, None]).any(dim=1).float().mean()),
        interface.EVAL_PRECISION: float(precision),
        interface.EVAL_RECALL: float(recall),
        interface.EVAL_F1: float(f1),
        interface.EVAL_LOSS: loss,
    }
    if len(np.unique(true)) == num_classes:  # AUC is undefined for a class with no test image
        probabilities /= probabilities.sum(axis=1, keepdims=True)  # exact sum to 1 for sklearn's check
        metrics[interface.EVAL_AUC] = float(roc_auc_score(true, probabilities, multi_class="ovo", labels=classes))
    per_class_total = matrix.sum(axis=1)
    for index, class_name in enumerate(class_names):
        if per_class_total[index]:
            metrics[interface.EVAL_CLASS_ACCURACY_PREFIX + class_name] = float(matrix[index, index] / per_class_total[index])
    return metrics, matrix
