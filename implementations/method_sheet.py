"""The method as each implementation runs it, in words, from the run's own configuration.

Every run records its sheet (`method.json` in MLflow); the report prints the sheets of a section side by side
as the write-up's "Method" section. A sheet is built from the same TrainConfig the run trains with, so it
cannot claim a setting the run did not use: own-as-torchssl's sheet shows TorchSSL's choices because its
config holds them, and TorchSSL's sheet applies what TorchSSL does whatever the config says
(`TORCHSSL_FIXED`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from implementations.interface import ALGORITHMS, TrainConfig
from implementations.ledger import TORCHSSL_FIXED
from implementations.own.methods import OWN_ALGORITHMS, own_method
from implementations.torchssl.algorithms import TORCHSSL_ALGORITHMS

OWN_FILES = (
    "implementations/own/fixmatch.py (optimiser, schedule, EMA, FixMatch's loss)",
    "implementations/own/augment.py, implementations/own/augment_batched.py, implementations/own/augment_ops.py (weak and strong augmentation)",
    "implementations/own/wide_resnet.py (network)",
    "implementations/own/trainer.py (loop, evaluation, checkpoints)",
)
TORCHSSL_SHARED_FILES = (
    "datasets/ssl_dataset.py, datasets/augmentation/randaugment.py (augmentation)",
    "models/nets/wrn.py (network)",
    "train_utils.py (optimiser, cosine schedule, EMA)",
)


def torchssl_files(algorithm: str) -> tuple[str, ...]:
    script = TORCHSSL_ALGORITHMS[algorithm].script
    return (f"models/{script}/{script}.py, models/{script}/{script}_utils.py (loop, loss, evaluation)",
            f"{script}.py, config/{script}/{script}_cifar10_40_0.yaml (arguments: the config for the run's label count)",
            *TORCHSSL_SHARED_FILES)


@dataclass(frozen=True)
class MethodSheet:
    algorithm: str
    aspects: tuple[tuple[str, str], ...]  # (aspect, how this implementation does it)
    traits: dict[str, str]  # how the method differs from the others: the TRAITS of its file in implementations/own
    files: tuple[str, ...]  # "path, path (what is there)", relative to the implementation's code base
    # Where own's code for the method differs from TorchSSL's (its file's DIFFERENCES_FROM_TORCHSSL); () when own
    # does not have the method.
    differences_from_torchssl: tuple[str, ...] = ()
    defaults_differ_from_paper: tuple[str, ...] = ()  # its file's DEFAULTS_DIFFER_FROM_PAPER

    def as_json(self) -> dict:
        return asdict(self)


def own_method_sheet(config: TrainConfig) -> MethodSheet:
    """The method as own runs it (own-as-torchssl's config holds TorchSSL's choices)."""
    files = OWN_FILES if config.algorithm == "fixmatch" else (  # FixMatch's loss is in fixmatch.py, with the recipe
        f"implementations/own/{config.algorithm}.py (the loss)", *OWN_FILES)
    return _sheet(config, f"every {config.eval_interval:,} iterations and at the end", files,
                  own_method(config.algorithm).describe_loss(config))


def torchssl_method_sheet(config: TrainConfig) -> MethodSheet:
    """The method as TorchSSL's code runs it, whatever the config says where TorchSSL fixes a choice."""
    config = config.replace(**TORCHSSL_FIXED)
    evaluation = (f"after 1, E+1, 2E+1, … iterations (E = {config.eval_interval:,}), every 1,000 once past 80 % "
                  "of training, and at the end")
    if config.algorithm in OWN_ALGORITHMS:  # TorchSSL's code for it is own's method with the differences it names
        loss = own_method(config.algorithm).describe_loss(config)
        differences = own_method(config.algorithm).DIFFERENCES_FROM_TORCHSSL
        if differences:
            loss += "; TorchSSL's code differs from this: " + " ".join(differences)
    else:
        script = TORCHSSL_ALGORITHMS[config.algorithm].script
        loss = (f"as coded in TorchSSL's models/{script}/{script}.py (train) and {script}_utils.py, with the arguments "
                "recorded as the run's torchssl.* parameters; see the method's traits")
    return _sheet(config, evaluation, torchssl_files(config.algorithm), loss)


