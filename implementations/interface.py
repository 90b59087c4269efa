"""The one small interface between the harness and any FixMatch implementation.

The harness resolves a `TrainConfig`, loads `ImageData`, draws the labeled indices and hands
them, with a `MetricsSink`, to `Implementation.train`. The implementation trains, evaluates
and checkpoints into `RunInputs.work_dir` (resuming from a checkpoint found there), reports
every number through the sink under the metric names below, and returns a `RunResult`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Protocol

import numpy as np

# Metric names: identical for every implementation, so MLflow compares them side by side.
# Evaluation of the EMA model on the test set, logged with the iteration as step.
EVAL_TOP1 = "eval/top1"
EVAL_TOP5 = "eval/top5"
EVAL_PRECISION = "eval/precision_macro"
EVAL_RECALL = "eval/recall_macro"
EVAL_F1 = "eval/f1_macro"
EVAL_AUC = "eval/auc_ovo"
EVAL_LOSS = "eval/loss"
EVAL_CLASS_ACCURACY_PREFIX = "eval/class_accuracy/"  # + class name
# Training signals, averaged over the iterations since the previous log.
TRAIN_SUPERVISED_LOSS = "train/supervised_loss"
TRAIN_UNSUPERVISED_LOSS = "train/unsupervised_loss"
TRAIN_TOTAL_LOSS = "train/total_loss"
TRAIN_MASK_RATE = "train/mask_rate_above_threshold"  # fraction of unlabeled images kept
TRAIN_PSEUDO_LABEL_ACCURACY = "train/pseudo_label_accuracy"  # of kept pseudo-labels vs hidden truth
# Threshold methods, per class c of the pseudo-label: the threshold in force, and the fraction of the images
# pseudo-labelled c that were kept.
TRAIN_CLASS_THRESHOLD_PREFIX = "train/class_threshold/"  # + class name
TRAIN_CLASS_MASK_RATE_PREFIX = "train/class_mask_rate/"  # + class name
TRAIN_LR = "train/lr"
TRAIN_ITERATIONS_PER_SECOND = "train/iterations_per_second"
TRAIN_DATA_WAIT_SECONDS = "train/data_wait_seconds_per_iteration"
# Once per run, at its last iteration: the harness's record of the run's result.
SUMMARY_BEST_TOP1 = "summary/best_top1"  # the best evaluation's top-1 (selected on the test set: never the headline)
SUMMARY_BEST_ITERATION = "summary/best_iteration"
SUMMARY_ITERATIONS = "summary/iterations"  # iterations trained in all
METRIC_PREFIXES = ("eval/", "train/", "summary/")  # ours, not MLflow's system/* metrics
SUMMARY_PREFIX = "summary/"
DEFAULT_EXPERIMENT = "cifar10-fixmatch"  # the MLflow experiment a grid goes to unless told otherwise

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def training_signal_metrics(
    sums: tuple[float, float, float, float, float, float],
    iterations: int,
    learning_rate: float,
    training_seconds: float,
    data_wait_seconds: float,
) -> dict[str, float]:
    """The training signals of a log window, from its sums over `iterations` iterations:
    (supervised loss, unsupervised loss, total loss, kept pseudo-labels, unlabeled images, correct kept)."""
    supervised, unsupervised, total, kept, unlabeled, correct = sums
    n = max(iterations, 1)
    metrics = {
        TRAIN_SUPERVISED_LOSS: supervised / n,
        TRAIN_UNSUPERVISED_LOSS: unsupervised / n,
        TRAIN_TOTAL_LOSS: total / n,
        TRAIN_LR: learning_rate,
        TRAIN_ITERATIONS_PER_SECOND: iterations / training_seconds if training_seconds > 0 else 0.0,
        TRAIN_DATA_WAIT_SECONDS: data_wait_seconds / n,
    }
    if unlabeled:
        metrics[TRAIN_MASK_RATE] = kept / unlabeled
    if kept:
        metrics[TRAIN_PSEUDO_LABEL_ACCURACY] = correct / kept
    return metrics


def class_signal_metrics(threshold_sums: list[float], threshold_iterations: int, pseudo_label_counts: list[float],
                         kept_counts: list[float], class_names: tuple[str, ...]) -> dict[str, float]:
    """The per-class signals of a threshold method's log window: the mean threshold of each class over the
    `threshold_iterations` iterations, and per pseudo-labelled class the fraction kept (classes without a
    pseudo-label in the window are left out)."""
    metrics = {}
    if threshold_iterations:
        metrics.update({TRAIN_CLASS_THRESHOLD_PREFIX + name: total / threshold_iterations
                        for name, total in zip(class_names, threshold_sums)})
    metrics.update({TRAIN_CLASS_MASK_RATE_PREFIX + name: kept / count
                    for name, kept, count in zip(class_names, kept_counts, pseudo_label_counts) if count})
    return metrics


# The role of each TrainConfig field, declared on the field (dataclasses metadata) and read by everything that
# must treat fields apart: run keys (plan.run_key), the report's pooling (report/collect.py), the fields an
# implementation reads (fields_of_algorithm, the TorchSSL adapter). Unmarked fields are hyper-parameters: what a
# run learns with; runs that differ in one are never pooled. The recipe switches (own's choices where TorchSSL
# chooses otherwise) are declared by the difference ledger (implementations/ledger.py).
ROLE_HYPERPARAMETER = "hyper-parameter"
ROLE_RUN = "run"  # which run and how the harness drives it; every implementation honours it
ROLE_EXECUTION = "execution"  # how own executes a run, not what it computes


def _field(default, role: str = ROLE_HYPERPARAMETER, *, identity: bool = True, methods_only: bool = False,
           option: str | None = None):
    """A TrainConfig field with its role; identity=False keeps it out of run keys (it says where or how a run
    executes); methods_only: only some algorithms read it (Algorithm.reads); option: the `bench run` option that
    sets it."""
    return field(default=default, metadata={"role": role, "identity": identity, "methods_only": methods_only,
                                            "option": option})


def config_fields(role: str | None = None, **metadata) -> frozenset[str]:
    """The TrainConfig fields of a role (any role when None) whose metadata has the given values."""
    return frozenset(part.name for part in dataclasses.fields(TrainConfig)
                     if (role is None or part.metadata.get("role", ROLE_HYPERPARAMETER) == role)
                     and all(part.metadata.get(key, _METADATA_DEFAULTS[key]) == value
                             for key, value in metadata.items()))


_METADATA_DEFAULTS = {"identity": True, "methods_only": False, "option": None}


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a run, resolved once and logged whole. Defaults are FixMatch's paper's; each
    other algorithm starts from its own defaults (ALGORITHMS[name].defaults)."""

    preset: str = _field("paper", ROLE_RUN, option="--preset")
    algorithm: str = _field("fixmatch", option="--algorithm")  # a name of ALGORITHMS: supervised trains on the labeled split only
    iterations: int = _field(2**20, option="--iterations")
    labeled_batch_size: int = 64  # B
    unlabeled_ratio: int = _field(7, methods_only=True)  # μ: unlabeled batch = μ·B
    threshold: float = _field(0.95, methods_only=True)  # τ
    unsupervised_weight: float = _field(1.0, methods_only=True)  # λ
    # λ grows linearly from 0 to its value over this fraction of the iterations (Pseudo-Label, Π-model, Mean
    # Teacher, MixMatch, VAT; TorchSSL's unsup_warmup_pos, unsup_warm_up, ramp_up); FixMatch uses no ramp-up.
    unsupervised_warmup: float = _field(0.4, methods_only=True)
    sharpen_temperature: float = _field(0.5, methods_only=True)  # T: MixMatch's sharpening, UDA's softened target (TorchSSL's T)
    mixup_alpha: float = _field(0.5, methods_only=True)  # α of MixMatch's Beta(α, α) MixUp
    threshold_warmup: bool = _field(True, methods_only=True)  # FlexMatch: unused images count as a class of their own while most are unused
    learning_rate: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    ema_decay: float = 0.999
    depth: int = 28
    widen_factor: int = 2
    # The recipe: the paper's choices by default. implementations/ledger.py names TorchSSL's choice for each
    # field below and where the paper says so.
    bn_eps: float = 1e-3
    # none: no convolution bias, the same function as the paper's zero-initialised ones (see wide_resnet.py);
    # uniform: biases with PyTorch's default initialisation, ±1/sqrt(fan-in)
    conv_bias: Literal["none", "zeros", "uniform"] = "none"
    width_change_conv_input: Literal["activated", "raw"] = "activated"  # what conv1 of a width-changing block sees
    randaugment_ops: int = 2
    strong_augment_order: Literal["flip_crop_first", "randaugment_first"] = "flip_crop_first"
    geometric_fill: int = 128  # grey level of pixels uncovered by Rotate, Shear, Translate
    cutout_fill: tuple[int, int, int] = (127, 127, 127)
    cutout_geometry: Literal["pixel_centres", "truncated_corners"] = "pixel_centres"
    posterize_max_bits: int = 8  # Posterize keeps 4..posterize_max_bits bits
    normalization: Literal["kekmodel", "torchssl"] = "kekmodel"  # which CIFAR-10 mean/std constants
    eval_interval: int = _field(1024, option="--eval-interval")  # the paper's 64 kimg between evaluations
    log_interval: int = _field(128, ROLE_RUN)
    checkpoint_interval: int = _field(1024, ROLE_RUN)
    checkpoint_minutes: float = _field(10.0, ROLE_RUN)  # also checkpoint once this much training time has passed since the last one
    eval_batch_size: int = _field(1024, ROLE_EXECUTION)
    seed: int = _field(0, ROLE_RUN, option="--seeds")
    device: str = _field("auto", ROLE_RUN, identity=False, option="--device")  # "auto" resolves to cuda when present, else cpu
    precision: Precision = _field("auto", ROLE_EXECUTION, option="--precision")  # see implementations/own/trainer.py: autocast_dtype
    channels_last: bool = _field(True, ROLE_EXECUTION, option="--channels-last/--no-channels-last")
    compile: bool = _field(False, ROLE_EXECUTION, option="--compile")
    augmentation: Literal["batched", "pil"] = _field("batched", ROLE_EXECUTION, option="--augmentation")  # pil: the per-image reference path
    # torch.compile the batched augmentation's arithmetic, the draws kept eager: the same pixels from the same
    # random stream (tested), in fewer kernels. Like the device, it says how a run executes, not what it computes,
    # so it is not part of a run's identity.
    compile_augmentation: bool = _field(False, ROLE_EXECUTION, identity=False, option="--compile-augmentation")

    def __post_init__(self):
        # A config read back from JSON (a run spec, MLflow params) holds lists where it was built with tuples.
        object.__setattr__(self, "cutout_fill", tuple(self.cutout_fill))

    @property
    def unlabeled_batch_size(self) -> int:
        return self.unlabeled_ratio * self.labeled_batch_size if ALGORITHMS[self.algorithm].unlabeled else 0

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def as_params(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Algorithm:
    """What the harness knows of a semi-supervised method; how each implementation runs it is its own business
    (implementations/own/<name>.py, implementations/torchssl/algorithms.py)."""

    name: str  # as TorchSSL names its script
    title: str  # the paper
    # TrainConfig fields where the method's defaults differ from FixMatch's: TorchSSL's CIFAR-10 config at the
    # pinned commit (config/<name>/<name>_cifar10_*_0.yaml, else its script's argument defaults). Only the
    # differences: where a preset scales FixMatch's setting (the cpu preset's μ = 3), a method with FixMatch's
    # value follows it.
    defaults: Mapping[str, object] = field(default_factory=dict)
    reads: frozenset[str] = frozenset()  # the fields of METHOD_FIELDS it reads
    unlabeled: bool = True  # False: it trains on the labeled split only


# Fields only some methods read: a run of another method is neither identified nor recorded by them.
METHOD_FIELDS = config_fields(methods_only=True)
NOT_IDENTITY = frozenset(part.name for part in dataclasses.fields(TrainConfig)) - config_fields(identity=True)
_UNLABELED = frozenset({"unlabeled_ratio", "unsupervised_weight"})

ALGORITHMS: dict[str, Algorithm] = {algorithm.name: algorithm for algorithm in (
    Algorithm("fixmatch", "FixMatch (Sohn et al., NeurIPS 2020, arXiv:2001.07685), Algorithm 1",
              reads=_UNLABELED | {"threshold"}),
    Algorithm("supervised", "Supervised baseline: the labeled split only (TorchSSL's fullysupervised)",
              unlabeled=False),
    Algorithm("pseudolabel", "Pseudo-Label (Lee, ICML 2013 workshop), with a confidence threshold as in TorchSSL",
              {"unlabeled_ratio": 1},
              _UNLABELED | {"threshold", "unsupervised_warmup"}),
    Algorithm("pimodel", "Π-model (Laine & Aila, ICLR 2017, Section 2.1)",
              {"unlabeled_ratio": 1, "unsupervised_weight": 10.0},
              _UNLABELED | {"unsupervised_warmup"}),
    Algorithm("meanteacher", "Mean Teacher (Tarvainen & Valpola, NeurIPS 2017)",
              {"unlabeled_ratio": 1, "unsupervised_weight": 50.0},
              _UNLABELED | {"unsupervised_warmup"}),
    Algorithm("mixmatch", "MixMatch (Berthelot et al., NeurIPS 2019, arXiv:1905.02249), Algorithm 1",
              {"unlabeled_ratio": 1, "unsupervised_weight": 100.0},
              _UNLABELED | {"unsupervised_warmup", "sharpen_temperature", "mixup_alpha"}),
    Algorithm("uda", "UDA (Xie et al., NeurIPS 2020, arXiv:1904.12848), as in its CIFAR-10 code",
              {"threshold": 0.8, "sharpen_temperature": 0.4},
              _UNLABELED | {"threshold", "sharpen_temperature"}),
    Algorithm("flexmatch", "FlexMatch (Zhang et al., NeurIPS 2021, arXiv:2110.08263), Curriculum Pseudo Labeling",
              {}, _UNLABELED | {"threshold", "threshold_warmup"}),
    Algorithm("remixmatch", "ReMixMatch (Berthelot et al., ICLR 2020, arXiv:1911.09785)",
              {"unlabeled_ratio": 1, "mixup_alpha": 0.75},
              frozenset({"unlabeled_ratio", "sharpen_temperature", "mixup_alpha"})),
    Algorithm("vat", "VAT (Miyato et al., TPAMI 2018, arXiv:1704.03976), with entropy minimisation",
              {"unlabeled_ratio": 1, "unsupervised_weight": 0.3},
              _UNLABELED | {"unsupervised_warmup"}),
    Algorithm("freematch", "FreeMatch (Wang et al., ICLR 2023, arXiv:2205.07246), self-adaptive thresholds",
              {}, _UNLABELED),
    Algorithm("softmatch", "SoftMatch (Chen et al., ICLR 2023, arXiv:2301.10921), soft weights of confidence",
              {}, _UNLABELED),
)}


def for_algorithm(config: TrainConfig, algorithm: str) -> TrainConfig:
    """The config with the algorithm's own defaults where it differs from FixMatch's."""
    return config.replace(algorithm=algorithm, **ALGORITHMS[algorithm].defaults)


def fields_of_algorithm(algorithm: str) -> frozenset[str]:
    """The TrainConfig fields a run of this algorithm reads."""
    return frozenset(name for name in TrainConfig().as_params()
                     if name not in METHOD_FIELDS or name in ALGORITHMS[algorithm].reads)


@dataclass(frozen=True)
class ImageData:
    """A labelled image classification data set held in memory as uint8 arrays."""

    train_images: np.ndarray  # uint8 (N, 32, 32, 3), RGB, HWC
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray  # uint8 (M, 32, 32, 3)
    test_labels: np.ndarray  # int64 (M,)
    class_names: tuple[str, ...]
    identity: str  # names the data set; part of every split digest
    official: bool  # False when the files are not the official full set (e.g. the subset in ../shared)
    source_dir: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class MetricsSink(Protocol):
    """Where an implementation reports its numbers; the harness backs it with MLflow.

    `checkpointed(iteration)`: a durable checkpoint of `iteration` exists now (or the run resumes from it, or
    starts afresh with 0). What was logged up to it is final; anything logged beyond it belongs to an
    interrupted attempt and is discarded, so that the run's history is the one of the attempt that goes on.
    `progress(iteration)`: the iteration just trained, as often as every iteration (the sink decides how often
    it shows it); nothing is logged.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_confusion_matrix(self, matrix: np.ndarray, step: int) -> None: ...

    def checkpointed(self, iteration: int) -> None: ...

    def progress(self, iteration: int) -> None: ...


@dataclass(frozen=True)
class RunInputs:
    config: TrainConfig
    data: ImageData
    labeled_indices: np.ndarray  # int64 indices into data.train_images; unlabeled = all of train
    split_digest: str
    work_dir: Path  # checkpoints live here; a checkpoint found here is resumed


@dataclass
class RunResult:
    iterations: int  # iterations actually trained
    final_metrics: dict[str, float]  # evaluation metrics at the last iteration
    best_top1: float
    best_iteration: int
    confusion_matrix: np.ndarray  # at the last evaluation, rows = true class
    extra: dict[str, object] = field(default_factory=dict)  # implementation facts worth recording


class Implementation(Protocol):
    """What the harness asks of an implementation; each answers for itself, so that the harness never asks which
    implementation it holds. Only `train` and `seconds_per_iteration` may import torch."""

    name: str
    # The implementations the report pairs this one's runs with, by seed (each difference is this one minus
    # the other); () for none.
    compared_with: tuple[str, ...]

    def algorithms(self) -> tuple[str, ...]:
        """The ALGORITHMS names it can run."""

    def configure(self, config: TrainConfig) -> TrainConfig:
        """The configuration it runs with, from the grid's (own-as-torchssl: TorchSSL's choices)."""

    def fields_read(self, algorithm: str) -> frozenset[str]:
        """The TrainConfig fields a run of this algorithm reads: what its runs are identified and recorded by."""

    def refusal(self, config: TrainConfig, num_labels: int, num_classes: int) -> str | None:
        """One sentence saying why it cannot run this configuration of an algorithm it has, or None."""

    def check_ready(self) -> None:
        """Raises ImplementationNotReady (one sentence: what is missing, what to do) before any run is planned."""

    def provenance(self) -> dict[str, str]:
        """Tags naming the code a run of it executes beyond this project's commit (TorchSSL's checkout)."""

    def method_sheet(self, config: TrainConfig) -> dict:
        """The method as it runs it, in words (implementations/method_sheet.py), recorded with every run."""

    def seconds_per_iteration(self, config: TrainConfig, data: ImageData, labeled_indices: np.ndarray) -> float:
        """One training iteration's seconds on the config's device, measured here (or a lower bound)."""

    def train(self, run: RunInputs, sink: MetricsSink) -> RunResult: ...


class ImplementationNotReady(RuntimeError):
    """An implementation cannot run here yet; the message says what is missing and what to do."""


def resolve_device(name: str) -> str:
    """A TrainConfig device: "auto" is "cuda" where PyTorch sees a GPU, else "cpu"; anything else as given."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CheckpointError(RuntimeError):
    """The run's checkpoint cannot be read; the message names the file and what to do."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run must stop as FAILED."""
