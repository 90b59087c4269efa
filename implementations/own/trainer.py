"""The training loop of the own implementation: batches in, FixMatch step, EMA, evaluation,
training signals, checkpoints. The method itself is in fixmatch.py."""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import torch

from implementations import interface as names
from implementations.interface import (
    MetricsSink,
    NonFiniteLossError,
    RunInputs,
    RunResult,
    training_signal_metrics,
)
from implementations.own.batches import Batch, TrainingBatches
from implementations.own.evaluate import classification_metrics
from implementations.own.fixmatch import (
    WeightEMA,
    build_optimizer,
    cosine_schedule,
    fixmatch_step,
    supervised_step,
)
from implementations.own.augment_batched import normalize
from implementations.own.wide_resnet import WideResNet

CHECKPOINT_NAME = "checkpoint.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the device has it, fp16 on GPUs without bf16, None for fp32.

    "auto" is the faster one for the device: bf16 on GPUs, and on CPUs with AMX (bf16 matrix units);
    fp32 on other CPUs, where oneDNN's bf16 convolutions were measured slower than fp32 (README,
    performance) and the casts only add work.
    """
    if precision == "auto":
        cpu_has_bf16_matrix_units = device.type == "cpu" and torch.cpu.get_capabilities().get("amx_bf16", False)
        precision = "bf16" if device.type == "cuda" or cpu_has_bf16_matrix_units else "fp32"
    if precision == "fp32":
        return None
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


class TrainingSignals:
    """Sums of the per-iteration training signals, kept on the device between log intervals."""

    # supervised, unsupervised, total loss; kept pseudo-labels; correct kept pseudo-labels
    SIZE = 5

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(self.SIZE, dtype=torch.float64, device=device)
        self.unlabeled_images = 0
        self.iterations = 0
        self.data_wait_seconds = 0.0
        self.started = time.perf_counter()

    def add(self, loss, unlabeled_true_labels: torch.Tensor | None) -> None:
        if unlabeled_true_labels is None:
            kept = correct = torch.zeros((), device=self.sums.device)
        else:
            kept = loss.mask.sum()
            correct = (loss.mask * (loss.pseudo_labels == unlabeled_true_labels)).sum()
            self.unlabeled_images += len(unlabeled_true_labels)
        self.sums += torch.stack([loss.supervised.detach(), loss.unsupervised.detach(), loss.total.detach(),
                                  kept, correct]).double()
        self.iterations += 1

    @contextlib.contextmanager
    def paused(self):
        """Evaluation and checkpointing do not count as training time."""
        paused_at = time.perf_counter()
        yield
        self.started += time.perf_counter() - paused_at

    def summarise(self, learning_rate: float) -> dict[str, float]:
        """The means since the last summary (one host synchronisation), then start afresh."""
        supervised, unsupervised, total, kept, correct = self.sums.tolist()
        if not math.isfinite(total):
            raise NonFiniteLossError("the training loss became NaN or infinite; the run is stopped")
        metrics = training_signal_metrics(
            (supervised, unsupervised, total, kept, self.unlabeled_images, correct),
            self.iterations, learning_rate, time.perf_counter() - self.started, self.data_wait_seconds,
        )
        self.sums.zero_()
        self.unlabeled_images = 0
        self.iterations = 0
        self.data_wait_seconds = 0.0
        self.started = time.perf_counter()
        return metrics


class OwnFixMatch:
    """FixMatch written from the paper; see fixmatch.py for the method."""

    name = "own"

    def train(self, run: RunInputs, sink: MetricsSink) -> RunResult:
        config = run.config
        device = resolve_device(config.device)
        dtype = autocast_dtype(config.precision, device)
        torch.manual_seed(config.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        model = WideResNet(run.data.num_classes, config.depth, config.widen_factor).to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        ema = WeightEMA(model, config.ema_decay)
        ema.module.eval()
        optimizer = build_optimizer(model, config.learning_rate, config.momentum, config.nesterov,
                                    config.weight_decay, device)
        scheduler = cosine_schedule(optimizer, config.iterations)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        batches = TrainingBatches(run.data, run.labeled_indices, config, device)
        forward_model = torch.compile(model) if config.compile else model

        state = {"iteration": 0, "best_top1": -1.0, "best_iteration": 0, "last_eval": {}, "confusion": None}
        checkpoint_path = Path(run.work_dir) / CHECKPOINT_NAME
        if checkpoint_path.exists():
            saved = torch.load(checkpoint_path, map_location=device, weights_only=False)
            model.load_state_dict(saved["model"])
            ema.load_state_dict(saved["ema"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            batches.load_state_dict(saved["batches"])
            torch.set_rng_state(saved["torch_rng"])
            state = saved["state"]

        test_images = torch.from_numpy(run.data.test_images).to(device).permute(0, 3, 1, 2).contiguous()
        test_labels = torch.from_numpy(run.data.test_labels).to(device)
        signals = TrainingSignals(device)
        model.train()  # evaluation uses the EMA copy, so the trained model never leaves train mode

        while state["iteration"] < config.iterations:
            waited_from = time.perf_counter()
            batch: Batch = batches.next()
            signals.data_wait_seconds += time.perf_counter() - waited_from

            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                if batch.weak_images is None:
                    loss = supervised_step(forward_model, batch.labeled_images, batch.labels)
                else:
                    loss = fixmatch_step(forward_model, batch.labeled_images, batch.labels, batch.weak_images,
                                         batch.strong_images, config.threshold, config.unsupervised_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss.total).backward()
            scaler.step(optimizer)
            scaler.update()
            learning_rate = optimizer.param_groups[0]["lr"]
            scheduler.step()
            ema.update(model)
            signals.add(loss, batch.unlabeled_true_labels)
            state["iteration"] += 1
            iteration = state["iteration"]
            last = iteration == config.iterations

            if iteration % config.log_interval == 0 or last:
                training_signals = signals.summarise(learning_rate)
                with signals.paused():
                    sink.log_metrics(training_signals, step=iteration)
            if iteration % config.eval_interval == 0 or last:
                with signals.paused():
                    self._evaluate_and_log(ema.module, test_images, test_labels, run, sink, state)
            if iteration % config.checkpoint_interval == 0 or last:
                if not torch.isfinite(signals.sums).all():
                    raise NonFiniteLossError("the training loss became NaN or infinite; the run is stopped")
                with signals.paused():
                    _save_atomically({
                        "model": model.state_dict(),
                        "ema": ema.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "batches": batches.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "state": state,
                    }, checkpoint_path)

        return RunResult(
            iterations=state["iteration"],
            final_metrics=dict(state["last_eval"]),
            best_top1=state["best_top1"],
            best_iteration=state["best_iteration"],
            confusion_matrix=state["confusion"],
            extra={"device": str(device), "autocast_dtype": str(dtype).replace("torch.", "") if dtype else "float32"},
        )

    @torch.no_grad()
    def _evaluate_and_log(self, ema_model, test_images, test_labels, run: RunInputs, sink: MetricsSink, state) -> None:
        config = run.config
        dtype = autocast_dtype(config.precision, test_images.device)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        with torch.autocast(test_images.device.type, dtype=dtype, enabled=dtype is not None):
            logits = torch.cat([
                ema_model(normalize(chunk).contiguous(memory_format=memory_format)).float()
                for chunk in test_images.split(config.eval_batch_size)
            ])
        metrics, confusion = classification_metrics(logits, test_labels, run.data.class_names)
        iteration = state["iteration"]
        if metrics[names.EVAL_TOP1] > state["best_top1"]:
            state["best_top1"], state["best_iteration"] = metrics[names.EVAL_TOP1], iteration
        state["last_eval"], state["confusion"] = metrics, confusion
        sink.log_metrics(metrics, step=iteration)
        sink.log_confusion_matrix(confusion, step=iteration)


def _save_atomically(checkpoint: dict, path: Path) -> None:
    """A kill during the write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(checkpoint, temporary)
    os.replace(temporary, path)
