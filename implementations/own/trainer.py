"""The training loop of the own implementation, in named stages: build (`OwnTraining`), restore
(`Checkpoint`), step (`OwnTraining.step`), and the end-of-iteration bookkeeping (training signals,
evaluation, checkpoints). Each method is one small unit in its own file (methods.py lists them); this loop is
the same for all.

Logs, evaluations and checkpoints follow cadence.py (a checkpoint also after `checkpoint_minutes`, so that an
interruption costs minutes). Each written checkpoint is reported to the sink (`MetricsSink.checkpointed`): what
was logged up to it is then final.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from implementations import interface
from implementations.cadence import CheckpointSchedule, log_due
from implementations.common import all_finite, first_line, write_atomically
from implementations.interface import (
    CheckpointError,
    MetricsSink,
    NonFiniteLossError,
    RunInputs,
    RunResult,
    TrainConfig,
    resolve_device,
)
from implementations.own.augment_batched import normalize
from implementations.own.batches import Batch, TrainingBatches
from implementations.own.evaluate import classification_metrics
from implementations.own.fixmatch import WeightEMA, build_optimizer, cosine_schedule
from implementations.own.methods import new_method_state, own_method
from implementations.own.step_loss import StepInputs, StepLoss, linear_rampup
from implementations.own.wide_resnet import WideResNet
from implementations.tf32 import tf32_in_force, true_fp32
from implementations.training_window import TrainingWindow

CHECKPOINT_NAME = "checkpoint.pt"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the device has it, fp16 on GPUs without bf16, None for fp32.

    "auto" is the faster one for the device: bf16 on GPUs, and on CPUs with AMX (bf16 matrix units);
    fp32 on other CPUs, where oneDNN's bf16 convolutions were measured slower than fp32 (README,
    performance) and the casts only add work.
    """
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_matrix_units()) else "fp32"
    if precision == "fp32":
        return None
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU has AMX bf16 units: from torch where it can tell (torch.cpu.get_capabilities, newer than
    2.9), else from the CPU flags Linux lists."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        return bool(capabilities().get("amx_bf16", False))
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def build_model(config: TrainConfig, num_classes: int) -> WideResNet:
    return WideResNet(num_classes, config.depth, config.widen_factor, bn_eps=config.bn_eps,
                      conv_bias=config.conv_bias, width_change_conv_input=config.width_change_conv_input)


def tensors_to(state, device: torch.device):
    """A method's state (a dataclass of tensors, or None) with its tensors on the device."""
    if state is None:
        return None
    return dataclasses.replace(state, **{part.name: getattr(state, part.name).to(device)
                                         for part in dataclasses.fields(state)
                                         if isinstance(getattr(state, part.name), torch.Tensor)})


class OwnTraining:
    """The model, optimiser, schedule, gradient scaler, EMA and method state of one run, stepped one batch at a
    time with the configured method's loss (its file in implementations/own, methods.py)."""

    def __init__(self, config: TrainConfig, num_classes: int, unlabeled_images: int, device: torch.device):
        self.config = config
        self.num_classes = num_classes
        self.device = device
        self.method = own_method(config.algorithm)
        # Beyond the weights: FlexMatch's latest pseudo-label of each of the unlabeled images; None for the others.
        self.method_state = new_method_state(config.algorithm, unlabeled_images, device)
        self.autocast = autocast_dtype(config.precision, device)
        if device.type == "cuda":  # cuDNN picks each convolution's fastest algorithm for the fixed batch shapes
            torch.backends.cudnn.benchmark = True
        self.model = build_model(config, num_classes).to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = WeightEMA(self.model, config.ema_decay)
        self.ema.module.eval()
        self.optimizer = build_optimizer(self.model, config.learning_rate, config.momentum, config.nesterov,
                                         config.weight_decay, device)
        self.scheduler = cosine_schedule(self.optimizer, config.iterations)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast == torch.float16)
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self.model.train()  # evaluation uses the EMA copy, so the trained model never leaves train mode

    def step(self, batch: Batch) -> tuple[StepLoss, float]:
        """One iteration: loss, backward, SGD step, schedule step, EMA update. Returns the loss (the gradients
        stay on the parameters until the next step) and the learning rate the step used."""
        device_type = batch.labeled_images.device.type
        with torch.autocast(device_type, dtype=self.autocast, enabled=self.autocast is not None):
            loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.ema.update(self.model)
        return loss, learning_rate

    def _loss(self, batch: Batch) -> StepLoss:
        """The configured method's loss of this batch (its file holds its equations)."""
        config = self.config
        return self.method.step(StepInputs(
            model=self.forward_model, teacher=self.ema.module, labeled_images=batch.labeled_images,
            labels=batch.labels, unlabeled_views=batch.unlabeled_views, unlabeled_indices=batch.unlabeled_indices,
            # λ(t) for the methods that ramp it up; the schedule counts the iterations done, and resumes with them.
            ramped_weight=linear_rampup(config.unsupervised_weight, self.scheduler.last_epoch, config.iterations,
                                        config.unsupervised_warmup),
            num_classes=self.num_classes, config=config, state=self.method_state))

    def raise_if_weights_non_finite(self, iteration: int) -> None:
        """A finite loss can still leave NaN or infinite weights (a huge step); such weights are no checkpoint."""
        if not all_finite([*self.model.parameters(), *self.ema.module.parameters()]):
            raise NonFiniteLossError(f"the training loss became NaN or infinite at iteration {iteration}: its update "
                                     "left NaN or infinite weights; the run is stopped")

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "method_state": self.method_state}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if "method_state" in state:  # checkpoints written before methods had state have none
            self.method_state = tensors_to(state["method_state"], self.device)


