"""The difference ledger: every known difference between own's default FixMatch and TorchSSL's (pinned
commit f26e1d4), with the paper's choice beside both.

Each entry names the TrainConfig field that switches own to TorchSSL's choice. `TORCHSSL_CHOICES` sets all
of them at once: that configuration runs in the grid as the implementation `own-as-torchssl`, beside `own`
(the paper's choices) and `torchssl` (the reference itself), and is what `bench parity` checks step by
step against TorchSSL's code. Entries without a field do not change what is trained (they change how it
is reported, and the report handles them: see `protocol`), or they are where own and TorchSSL agree and a
reader might think otherwise.

Sources: "paper" is Sohn et al., FixMatch (NeurIPS 2020, arXiv:2001.07685); "paper code" is its reference
implementation, github.com/google-research/fixmatch (libml/models.py, libml/augment.py, fixmatch.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from implementations.interface import TrainConfig


@dataclass(frozen=True)
class Difference:
    area: str  # model, augmentation, optimisation, evaluation
    topic: str
    paper: str  # the paper's choice, with its source
    own: str  # own's default
    torchssl: str  # TorchSSL's choice, with the file it is in
    can_change_accuracy: bool
    field: str | None = None  # the TrainConfig field that switches own to TorchSSL's choice
    torchssl_value: object = None  # that field's value for TorchSSL's choice
    agrees: bool = False  # own and TorchSSL do the same, by different code (listed because a reader may doubt it)
    why_no_switch: str = "none: the report compares over the same window"  # a difference without a field

    @property
    def own_value(self) -> object:
        return getattr(TrainConfig(), self.field) if self.field else None

    @property
    def differs(self) -> bool:
        """Whether own's default and TorchSSL differ here."""
        if self.field is None:
            return not self.agrees
        return self.own_value != self.torchssl_value


