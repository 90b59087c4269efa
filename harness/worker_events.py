"""The worker's side of its pipe to the runner: the progress events it sends (JSON lines), and the stop (SIGTERM,
or a Ctrl-C's SIGINT) that ends its run KILLED, with what the stop kept and what it costs."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import IO, Mapping

from implementations import interface
from implementations.cadence import Throttle
from implementations.common import write_text_atomically


STOP_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)"}  # how a run's stop is named; other signals by their own name


class Stopped(BaseException):
    """SIGTERM or SIGINT reached the worker: the run ends KILLED, its checkpoint kept."""


class RunnerEvents:
    """JSON lines to the runner; the latest progress event also in the work dir, for a runner that attaches.

    The sink's listener: a progress event after every log window and evaluation, and in between as training
    goes on, the first at once and then every cadence.PROGRESS_SECONDS, so that the runner's bar shows the rate and
    an estimate of the time left from the first iterations.
    """

    def __init__(self, stream: IO[str], total_iterations: int, progress_path: Path | None = None):
        self.stream = stream
        self.total_iterations = total_iterations
        self.progress_path = progress_path
        self.latest_top1: float | None = None
        self.last_iteration = 0
        self.last_checkpoint: int | None = None
        self.progress_reports = Throttle()
        self.stop_signal: str | None = None  # set by `stop`, the SIGTERM and SIGINT handler

    def stop(self, signal_number, _frame) -> None:
        """End the run: raise Stopped wherever the signal lands, and remember it for the next iteration.

        Python drops an exception raised while it runs a weakref callback or a __del__ (it prints "Exception
        ignored in ..."): a signal landing there would be lost, and the run would train on. So every call from
        the training loop checks the flag as well.
        """
        # Ignore further signals while the run is being ended, so the cleanup itself is not interrupted.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.stop_signal = STOP_NAMES.get(signal_number, signal.Signals(signal_number).name)
        raise Stopped(self.stop_signal)

    def _stop_if_signalled(self) -> None:
        if self.stop_signal is not None:
            raise Stopped(self.stop_signal)

    def send(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields})
        if event == "progress" and self.progress_path is not None:
            try:
                write_text_atomically(self.progress_path, line)
            except OSError:
                pass
        if self.stream is None:
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except OSError:  # nobody listens any more (the runner is gone): the run itself goes on
            self.stream = None

    def on_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.last_iteration = max(self.last_iteration, int(step))
        if interface.EVAL_TOP1 in metrics:
            self.latest_top1 = float(metrics[interface.EVAL_TOP1])
        self._send_progress(evaluated=interface.EVAL_TOP1 in metrics)
        self._stop_if_signalled()

    def on_progress(self, iteration: int) -> None:
        self.last_iteration = iteration
        if self.progress_reports.due():
            self._send_progress(evaluated=False)
        self._stop_if_signalled()

    def on_checkpoint(self, iteration: int) -> None:
        self.last_checkpoint = iteration or None  # 0: a run that starts afresh has none
        self.last_iteration = max(self.last_iteration, iteration)  # a resumed run starts there
        if iteration:
            self._send_progress(evaluated=False)  # the runner learns what a kill would keep
        self._stop_if_signalled()

    def _send_progress(self, evaluated: bool) -> None:
        self.progress_reports.restart()
        self.send("progress", iteration=self.last_iteration, total=self.total_iterations, top1=self.latest_top1,
                  evaluated=evaluated, checkpoint=self.last_checkpoint)

    def stopped_message(self, stop: "Stopped") -> str:
        """What a stop kept and what it costs, as the run's record of why it ended."""
        return self.ended_message(f"stopped by {stop}")

    def ended_message(self, cause: str) -> str:
        """`cause` at the last iteration, and what the run keeps and what resuming it costs."""
        return ended_words(cause, self.last_iteration, self.last_checkpoint)


FREE_SPACE = "; free space there and run the same command again"  # after a full disk's ended_words


def ended_words(cause: str, last_iteration: int, last_checkpoint: int | None) -> str:
    """`cause` at `last_iteration`, and what the run keeps and what resuming it costs: the worker's record of why
    its run ended, and the runner's when the worker could not say it."""
    message = f"{cause} at iteration {last_iteration}"
    if not last_checkpoint:
        return message + " before its first checkpoint: it starts from the beginning when resumed"
    lost = last_iteration - last_checkpoint
    return (message + f"; its checkpoint of iteration {last_checkpoint} is kept"
            + (f", the {lost} iterations after it are trained again when the run resumes" if lost else ""))
