"""What the hooks (hooks.py) observe of a TorchSSL run from outside, and what they send to the adapter: the running
iteration's signals in our log window, the evaluations, the checkpoints (child.py starts it)."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from implementations.cadence import CheckpointSchedule, Throttle, TrainingClock, log_due
from implementations.torchssl.algorithms import TorchSSLAlgorithm
from implementations.torchssl.metrics import eval_metrics
from implementations.training_window import TrainingWindow

EXIT_FAILED, EXIT_NON_FINITE = 1, 3


class NonFiniteTraining(RuntimeError):
    pass


class TimedBatches:
    """A TorchSSL DataLoader, iterated with the time spent waiting for each batch noted, and ended after `limit` batches."""

    def __init__(self, loader, limit: int, on_batch):
        self.loader = loader
        self.limit = limit
        self.on_batch = on_batch

    def __iter__(self):
        started = time.perf_counter()
        iterator = iter(self.loader)
        for _ in range(self.limit):
            batch = next(iterator, None)
            if batch is None:
                return
            self.on_batch(batch, time.perf_counter() - started)
            yield batch
            started = time.perf_counter()

    def __len__(self) -> int:
        return min(self.limit, len(self.loader))


class RunObserver:
    """What the hooks share: the running iteration's signals in the log window, the cadence, the last evaluation."""

    def __init__(self, spec: dict, channel, train_labels: np.ndarray, algorithm: TorchSSLAlgorithm):
        self.channel = channel
        self.algorithm = algorithm
        self.log_interval = int(spec["log_interval"])
        self.checkpoints = CheckpointSchedule(int(spec["checkpoint_interval"]), float(spec["checkpoint_minutes"]))
        self.checkpoint_name = spec["checkpoint_name"]  # the one it resumes from
        self.progress_reports = Throttle()  # the iteration just trained goes to the parent
        self.class_names = tuple(spec["class_names"])
        self.expected_labeled = np.load(spec["labeled_indices"])
        self.parent_pid = int(spec["parent_pid"])
        self.train_labels = torch.as_tensor(train_labels, dtype=torch.int64)
        self.torchssl_model = None  # the instance of the algorithm's class, e.g. FixMatch
        self.args = None
        self.window: TrainingWindow | None = None
        self.start_iteration = 0
        self.iterations_done = 0
        self.trained_here = False
        self.data_wait = 0.0
        self.learning_rate = float("nan")  # the rate the running iteration's step uses
        self.clock = TrainingClock()
        self.confusion_counts: np.ndarray | None = None
        self.scores: tuple[list, list] | None = None  # (true labels, softmax outputs) of the running evaluation
        self.last_evaluation: tuple[dict, np.ndarray] | None = None
        self.last_sent_evaluation_step: int | None = None
        self.train_return: dict | None = None

    def paused(self):
        """Evaluation and checkpointing do not count as training time."""
        return self.clock.paused()

    def attach(self, torchssl_model, args) -> None:
        """The algorithm's `train` starts: its state (resumed or not) is final now."""
        self.torchssl_model, self.args = torchssl_model, args
        # TorchSSL's checkpoint at the end of training says K+1 (it saves `it + 1` after the loop has
        # counted to K): a finished run resumed again has trained K.
        self.start_iteration = self.iterations_done = min(int(torchssl_model.it), int(args.num_train_iter))
        device = next(torchssl_model.model.parameters()).device
        self.window = TrainingWindow(self.class_names, device, self.clock)
        self.train_labels = self.train_labels.to(device)
        remaining = max(0, int(args.num_train_iter) - self.start_iteration)
        loaders = dict(torchssl_model.loader_dict)
        trained_on = len(loaders["train_lb"].dataset)
        if self.algorithm.given_labeled_split_only and trained_on != len(self.expected_labeled):
            raise RuntimeError(f"TorchSSL trains on {trained_on} labeled images, not on our {len(self.expected_labeled)}")
        for name in ("train_lb", "train_ulb"):  # fullysupervised has no unlabeled loader
            if name in loaders:
                loaders[name] = TimedBatches(loaders[name], remaining, self._batch_waited)
        torchssl_model.loader_dict = loaders
        self.learning_rate = torchssl_model.optimizer.param_groups[0]["lr"]
        self.channel.send("started", start_iteration=self.start_iteration)
        self.clock.restart()

    def _batch_waited(self, batch, waited: float) -> None:
        self.data_wait += waited

    def end_iteration(self, loop: dict) -> None:
        """After TorchSSL's optimizer, scheduler and EMA steps of one iteration; `loop` holds its loop's variables."""
        torchssl_model = self.torchssl_model
        self.iterations_done = done = int(torchssl_model.it) + 1
        self.trained_here = True
        self._add_signals(self.algorithm.signals(loop, self.args), done)
        used_learning_rate = self.learning_rate
        self.learning_rate = torchssl_model.optimizer.param_groups[0]["lr"]  # after the scheduler's step: the next one's
        if self.progress_reports.due():
            self.channel.send("progress", step=done)
            self.progress_reports.restart()
        if log_due(done, self.log_interval, self.args.num_train_iter):
            self.channel.send("metrics", step=done, metrics=self.window.summarise(used_learning_rate))
        if self.checkpoints.due(done):  # TorchSSL's own loop saves the last one
            self.checkpoints.written()  # also when the algorithm saves nothing yet
            torchssl_model.save_model(self.checkpoint_name, os.path.join(self.args.save_dir, self.args.save_name))
        if os.getppid() != self.parent_pid:
            os._exit(EXIT_FAILED)  # the adapter is gone (killed): nobody reads our numbers any more

    def _add_signals(self, signals, iteration: int) -> None:
        if not torch.isfinite(signals.total_loss.detach()):  # TorchSSL synchronises every iteration anyway
            raise NonFiniteTraining(f"TorchSSL's training loss became NaN or infinite at iteration {iteration}; "
                                    "the run is stopped")
        true_labels = None
        if signals.unlabeled_indices is not None:
            true_labels = self.train_labels[signals.unlabeled_indices.to(self.train_labels.device)]
        self.window.add(iteration, signals.supervised_loss, signals.unsupervised_loss, signals.total_loss,
                        kept=signals.kept, pseudo_labels=signals.pseudo_labels, true_labels=true_labels,
                        class_thresholds=signals.class_thresholds)
        self.window.data_wait_seconds += self.data_wait
        self.data_wait = 0.0

    def checkpointed(self) -> None:
        self.channel.send("checkpoint", step=self.iterations_done)

    def on_evaluation(self, torchssl_eval: dict) -> None:
        counts, self.confusion_counts = self.confusion_counts, None
        scores, self.scores = self.scores, None
        metrics = eval_metrics(torchssl_eval, counts, self.class_names, scores)
        self.last_evaluation = (metrics, counts)
        step = self.iterations_done
        # Before the first iteration of this process it is TorchSSL's check of a loaded checkpoint (already
        # logged when that step ran); the final evaluation repeats the last in-loop one when K is on the schedule.
        if not self.trained_here or step == self.last_sent_evaluation_step:
            return
        self.last_sent_evaluation_step = step
        self.channel.send("evaluation", step=step, metrics=metrics, confusion=counts.tolist())