@dataclass
class Progress:
    """Where the run stands: what a checkpoint holds besides the training state and the random streams."""

    iteration: int = 0
    best_top1: float = -1.0
    best_iteration: int = 0
    last_evaluation: dict[str, float] = field(default_factory=dict)
    confusion: np.ndarray | None = None  # at the last evaluation


class Checkpoint:
    """`checkpoint.pt` in the work dir: written to a temporary name, synced and renamed, so a kill (or a crash
    of the machine) during the write leaves the previous one intact."""

    def __init__(self, work_dir: Path):
        self.path = Path(work_dir) / CHECKPOINT_NAME

    def restore(self, training: OwnTraining, batches: TrainingBatches, signals: TrainingWindow) -> Progress:
        """Where the run stands: the checkpoint's state restored into the run's parts, or a fresh Progress when
        there is none. Read on the CPU whatever the training device: each part moves its tensors where they belong
        (load_state_dict copies onto the device), and the random-stream states stay CPU byte tensors, the only
        kind torch.set_rng_state and Generator.set_state take. Any failure is one sentence (CheckpointError)."""
        if not self.path.exists():
            return Progress()
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(saved.get("progress"), Progress):
                raise ValueError("it is not a checkpoint of this version of the own implementation")
            training.load_state_dict(saved["training"])
            batches.load_state_dict(saved["batches"])
            signals.load_state_dict(saved["signals"])
            torch.set_rng_state(saved["torch_rng"])
            if saved.get("cuda_rng") is not None and training.device.type == "cuda":
                torch.cuda.set_rng_state(saved["cuda_rng"], training.device)
        except Exception as error:
            raise CheckpointError(
                f"The checkpoint {self.path} cannot be read ({first_line(error)}); delete the folder "
                f"{self.path.parent} and run the same `bench run` again to restart this run from the beginning "
                "in a new MLflow run.") from None
        return saved["progress"]

    def save(self, training: OwnTraining, batches: TrainingBatches, signals: TrainingWindow,
             progress: Progress) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"training": training.state_dict(), "batches": batches.state_dict(), "signals": signals.state_dict(),
                 "torch_rng": torch.get_rng_state(),
                 # MixMatch's shuffle on a GPU draws from its default generator
                 "cuda_rng": torch.cuda.get_rng_state(training.device) if training.device.type == "cuda" else None,
                 "progress": progress}
        # on disk before it replaces the previous one: the sink then calls it durable
        write_atomically(self.path, lambda file: torch.save(state, file))