def _sheet(config: TrainConfig, evaluation: str, files: tuple[str, ...], loss: str) -> MethodSheet:
    algorithm = config.algorithm
    own_has_it = algorithm in OWN_ALGORITHMS
    differences = tuple(own_method(algorithm).DIFFERENCES_FROM_TORCHSSL) if own_has_it else ()
    from_paper = tuple(own_method(algorithm).DEFAULTS_DIFFER_FROM_PAPER) if own_has_it else ()
    aspects = [
        ("loss", loss),
        ("weak augmentation", "random horizontal flip, then a random 32×32 crop of the image reflect-padded by 4 px"),
        ("strong augmentation", _strong_augmentation(config) if _uses_strong(algorithm) else "not used"),
        ("network", _network(config)),
        ("optimiser and schedule",
         f"SGD, η = {config.learning_rate:g}, momentum {config.momentum:g}"
         f"{', Nesterov' if config.nesterov else ''}, weight decay {config.weight_decay:g} on convolution and "
         f"linear weights only; lr η·cos(7πk/16K) over K = {config.iterations:,} iterations; "
         f"precision {config.precision}"),
        ("EMA and evaluation",
         f"the evaluated model is an exponential moving average of the weights (decay {config.ema_decay:g}) with "
         f"the trained model's batch-norm statistics; evaluated on the test set in fp32 {evaluation}"),
    ]
    return MethodSheet(ALGORITHMS[algorithm].title, tuple(aspects), traits(algorithm), files, differences, from_paper)


def traits(algorithm: str) -> dict[str, str]:
    """What sets the method apart: its own file's TRAITS, or for a method only TorchSSL has, algorithms.py's."""
    if algorithm in OWN_ALGORITHMS:
        return dict(own_method(algorithm).TRAITS)
    return dict(TORCHSSL_ALGORITHMS[algorithm].traits)


def _uses_strong(algorithm: str) -> bool:
    if algorithm in OWN_ALGORITHMS:
        return "strong" in own_method(algorithm).VIEWS
    return "strong" in TORCHSSL_ALGORITHMS[algorithm].traits["views of an unlabeled image"]


def _strong_augmentation(config: TrainConfig) -> str:
    randaugment = (f"RandAugment: {config.randaugment_ops} operations per image drawn with replacement from 14, "
                   f"each at a random magnitude; Posterize keeps 4–{config.posterize_max_bits} bits; pixels "
                   f"uncovered by Rotate, Shear, Translate get grey level {config.geometric_fill}")
    cutout = (f"Cutout: a square of side up to 16 px, colour {tuple(config.cutout_fill)}, "
              + ("pixels whose centres lie inside" if config.cutout_geometry == "pixel_centres"
                 else "corners truncated to integers, far edge included"))
    if config.strong_augment_order == "flip_crop_first":
        return f"flip + crop, then {randaugment}, then {cutout}"
    return f"{randaugment}, then {cutout}, both on the raw image; then flip + crop"


def _network(config: TrainConfig) -> str:
    biases = {"none": "no convolution biases", "zeros": "convolution biases starting at zero",
              "uniform": "convolution biases with PyTorch's default initialisation"}[config.conv_bias]
    first_conv = ("the block's activated input (bn + LeakyReLU)" if config.width_change_conv_input == "activated"
                  else "the block's raw input")
    return (f"WRN-{config.depth}-{config.widen_factor}, LeakyReLU 0.1, batch-norm ε = {config.bn_eps:g}, {biases}; "
            f"conv1 of the width-changing blocks sees {first_conv}; normalisation constants: {config.normalization}")
