"""Wide ResNet (Zagoruyko & Komodakis 2016) as the FixMatch paper uses it: WRN-28-2 for CIFAR-10.

Pre-activation residual blocks, LeakyReLU(0.1), batch norm with momentum 0.001 and epsilon 1e-3
(TensorFlow's decay 0.999 and default epsilon). The block follows FixMatch's reference code: the
first block of the network adds its residual to the activated input, later blocks to the raw input
(through a 1x1 projection where the width or stride changes); conv1 always sees the activated input.

Convolution biases: the reference code has them (tf.layers.conv2d's default), starting at zero. In
this network every path from a convolution to the logits passes a batch norm, directly or through
additions and 1x1 projections, which subtracts any per-channel constant: a bias changes nothing and
its gradient is zero, so a zero bias stays zero. Own leaves them out (`conv_bias="none"`, the same
function, faster); `"zeros"` builds them as the reference code does.

Two switches give TorchSSL's network instead (implementations/ledger.py): `conv_bias="uniform"` has
biases with PyTorch's default initialisation, and `width_change_conv_input="raw"` feeds conv1 of the
width-changing blocks with the raw input, as TorchSSL's models/nets/wrn.py does. (With raw input, a
3x3 convolution sees the previous block's bias only inside the image, not in its zero padding, so
there TorchSSL's biases are not exactly cancelled.)
"""

from __future__ import annotations

import torch
from torch import nn

BN_MOMENTUM = 0.001
LEAKY_RELU_SLOPE = 0.1


def _conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)


def _activation() -> nn.LeakyReLU:
    # In place on the batch-norm output, which nothing else keeps: the same values and gradients, one
    # activation-sized tensor less per layer (the peak memory it saves: docs/performance.md).
    return nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, activate_before_residual: bool,
                 bn_eps: float, conv_bias: bool, conv_input_raw: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=bn_eps, momentum=BN_MOMENTUM)
        self.conv1 = _conv3x3(in_channels, out_channels, stride, conv_bias)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=BN_MOMENTUM)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, conv_bias)
        self.activation = _activation()
        self.activate_before_residual = activate_before_residual
        self.conv_input_raw = conv_input_raw
        self.projection = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=conv_bias)
            if in_channels != out_channels or stride != 1
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # With conv_input_raw (TorchSSL's block) the activation is still computed, as TorchSSL computes it:
        # bn1's running statistics move although its output is discarded.
        activated = self.activation(self.bn1(x))
        residual = activated if self.activate_before_residual else x
        out = self.conv1(x if self.conv_input_raw else activated)
        out = self.conv2(self.activation(self.bn2(out)))
        if self.projection is not None:
            residual = self.projection(residual)
        return residual + out


class WideResNet(nn.Module):
    """WRN-depth-width: 3 groups of (depth - 4) / 6 blocks with 16·w, 32·w, 64·w channels."""

    def __init__(self, num_classes: int = 10, depth: int = 28, widen_factor: int = 2, bn_eps: float = 1e-3,
                 conv_bias: str = "none", width_change_conv_input: str = "activated"):
        super().__init__()
        if conv_bias not in ("none", "zeros", "uniform"):
            raise ValueError(f"conv_bias must be 'none', 'zeros' or 'uniform', got {conv_bias!r}")
        if width_change_conv_input not in ("activated", "raw"):
            raise ValueError(f"width_change_conv_input must be 'activated' or 'raw', got {width_change_conv_input!r}")
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        blocks_per_group = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        has_bias = conv_bias != "none"
        self.stem = _conv3x3(3, widths[0], 1, has_bias)
        groups = []
        for group, stride in enumerate([1, 2, 2]):
            in_channels, out_channels = widths[group], widths[group + 1]
            blocks = [
                ResidualBlock(
                    in_channels if block == 0 else out_channels,
                    out_channels,
                    stride if block == 0 else 1,
                    activate_before_residual=(group == 0 and block == 0),
                    bn_eps=bn_eps,
                    conv_bias=has_bias,
                    # the first block of groups 2 and 3 changes the width without activating before its residual
                    conv_input_raw=width_change_conv_input == "raw" and group > 0 and block == 0,
                )
                for block in range(blocks_per_group)
            ]
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.final_bn = nn.BatchNorm2d(widths[3], eps=bn_eps, momentum=BN_MOMENTUM)
        self.activation = _activation()
        self.classifier = nn.Linear(widths[3], num_classes)
        self._initialise(zero_conv_biases=conv_bias == "zeros")

    def _initialise(self, zero_conv_biases: bool) -> None:
        # As in FixMatch's reference code: He-normal convolutions (fan-out), unit BN, Xavier classifier,
        # zero biases. Without zero_conv_biases the convolution biases keep PyTorch's default initialisation.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
                if zero_conv_biases and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.activation(self.final_bn(self.groups(self.stem(images))))
        return self.classifier(features.mean(dim=(2, 3)))