class Evaluator:
    """The EMA model on the test set, in true fp32 whatever the training precision (no autocast, no TF32: tf32.py),
    logged as one evaluation."""

    def __init__(self, run: RunInputs, device: torch.device):
        config = run.config
        self.class_names = run.data.class_names
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.batch_size = config.eval_batch_size
        self.normalization = config.normalization
        self.images = torch.from_numpy(run.data.test_images).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(run.data.test_labels).to(device)

    @torch.no_grad()
    def evaluate(self, ema_model: torch.nn.Module, progress: Progress, sink: MetricsSink) -> None:
        with true_fp32():
            logits = torch.cat([
                ema_model(normalize(chunk, self.normalization).contiguous(memory_format=self.memory_format)).float()
                for chunk in self.images.split(self.batch_size)
            ])
        if not torch.isfinite(logits).all():
            raise NonFiniteLossError(f"the training loss became NaN or infinite at iteration {progress.iteration}: "
                                     "the EMA model's outputs are no longer finite; the run is stopped")
        metrics, confusion = classification_metrics(logits, self.labels, self.class_names)
        if metrics[interface.EVAL_TOP1] > progress.best_top1:
            progress.best_top1, progress.best_iteration = metrics[interface.EVAL_TOP1], progress.iteration
        progress.last_evaluation, progress.confusion = metrics, confusion
        sink.log_metrics(metrics, step=progress.iteration)
        sink.log_confusion_matrix(confusion, step=progress.iteration)


def seconds_per_iteration(config: TrainConfig, data, labeled_indices) -> float:
    """Training seconds of one iteration of this configuration on its device: one step timed after a warm-up
    step (which pays for allocations and kernel choices), batches and augmentation included."""
    device = torch.device(resolve_device(config.device))
    torch.manual_seed(config.seed)
    training = OwnTraining(config, data.num_classes, len(data.train_images), device)
    batches = TrainingBatches(data, labeled_indices, config, device)
    training.step(batches.next())
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    loss, _ = training.step(batches.next())
    float(loss.total.detach())  # waits for the device
    return time.perf_counter() - started


class OwnTrainer:
    """The loop every own method trains in (the implementation itself: implementation.py): build, restore, then
    step, log, evaluate and checkpoint at their intervals until the last iteration."""

    def train(self, run: RunInputs, sink: MetricsSink) -> RunResult:
        config = run.config
        device = torch.device(resolve_device(config.device))
        torch.manual_seed(config.seed)
        training = OwnTraining(config, run.data.num_classes, len(run.data.train_images), device)
        batches = TrainingBatches(run.data, run.labeled_indices, config, device)
        signals = TrainingWindow(run.data.class_names, device)
        checkpoint = Checkpoint(run.work_dir)
        progress = checkpoint.restore(training, batches, signals)
        # Logged beyond the checkpoint by an interrupted attempt: abandoned, this attempt logs it again.
        sink.checkpointed(progress.iteration)

        evaluator = Evaluator(run, device)
        with true_fp32():
            evaluation_tf32 = tf32_in_force(device)
        checkpoints = CheckpointSchedule(config.checkpoint_interval, config.checkpoint_minutes)
        while progress.iteration < config.iterations:
            waited_from = time.perf_counter()
            batch = batches.next()
            signals.data_wait_seconds += time.perf_counter() - waited_from
            loss, learning_rate = training.step(batch)
            progress.iteration += 1
            signals.add(progress.iteration, loss.supervised, loss.unsupervised, loss.total, kept=loss.mask,
                        pseudo_labels=loss.pseudo_labels, true_labels=batch.unlabeled_true_labels,
                        class_thresholds=loss.class_thresholds)
            sink.progress(progress.iteration)

            iteration, last = progress.iteration, progress.iteration == config.iterations
            logging = log_due(iteration, config.log_interval, config.iterations)
            evaluating = log_due(iteration, config.eval_interval, config.iterations)
            checkpointing = checkpoints.due(iteration, final=last)
            if not (logging or evaluating or checkpointing):
                continue
            # Nothing of this iteration is logged or checkpointed unless its loss, and the weights it left, are finite.
            signals.raise_if_non_finite()
            if checkpointing:
                training.raise_if_weights_non_finite(iteration)
            training_signals = signals.summarise(learning_rate) if logging else None  # ends the window's clock
            with signals.clock.paused():
                if evaluating:
                    evaluator.evaluate(training.ema.module, progress, sink)
                if training_signals is not None:
                    sink.log_metrics(training_signals, step=iteration)
                if checkpointing:
                    checkpoint.save(training, batches, signals, progress)
                    checkpoints.written()
                    sink.checkpointed(iteration)

        return RunResult(
            iterations=progress.iteration,
            final_metrics=dict(progress.last_evaluation),
            best_top1=progress.best_top1,
            best_iteration=progress.best_iteration,
            confusion_matrix=progress.confusion,
            extra={"device": str(device),
                   "autocast_dtype": str(training.autocast).replace("torch.", "") if training.autocast else "float32",
                   "tf32_training": tf32_in_force(device), "tf32_evaluation": evaluation_tf32},
        )
