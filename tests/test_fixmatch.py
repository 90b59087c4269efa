import math

import pytest
import torch
import torch.nn.functional as F

from implementations.own.fixmatch import WeightEMA, build_optimizer, cosine_schedule, fixmatch_loss
from implementations.own.wide_resnet import WideResNet


def _logits_with_confidence(rows: list[tuple[int, float]], num_classes: int = 3) -> torch.Tensor:
    """Logits whose softmax puts probability p on class c for each (c, p) row."""
    probabilities = torch.empty(len(rows), num_classes)
    for i, (cls, p) in enumerate(rows):
        probabilities[i] = (1 - p) / (num_classes - 1)
        probabilities[i, cls] = p
    return probabilities.log()


def test_loss_on_a_hand_built_batch_masks_unconfident_images_and_averages_over_all():
    labeled_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    # weak predictions: confident class 1, unconfident, confident class 2, exactly at τ (kept)
    weak_logits = _logits_with_confidence([(1, 0.99), (0, 0.6), (2, 0.97), (0, 0.95)])
    strong_logits = torch.tensor([[0.0, 3.0, 0.0], [5.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])

    loss = fixmatch_loss(labeled_logits, labels, weak_logits, strong_logits, threshold=0.95, unsupervised_weight=2.0)

    assert loss.pseudo_labels.tolist() == [1, 0, 2, 0]
    assert loss.mask.tolist() == [1.0, 0.0, 1.0, 1.0]
    expected_supervised = F.cross_entropy(labeled_logits, labels)
    per_image = F.cross_entropy(strong_logits, torch.tensor([1, 0, 2, 0]), reduction="none")
    expected_unsupervised = (per_image[0] + per_image[2] + per_image[3]) / 4
    assert torch.allclose(loss.supervised, expected_supervised)
    assert torch.allclose(loss.unsupervised, expected_unsupervised)
    assert torch.allclose(loss.total, expected_supervised + 2.0 * expected_unsupervised)


def test_no_gradient_flows_through_the_pseudo_labels():
    weak_logits = _logits_with_confidence([(0, 0.99), (1, 0.99)]).requires_grad_()
    strong_logits = torch.zeros(2, 3, requires_grad=True)
    loss = fixmatch_loss(torch.zeros(1, 3), torch.tensor([0]), weak_logits, strong_logits, 0.95, 1.0)
    loss.total.backward()
    assert weak_logits.grad is None
    assert strong_logits.grad.abs().sum() > 0


def test_nothing_confident_means_zero_unsupervised_loss():
    weak_logits = torch.zeros(4, 10)  # uniform: max probability 0.1
    loss = fixmatch_loss(torch.zeros(2, 10), torch.tensor([1, 2]), weak_logits, torch.randn(4, 10), 0.95, 1.0)
    assert loss.mask.sum() == 0
    assert loss.unsupervised.item() == 0.0


@pytest.mark.parametrize("k, factor", [(0, 1.0), (500, math.cos(7 * math.pi / 32)), (1000, math.cos(7 * math.pi / 16))])
def test_learning_rate_follows_cos_7_pi_k_over_16_K(k, factor):
    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = torch.optim.SGD([parameter], lr=0.03)
    schedule = cosine_schedule(optimizer, total_iterations=1000)
    for _ in range(k):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.03 * factor, rel=1e-12)


def test_weight_decay_touches_convolution_and_linear_weights_only():
    model = WideResNet(depth=10, widen_factor=1)
    optimizer = build_optimizer(model, 0.03, 0.9, True, 5e-4, torch.device("cpu"))
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(decay_of) == len(list(model.parameters()))
    for name, parameter in model.named_parameters():
        is_weight_matrix = name.endswith("weight") and parameter.ndim > 1  # conv / linear
        assert decay_of[id(parameter)] == (5e-4 if is_weight_matrix else 0.0), name
    norm_and_bias = [n for n, p in model.named_parameters() if p.ndim == 1]
    assert any("bn" in n for n in norm_and_bias) and "classifier.bias" in norm_and_bias
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)


def test_one_ema_update_follows_the_formula_and_copies_batch_norm_statistics():
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=1)
    ema = WeightEMA(model, decay=0.999)
    before = {name: p.detach().clone() for name, p in ema.module.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()
    model(torch.randn(4, 3, 32, 32))  # moves the batch-norm running statistics
    ema.update(model)
    for name, p in model.named_parameters():
        expected = 0.999 * before[name] + 0.001 * p.detach()
        assert torch.allclose(dict(ema.module.named_parameters())[name], expected, atol=1e-7), name
    for (name, ema_buffer), buffer in zip(ema.module.named_buffers(), model.buffers()):
        assert torch.equal(ema_buffer, buffer), name
