import numpy as np
import pytest
import torch

from implementations import interface
from implementations.own.evaluate import classification_metrics

CLASSES = ("a", "b", "c")


def test_metrics_of_hand_built_predictions():
    # predictions: a→a, a→b, b→b, c→c, c→a ; second choice of every row is class c, then the rest
    logits = torch.tensor([
        [3.0, 1.0, 2.0],
        [1.0, 3.0, 2.0],
        [1.0, 3.0, 2.0],
        [1.0, 2.0, 3.0],
        [3.0, 1.0, 2.0],
    ])
    labels = torch.tensor([0, 0, 1, 2, 2])
    metrics, matrix = classification_metrics(logits, labels, CLASSES)

    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert metrics[interface.EVAL_TOP1] == pytest.approx(3 / 5)
    assert metrics[interface.EVAL_CLASS_ACCURACY_PREFIX + "a"] == pytest.approx(1 / 2)
    assert metrics[interface.EVAL_CLASS_ACCURACY_PREFIX + "b"] == pytest.approx(1.0)
    assert metrics[interface.EVAL_CLASS_ACCURACY_PREFIX + "c"] == pytest.approx(1 / 2)
    # per class precision: a 1/2, b 1/2, c 1/1 ; recall: 1/2, 1, 1/2
    assert metrics[interface.EVAL_PRECISION] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert metrics[interface.EVAL_RECALL] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    f1 = [2 * p * r / (p + r) for p, r in [(0.5, 0.5), (0.5, 1.0), (1.0, 0.5)]]
    assert metrics[interface.EVAL_F1] == pytest.approx(np.mean(f1))
    assert metrics[interface.EVAL_LOSS] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())


def test_top5_counts_a_hit_anywhere_in_the_five_best_classes():
    logits = torch.arange(10.0).repeat(2, 1)  # ranking 9, 8, 7, 6, 5, ...
    metrics, _ = classification_metrics(logits, torch.tensor([5, 4]), tuple("abcdefghij"))
    assert metrics[interface.EVAL_TOP1] == 0.0
    assert metrics[interface.EVAL_TOP5] == 0.5


def test_auc_is_one_for_a_perfect_ranking_and_absent_when_a_class_has_no_image():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    perfect = torch.nn.functional.one_hot(labels, 3).float() * 5
    metrics, _ = classification_metrics(perfect, labels, CLASSES)
    assert metrics[interface.EVAL_AUC] == pytest.approx(1.0)
    metrics, _ = classification_metrics(perfect[:2], labels[:2], CLASSES)
    assert interface.EVAL_AUC not in metrics
