"""When a training loop logs, checkpoints and says how far it is, and how it counts training time: one rule for
own's loop (own/trainer.py), TorchSSL's child (torchssl/child.py) and the worker (harness/worker.py). No torch."""

from __future__ import annotations

import contextlib
import time

PROGRESS_SECONDS = 2.0  # between two progress reports of a running iteration count


def log_due(iteration: int, log_interval: int, iterations: int) -> bool:
    """The training signals are logged every `log_interval` iterations and at the last one."""
    return iteration % log_interval == 0 or iteration == iterations


class Throttle:
    """Due at once, then at most every `seconds`."""

    def __init__(self, seconds: float = PROGRESS_SECONDS):
        self.seconds = seconds
        self.next_at = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def restart(self) -> None:
        self.next_at = time.monotonic() + self.seconds


class CheckpointSchedule:
    """A checkpoint every `interval` iterations, and also once `minutes` have passed since the last one, so that
    an interruption costs minutes whatever the speed."""

    def __init__(self, interval: int, minutes: float):
        self.interval = interval
        self.seconds = 60 * minutes
        self.last_written = time.monotonic()

    def due(self, iteration: int, final: bool = False) -> bool:
        return final or iteration % self.interval == 0 or time.monotonic() - self.last_written > self.seconds

    def written(self) -> None:
        self.last_written = time.monotonic()


class TrainingClock:
    """Training seconds since the last restart; evaluation and checkpointing run `paused()` and do not count
    (pauses may nest: only the outermost one is subtracted)."""

    def __init__(self):
        self.started = time.perf_counter()
        self._depth = 0

    @contextlib.contextmanager
    def paused(self):
        self._depth += 1
        paused_at = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.started += time.perf_counter() - paused_at

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def restart(self) -> None:
        self.started = time.perf_counter()