LEDGER: tuple[Difference, ...] = (
    # ---- model
    Difference(
        "model", "input of conv1 in the width-changing blocks (first block of groups 2 and 3)",
        paper="the block's activated input, bn1 + LeakyReLU; the 1x1 shortcut takes the raw input "
              "(paper code: libml/models.py, residual())",
        own="as the paper code",
        torchssl="the raw input, to conv1 and the shortcut; bn1 + LeakyReLU are computed and discarded "
                 "(models/nets/wrn.py, BasicBlock.forward)",
        can_change_accuracy=True, field="width_change_conv_input", torchssl_value="raw"),
    Difference(
        "model", "convolution biases",
        paper="biases starting at zero (paper code: tf.layers.conv2d, whose defaults are use_bias=True and a zero "
              "initializer)",
        own="none: the same function, because every path from a convolution passes a batch norm that cancels a "
            "per-channel constant, so a zero bias gets zero gradient and stays zero (implementations/own/"
            "wide_resnet.py); leaving them out saves their gradient passes",
        torchssl="biases with PyTorch's default initialisation, uniform in ±1/sqrt(fan-in) (models/nets/wrn.py "
                 "initialises only the weights); with its raw-input blocks they are not exactly cancelled at the "
                 "image border",
        can_change_accuracy=True, field="conv_bias", torchssl_value="uniform"),
    Difference(
        "model", "batch-norm epsilon",
        paper="1e-3 (paper code: tf.layers.batch_normalization's default)",
        own="1e-3 (PyTorch's default, 1e-5, until this ledger)",
        torchssl="1e-3 (models/nets/wrn.py)",
        can_change_accuracy=True, field="bn_eps", torchssl_value=1e-3),
    # ---- augmentation
    Difference(
        "augmentation", "RandAugment operations per image",
        paper="2 (paper code: libml/augment.py, RandAugment pools with nops=2)",
        own="2",
        torchssl="3 (datasets/ssl_dataset.py: RandAugment(3, 5))",
        can_change_accuracy=True, field="randaugment_ops", torchssl_value=3),
    Difference(
        "augmentation", "order of the strong augmentation",
        paper="flip + crop, then RandAugment, then Cutout (paper code: the RandAugment pool runs on the "
              "flipped and shifted batch, cutout last)",
        own="as the paper code",
        torchssl="RandAugment + Cutout on the raw image, then flip + crop "
                 "(datasets/ssl_dataset.py inserts RandAugment first)",
        can_change_accuracy=True, field="strong_augment_order", torchssl_value="randaugment_first"),
    Difference(
        "augmentation", "colour of pixels uncovered by Rotate, Shear, Translate",
        paper="not stated (kekmodel's PyTorch port: grey 128)",
        own="grey 128",
        torchssl="black, PIL's default (datasets/augmentation/randaugment.py)",
        can_change_accuracy=True, field="geometric_fill", torchssl_value=0),
    Difference(
        "augmentation", "Cutout colour",
        paper="grey (paper, Table 12)",
        own="grey (127, 127, 127)",
        torchssl="(125, 123, 114), the CIFAR-10 mean (datasets/augmentation/randaugment.py, CutoutAbs)",
        can_change_accuracy=True, field="cutout_fill", torchssl_value=(125, 123, 114)),
    Difference(
        "augmentation", "Cutout square",
        paper="side L·32 px, L uniform in [0, 0.5], at a random position (paper, Table 12)",
        own="centre uniform over the image; the pixels whose centres lie inside",
        torchssl="centre uniform in (1, 32] (np.random.uniform(32) draws between 32 and 1), corners truncated "
                 "to integers, far edge included: one more row and column (CutoutAbs)",
        can_change_accuracy=True, field="cutout_geometry", torchssl_value="truncated_corners"),
    Difference(
        "augmentation", "Posterize bits",
        paper="B uniform in [4, 8] (paper, Table 12)",
        own="4, 5, 6, 7 or 8",
        torchssl="int(uniform(4, 8)): 4, 5, 6 or 7 (datasets/augmentation/randaugment.py)",
        can_change_accuracy=True, field="posterize_max_bits", torchssl_value=7),
    Difference(
        "augmentation", "normalisation constants",
        paper="the data set's mean and standard deviation (paper code: libml/data.py)",
        own="mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616)",
        torchssl="(125.3, 123.0, 113.9)/255 and (63.0, 62.1, 66.7)/255 (datasets/ssl_dataset.py); "
                 "agree with own's to 2e-4",
        can_change_accuracy=False, field="normalization", torchssl_value="torchssl"),
    # ---- optimisation
    Difference(
        "optimisation", "training precision",
        paper="fp32 (paper code, TensorFlow 1)",
        own="auto: bf16 autocast on a GPU or an AMX CPU, fp32 elsewhere (paper preset); fp32 (cpu, smoke)",
        torchssl="fp32 (amp: False in config/fixmatch/*.yaml)",
        can_change_accuracy=True, field="precision", torchssl_value="fp32"),
    Difference(
        "optimisation", "which parameters get weight decay",
        paper="convolution and dense kernels (paper code: fixmatch.py, 'kernel' in the variable name)",
        own="weights of convolutions and the classifier (parameters with more than one dimension)",
        torchssl="every parameter whose name holds neither 'bn' nor 'bias' (train_utils.py, get_optimizer): "
                 "the same set",
        can_change_accuracy=False, agrees=True),
    Difference(
        "optimisation", "TF32 while training on a GPU (fp32 convolutions and matrix multiplies)",
        paper="not stated (TensorFlow 1 on 2019 GPUs, before TF32)",
        own="PyTorch's defaults: cuDNN convolutions in TF32 on Ampere and later GPUs, matrix multiplies in fp32 "
            "(implementations/tf32.py); recorded per run as tf32_training",
        torchssl="PyTorch's defaults (it sets neither switch)",
        can_change_accuracy=False, agrees=True),
    # ---- evaluation
    Difference(
        "evaluation", "when the EMA model is evaluated",
        paper="every 64 kimg = 1,024 iterations; the paper reports the median of the last 20 evaluations",
        own="after every eval_interval iterations (1,024 in the paper preset) and at the end",
        torchssl="after 1, E+1, 2E+1, ... iterations, every 1,000 once past 80 % of training, and at the end "
                 "(models/fixmatch/fixmatch.py)",
        can_change_accuracy=False),
    Difference(
        "evaluation", "precision of the evaluation",
        paper="fp32",
        own="true fp32 whatever the training precision: no autocast, and TF32 off on a GPU (implementations/tf32.py)",
        torchssl="fp32 with PyTorch's defaults: on Ampere and later GPUs cuDNN runs its convolutions in TF32 "
                 "(a 10-bit mantissa); on a CPU plain fp32",
        can_change_accuracy=False, why_no_switch="none: own-as-torchssl evaluates in true fp32 too; each run records "
                                                 "it as tf32_evaluation"),
)

# Every field a ledger entry switches, at TorchSSL's value: own configured as TorchSSL has it.
TORCHSSL_CHOICES: dict[str, object] = {entry.field: entry.torchssl_value for entry in LEDGER if entry.field}
# What TorchSSL's FixMatch does whatever the config says: its choice for every switch above, and Nesterov.
TORCHSSL_FIXED: dict[str, object] = {**TORCHSSL_CHOICES, "nesterov": True}
