"""Time to accuracy: for each implementation, the first evaluation at which the EMA model's top-1 reaches a target,
as an iteration and as training time.

Training time is the worker's own: the sum over its log windows of iterations / `train/iterations_per_second`, a
clock that stops while the run evaluates and checkpoints (implementations/cadence.py), so evaluation is not in it.
The run's wall time in MLflow (start to end) is shown apart: it adds evaluation, checkpoints, start-up and any time
between the attempts of a resumed run.

Targets (`bench report --targets`): `0.8x` is 0.8 times the best final top-1 of the section (the highest top-1 at
the last evaluation of any of its runs), `40` is a top-1 of 40 %, `published` the published number of the method
and label count where one exists (report/anchors.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.report.anchors import PUBLISHED
from harness.report.collect import ReportData, ReportError
from harness.report.formatting import Table, count
from harness.report.summaries import Section, impl_order
from implementations import interface

DEFAULT_TARGETS = "0.5x,0.8x,0.9x,published"


@dataclass(frozen=True)
class Target:
    text: str  # as the user wrote it
    relative: float | None = None  # times the section's best final top-1
    top1: float | None = None  # a fraction
    published: bool = False


def parse_targets(text: str) -> list[Target]:
    targets = []
    for part in (part.strip() for part in text.split(",")):
        try:
            if part == "published":
                targets.append(Target(part, published=True))
            elif part.endswith("x") and 0 < float(part[:-1]) <= 1:
                targets.append(Target(part, relative=float(part[:-1])))
            elif 0 < float(part) <= 100:
                targets.append(Target(part, top1=float(part) / 100))
            else:
                raise ValueError(part)
        except ValueError:
            raise ReportError(f"--targets takes a comma-separated list of Nx (0 < N ≤ 1: N times the section's best "
                              f"final top-1), top-1 values in % (0 < v ≤ 100) or 'published', not '{part}'.") from None
    if len({target.text for target in targets}) != len(targets):
        raise ReportError(f"--targets lists a target twice: '{text}'.")
    return targets


def training_seconds(data: ReportData, run_id: str) -> pd.Series:
    """Training seconds done by each logged step (0 at step 0), from the windows' iterations per second."""
    rate = data.history(run_id, interface.TRAIN_ITERATIONS_PER_SECOND)
    rate = rate[rate > 0]
    if rate.empty:
        return pd.Series(dtype=float)
    steps = rate.index.to_numpy()
    windows = np.diff(np.concatenate([[0], steps]))
    return pd.Series(np.concatenate([[0.0], np.cumsum(windows / rate.to_numpy())]), index=[0, *steps])


def seconds_at(seconds: pd.Series, step: int) -> float:
    """Training seconds by `step`, between log steps by linear interpolation."""
    return float(np.interp(step, seconds.index.to_numpy(), seconds.to_numpy())) if not seconds.empty else np.nan


def _target_values(section: Section, targets: list[Target], labels: int) -> list[tuple[str, float]]:
    at_labels = section.summaries[section.summaries["labels"] == labels]
    best_final = float(at_labels["top1_last"].max())
    values = []
    for target in targets:
        if target.relative is not None:
            values.append((f"{target.text} = {100 * target.relative * best_final:.2f} %", target.relative * best_final))
        elif target.top1 is not None:
            values.append((f"{100 * target.top1:g} %", target.top1))
        else:
            values += [(f"{anchor.source} {anchor.top1[labels][0]:.2f} %", anchor.top1[labels][0] / 100)
                       for anchor in PUBLISHED.get(section.algorithm, ()) if labels in anchor.top1]
    return values


def reached(data: ReportData, run_id: str, top1: float, seconds: pd.Series) -> tuple[int, float] | None:
    """(iteration, training seconds) of the run's first evaluation at or above `top1`; None if none reached it.
    `seconds`: the run's training_seconds."""
    history = data.history(run_id, interface.EVAL_TOP1)
    hits = history[history >= top1]
    if hits.empty:
        return None
    step = int(hits.index[0])
    return step, seconds_at(seconds, step)


def time_to_accuracy_table(section: Section, data: ReportData, targets: list[Target]) -> Table | None:
    clocks = {run_id: training_seconds(data, run_id) for run_id in section.summaries["run_id"]}
    walls = _run_wall_seconds(data)
    rows = []
    for labels in sorted(section.summaries["labels"].unique()):
        for target_words, top1 in _target_values(section, targets, int(labels)):
            for impl in impl_order(section.summaries["impl"]):
                runs = section.summaries[(section.summaries["labels"] == labels) & (section.summaries["impl"] == impl)]
                if runs.empty:
                    continue
                hits = [found for found in (reached(data, run_id, top1, clocks[run_id]) for run_id in runs["run_id"])
                        if found]
                rows.append([str(labels), target_words, impl, f"{len(hits)} of {len(runs)}",
                             _median(hits, 0, lambda step: count(int(round(step)))), _median(hits, 1, _duration),
                             _duration(np.median(walls[runs["run_id"]].to_numpy()))])
    if not rows:
        return None
    return Table(
        "Time to accuracy: the first evaluation at which the EMA model's top-1 reaches each target",
        ["labels", "target top-1", "implementation", "seeds that reach it", "iteration (median)",
         "training time (median)", "whole run, wall (median)"],
        rows,
        ["Iteration and training time are the medians over the seeds that reach the target. Training time is the "
         "worker's training clock (evaluation and checkpoints not counted), summed from its log windows; the "
         "whole run's wall time adds evaluation, checkpoints, start-up and any time between the attempts of a "
         "resumed run. A target is only as fine as the evaluation interval: a run reaches it somewhere between "
         "its previous evaluation and this one."],
    )


def _median(hits: list[tuple[int, float]], index: int, words) -> str:
    return words(float(np.median([hit[index] for hit in hits]))) if hits else "not reached"


def _run_wall_seconds(data: ReportData) -> pd.Series:
    """Each run's MLflow wall time (start to end), by run id; NaN where no start was recorded."""
    runs = data.runs.set_index("run_id")
    return ((runs["end_time"] - runs["start_time"]) / 1000).where(runs["start_time"] > 0)


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(int(round(seconds)), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute:02d} m" if hours else f"{minute} m {second:02d} s"
