"""What `bench run` shows in the terminal: a progress bar per running run under a grid line, the grid's header
and its summary table."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

import click

from harness.grid_runs import NOT_STARTED, RunOutcome
from harness.plan import GridPlan, PlannedRun

if TYPE_CHECKING:  # imported when the first bar is drawn
    from tqdm import tqdm


@dataclass
class RunBar:
    """One running run's tqdm bar, the line it holds, and whether it counts yet (a resumed run's bar starts counting
    at its checkpoint's iteration, from the first progress event)."""

    tqdm_bar: tqdm
    slot: int
    counting: bool = False


class GridBars:
    """A tqdm bar per running run (iteration, it/s, ETA, latest top-1) under a grid line; plain lines
    (one per evaluation and per run end) when stderr is not a terminal."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.interactive = sys.stderr.isatty()
        self.total = total
        self.counts = {"FINISHED": 0, "FAILED": 0, "KILLED": 0}
        self.running = 0
        self.grid_bar = tqdm(total=total, position=0, leave=False, unit="run", dynamic_ncols=True,
                             bar_format="grid {n}/{total} runs ended |{bar:20}| {desc}",
                             disable=not self.interactive or total == 0)
        self.slots: list[RunBar | None] = []
        self._update_grid()

    def _update_grid(self) -> None:
        self.grid_bar.set_description_str(f"{self.counts['FINISHED']} finished · {self.counts['FAILED']} failed · "
                                      f"{self.counts['KILLED']} killed · {self.running} running · "
                                      f"{self.total - self.grid_bar.n - self.running} waiting", refresh=True)

    def write(self, text: str) -> None:
        self.tqdm.write(text, file=sys.stderr)

    def run_started(self, name: str, total_iterations: int, note: str = "started"):
        self.running += 1
        self._update_grid()
        if not self.interactive:
            self.write(f"{name}: {note}")
            return None
        slot = next((index for index, taken in enumerate(self.slots) if taken is None), len(self.slots))
        if slot == len(self.slots):
            self.slots.append(None)
        bar = RunBar(self.tqdm(total=total_iterations, desc=name, position=slot + 1, leave=False, unit="it",
                               dynamic_ncols=True, postfix="starting" if note == "started" else note), slot)
        self.slots[slot] = bar
        return bar

    def run_progress(self, run_bar: RunBar | None, name: str, iteration: int, top1: float | None, evaluated: bool) -> None:
        top1_text = "top-1 –" if top1 is None else f"top-1 {100 * top1:.2f}%"
        if run_bar is None:
            if evaluated:
                self.write(f"{name}: iteration {iteration}, {top1_text}")
            return
        bar = run_bar.tqdm_bar
        if not run_bar.counting:  # a resumed run starts counting where its checkpoint left off
            run_bar.counting = True
            bar.reset(total=bar.total)
            bar.initial = bar.n = iteration
            bar.last_print_n = iteration
        else:
            bar.update(iteration - bar.n)
        bar.set_postfix_str(top1_text)

    def run_skipped(self) -> None:
        """A waiting run turned out finished (by another `bench run`)."""
        self.counts["FINISHED"] += 1
        self.grid_bar.update(1)
        self._update_grid()

    def run_ended(self, bar: RunBar | None, outcome: RunOutcome | None, log_tail: str) -> None:
        """`outcome` None: the run goes back to waiting (its worker is followed, or resumed, next)."""
        self.running -= 1
        if bar is not None:
            self.slots[bar.slot] = None
            bar.tqdm_bar.close()
        if outcome is None:
            self._update_grid()
            return
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        self.grid_bar.update(1)
        self._update_grid()
        top1 = "" if outcome.final_top1 is None else f", top-1 {100 * outcome.final_top1:.2f}%"
        line = f"{outcome.name}: {outcome.status}{top1} in {duration(outcome.wall_seconds)}"
        if outcome.message:
            line += f": {outcome.message}"
        self.write(line)
        if log_tail:
            self.write(f"  last lines of {outcome.log_path}:\n" + "\n".join("  | " + row for row in log_tail.splitlines()))

    def close(self) -> None:
        for bar in self.slots:
            if bar is not None:
                bar.tqdm_bar.close()
        self.grid_bar.close()


def print_grid_header(plan: GridPlan, pending: list[PlannedRun], outcomes: dict[str, RunOutcome], resumed: int) -> None:
    done = sum(outcome.previously_finished for outcome in outcomes.values())
    options = plan.options
    data_note = "" if plan.data.official else " (not the official full set)"
    click.echo(f"Grid: {len(plan.runs)} runs ({' × '.join([options.algorithm, options.impl, 'labels ' + options.labels, 'seeds ' + options.seeds])}), "
               f"preset {options.preset}, data {plan.data.source_dir or plan.data_dir}{data_note}.")
    click.echo(f"MLflow: {plan.store.tracking_uri}, experiment '{options.experiment}'.")
    if plan.not_implemented:
        click.echo(f"Left out: {plan.not_implemented}")
    if done:
        click.echo(f"{done} of {len(plan.runs)} runs already finished; skipping them.")
    if pending:
        click.echo(f"Running {len(pending)} run(s)" + (f", {resumed} resumed from an earlier attempt" if resumed else "")
                   + f", {plan.max_parallel} at a time{_gpu_words(plan)} (a run another `bench run` is training is "
                   "followed, not started twice).")


def _gpu_words(plan: GridPlan) -> str:
    """Where the workers run: ' on GPU 4, 5 (one each)', or round-robin when more run at a time than GPUs."""
    if not plan.gpu_ids:
        return " on the CPU"
    gpus = ", ".join(plan.gpu_ids)
    if plan.max_parallel <= len(plan.gpu_ids):
        return f" on GPU {gpus} (one run per GPU)"
    return f" on GPU {gpus}: more runs at a time than GPUs, so they share them round-robin"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def print_rows(rows: list[tuple[str, ...]]) -> None:
    """A plain table: the header, a rule, the rows."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    click.echo("")
    for index, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))


def print_summary(plan: GridPlan, outcomes: list[RunOutcome], experiment_id: str) -> None:
    rows = [("run", "status", "final top-1", "best top-1", "wall time", "MLflow run id")]
    for outcome in outcomes:
        status = "FINISHED (earlier)" if outcome.previously_finished else outcome.status
        rows.append((outcome.name, status, percent(outcome.final_top1), percent(outcome.best_top1),
                     duration(outcome.wall_seconds), outcome.run_id))
    print_rows(rows)
    done = sum(outcome.previously_finished for outcome in outcomes)
    if done:
        click.echo(f"\n{done} run(s) already finished (no training).")
    for outcome in outcomes:
        if outcome.status not in ("FINISHED", NOT_STARTED) and outcome.log_path is not None:
            click.echo(f"{outcome.name} {outcome.status}: {outcome.message or 'see its log'} (log: {outcome.log_path})")
    if any(outcome.status in ("FAILED", "KILLED", NOT_STARTED, "UNRECORDED") for outcome in outcomes):
        click.echo("Run the same command again to resume unfinished runs from their last checkpoint.")
    if plan.store.is_server:
        where = f"{plan.store.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}"
    else:
        default_output = Path("runs").resolve() == plan.output_dir
        ui = "bench ui" + ("" if default_output or not plan.store.embedded else f" --output-dir {plan.options.output_dir}")
        if not plan.store.embedded:
            ui += f" --tracking-uri {plan.store.tracking_uri}"
        where = f"`{ui}`"
    click.echo(f"Look at the runs: {where} (experiment '{plan.options.experiment}', id {experiment_id}); "
               f"splits and checkpoints are under {plan.output_dir}.")

