import copy

import torch
from torch import nn

from implementations.own.wide_resnet import WideResNet


def test_paper_wrn_28_2_has_1_47_million_parameters():
    model = WideResNet(num_classes=10, depth=28, widen_factor=2)
    parameters = sum(p.numel() for p in model.parameters())
    assert round(parameters / 1e6, 2) == 1.47


def test_outputs_one_logit_per_class_for_cifar_images():
    model = WideResNet(num_classes=10, depth=10, widen_factor=1)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_convolutions_have_no_bias_and_batch_norm_uses_momentum_0_001_and_epsilon_0_001():
    model = WideResNet(depth=16, widen_factor=2)
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convolutions and all(conv.bias is None for conv in convolutions)
    assert norms and all(norm.momentum == 0.001 and norm.eps == 1e-3 for norm in norms)


def test_no_bias_computes_what_the_papers_zero_initialised_biases_compute_and_theirs_stay_zero():
    torch.manual_seed(0)
    with_bias = WideResNet(depth=10, widen_factor=2, conv_bias="zeros")
    without = WideResNet(depth=10, widen_factor=2)
    missing, unexpected = without.load_state_dict(with_bias.state_dict(), strict=False)
    assert not missing and unexpected and all(key.endswith("bias") for key in unexpected)  # the convolution biases
    optimizers = [torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) for model in (with_bias, without)]
    for step in range(3):
        images = torch.randn(8, 3, 32, 32)
        for model, optimizer in zip((with_bias, without), optimizers):
            optimizer.zero_grad()
            model(images).logsumexp(dim=1).mean().backward()
            optimizer.step()
    images = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(with_bias(images), without(images), rtol=1e-4, atol=1e-5)
    biases = [m.bias for m in with_bias.modules() if isinstance(m, nn.Conv2d)]
    assert max(float(bias.detach().abs().max()) for bias in biases) < 1e-6  # zero gradient: they stay (nearly) zero


def test_uniform_biases_keep_pytorchs_default_bound():
    torch.manual_seed(0)
    model = WideResNet(depth=16, widen_factor=2, conv_bias="uniform")
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.bias.abs().max() <= fan_in ** -0.5
        assert conv.bias.std() > 0.25 * fan_in ** -0.5  # U(-b, b) has std b / sqrt(3)


def _first_batch_norm_gradients(width_change_conv_input: str) -> dict[str, torch.Tensor | None]:
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=2, width_change_conv_input=width_change_conv_input)
    model(torch.randn(8, 3, 32, 32)).square().mean().backward()
    return {f"group {g}": model.groups[g][0].bn1.weight.grad for g in range(3)}


def test_raw_width_change_input_feeds_conv1_of_groups_2_and_3_without_their_bn1_as_torchssl_does():
    activated = _first_batch_norm_gradients("activated")
    raw = _first_batch_norm_gradients("raw")
    assert all(gradient is not None for gradient in activated.values())
    assert raw["group 0"] is not None  # the first block activates before its residual either way
    assert raw["group 1"] is None and raw["group 2"] is None


def test_raw_width_change_input_still_moves_the_unused_batch_norm_statistics():
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=2, width_change_conv_input="raw")
    model(torch.randn(8, 3, 32, 32))
    assert not torch.all(model.groups[1][0].bn1.running_mean == 0)


def test_activations_are_leaky_relu_with_slope_0_1():
    model = WideResNet(depth=10, widen_factor=1)
    activations = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert activations and all(isinstance(a, nn.LeakyReLU) and a.negative_slope == 0.1 for a in activations)


def test_depth_must_be_6n_plus_4():
    try:
        WideResNet(depth=27)
    except ValueError as error:
        assert "6n + 4" in str(error)
    else:
        raise AssertionError("depth 27 was accepted")


def test_initialisation_is_seeded_and_batch_norm_starts_at_identity():
    torch.manual_seed(0)
    first = WideResNet(depth=10, widen_factor=1)
    torch.manual_seed(0)
    second = WideResNet(depth=10, widen_factor=1)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.all(first.final_bn.weight == 1) and torch.all(first.final_bn.bias == 0)
    assert torch.all(first.classifier.bias == 0)


def test_in_place_activations_give_the_same_outputs_and_gradients_as_out_of_place_ones():
    torch.manual_seed(0)
    in_place = WideResNet(depth=10, widen_factor=2).to(memory_format=torch.channels_last)
    out_of_place = copy.deepcopy(in_place)
    for module in out_of_place.modules():
        if isinstance(module, nn.LeakyReLU):
            module.inplace = False
    assert any(isinstance(m, nn.LeakyReLU) and m.inplace for m in in_place.modules())
    images = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    outputs = [model(images) for model in (in_place, out_of_place)]
    for output in outputs:
        output.square().mean().backward()
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for a, b in zip(in_place.parameters(), out_of_place.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
