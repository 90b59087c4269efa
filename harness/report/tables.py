"""The report's numbers: per-run summaries, their mean ± std over seeds, paired own − torchssl
differences, and our numbers beside the published ones. Every table names exactly what it shows.

Accuracies are stored in MLflow as fractions and shown here as percentages with two decimals.
"""

from __future__ import annotations

import pandas as pd

from harness.report.anchors import (
    PUBLISHED,
)
from harness.report.collect import ReportData
from harness.report.formatting import (
    TOP1_BEST,
    TOP1_LAST,
    TOP1_MEDIAN,
    Table,
    count,
    flag_notes,
    fraction,
    groups,
    iterations_text,
    marks_of,
    percent,
    seeds_text,
    with_marks,
)
from harness.report.summaries import (
    FEW_EVALUATIONS_MARK,
    MEDIAN_WINDOW,
    Section,
    impl_order,
)
from implementations import interface


def top1_table(section: Section) -> Table:
    rows = []
    few_evaluations = False
    for impl, labels, group in groups(section.summaries):
        marks = marks_of(group)
        median_marks = marks
        if (group["evaluations_in_median"] < MEDIAN_WINDOW).any():
            median_marks += FEW_EVALUATIONS_MARK
            few_evaluations = True
        rows.append([
            impl, str(labels), seeds_text(group), iterations_text(group),
            with_marks(percent(group["top1_last"]), marks),
            with_marks(percent(group["top1_best"]), marks),
            ", ".join(count(int(step)) for step in group["best_iteration"]),
            with_marks(percent(group["top1_median_window"]), median_marks),
            _window_text(group),
        ])
    notes = flag_notes(section.summaries, section.runs)
    if few_evaluations:
        counts = sorted(set(section.summaries.loc[section.summaries["evaluations_in_median"] < MEDIAN_WINDOW,
                                                  "evaluations_in_median"]))
        notes.append(
            f"{FEW_EVALUATIONS_MARK} Fewer than {MEDIAN_WINDOW} evaluations lie in the window "
            f"({', '.join(map(str, counts))}): the median is over those."
        )
    notes += _evaluation_schedule_notes(section.summaries)
    notes += _set_aside_notes(section)
    notes += [
        "Top-1 accuracy: share of test images whose highest-scoring class is the true class, EMA model "
        "(not macro precision, which this report does not show). Mean ± sample standard deviation (n − 1) over "
        "seeds; '± n/a' where only one seed finished.",
        "Last: at the final evaluation. Best: the highest of all evaluations, selected on the test set, so "
        "optimistic (TorchSSL's protocol). Median: over every evaluation in the same final window of iterations for "
        f"every implementation, the last {MEDIAN_WINDOW} evaluation intervals of training (the FixMatch paper's "
        f"protocol: its last {MEDIAN_WINDOW} checkpoints, 1,024 iterations apart).",
    ]
    return Table(
        "Top-1 accuracy (%) of the EMA model on the test set, mean ± std over seeds",
        ["implementation", "labels", "seeds (n)", "iterations run", TOP1_LAST, TOP1_BEST,
         "iteration of best, per seed", TOP1_MEDIAN, "median window: iterations (evaluations in it)"],
        rows, notes,
    )


def _window_text(group: pd.DataFrame) -> str:
    windows = sorted({window for window in group["median_window"] if window})
    evaluations = sorted(set(group["evaluations_in_median"]))
    spread = "–".join(str(n) for n in (evaluations[0], evaluations[-1])) if len(evaluations) > 1 else str(evaluations[0])
    if not windows:
        return f"last {MEDIAN_WINDOW} evaluations (eval interval not recorded) ({spread})"
    return "; ".join(f"{count(first)}–{count(last)}" for first, last in windows) + f" ({spread})"


def _set_aside_notes(section: Section) -> list[str]:
    if section.set_aside.empty:
        return []
    described = ", ".join(f"{run.run_name} (`{run.run_id[:8]}`)" for run in section.set_aside.itertuples())
    return [f"Set aside: {len(section.set_aside)} older finished run(s) of an implementation, label count and seed "
            f"reported here from a newer run (e.g. a rerun with another speed setting): {described}."]


def _evaluation_schedule_notes(summaries: pd.DataFrame) -> list[str]:
    """Say so when implementations evaluated at different iterations (TorchSSL has its own schedule)."""
    notes = []
    for labels in sorted(summaries["labels"].unique()):
        at_labels = summaries[summaries["labels"] == labels]
        schedules = {impl: sorted({step for steps in group["evaluation_steps"] for step in steps})
                     for impl, group in at_labels.groupby("impl")}
        if len({tuple(steps) for steps in schedules.values()}) > 1:
            described = "; ".join(f"{impl} {_steps_text(schedules[impl])}" for impl in impl_order(schedules))
            notes.append(f"{labels} labels: the implementations evaluated at different iterations ({described}): "
                         "best selects among different checkpoints; the median is over the same window of iterations "
                         "for each, whatever its evaluations in it.")
    return notes


def _steps_text(steps: list[int]) -> str:
    if len(steps) <= 6:
        return "at " + ", ".join(count(step) for step in steps)
    return f"{len(steps)} times, {count(steps[0])} to {count(steps[-1])}"


def other_metrics_table(section: Section) -> Table:
    rows = []
    for impl, labels, group in groups(section.summaries):
        marks = marks_of(group)
        rows.append([
            impl, str(labels), seeds_text(group),
            with_marks(percent(group["top5_last"]), marks),
            with_marks(percent(group["f1_last"]), marks),
            with_marks(fraction(group["auc_last"]), marks),
        ])
    notes = flag_notes(section.summaries, section.runs) + [
        "All at the last evaluation, EMA model, test set; mean ± sample standard deviation over seeds. Macro: the "
        "unweighted mean over classes. AUC: one-vs-one, macro-averaged, on the 0–1 scale.",
    ]
    return Table(
        "Other test-set metrics at the last evaluation, mean ± std over seeds",
        ["implementation", "labels", "seeds (n)", "top-5 accuracy %", "macro F1 %", "one-vs-one macro AUC (0–1)"],
        rows, notes,
    )


def published_table(section: Section) -> Table | None:
    """Our numbers beside the published anchors of the section's algorithm, each in the anchor's own protocol."""
    anchors = PUBLISHED.get(section.algorithm, ())
    if not anchors:
        return None
    summaries = section.summaries
    impls = impl_order(summaries["impl"])
    heading = {"top1_median_window": TOP1_MEDIAN, "top1_best": TOP1_BEST}

    def ours(labels: int, impl: str, column: str) -> str:
        group = summaries[(summaries["labels"] == labels) & (summaries["impl"] == impl)]
        if group.empty:
            return "not run"
        marks = marks_of(group)
        if column == "top1_median_window" and (group["evaluations_in_median"] < MEDIAN_WINDOW).any():
            marks += FEW_EVALUATIONS_MARK
        return with_marks(f"{percent(group[column])} (n={len(group)})", marks)

    columns, rows = ["labels"], []
    for anchor in anchors:
        columns += [f"{anchor.source}: top-1 %, {anchor.protocol}"]
        columns += [f"ours, {impl}: {heading[anchor.statistic]}" for impl in impls]
    label_counts = list(anchors[0].top1)
    for labels in label_counts:
        row = [str(labels)]
        for anchor in anchors:
            row.append("{:.2f} ± {:.2f}".format(*anchor.top1[labels]))
            row += [ours(labels, impl, anchor.statistic) for impl in impls]
        rows.append(row)
    shown = summaries[summaries["labels"].isin(label_counts)]
    notes = flag_notes(shown, section.runs) if not shown.empty else []
    if not shown.empty and (shown["evaluations_in_median"] < MEDIAN_WINDOW).any() and \
            any(anchor.statistic == "top1_median_window" for anchor in anchors):
        notes.append(f"{FEW_EVALUATIONS_MARK} Fewer than {MEDIAN_WINDOW} evaluations exist: median over all of them.")
    notes.append(
        "Published numbers are CIFAR-10 with WRN-28-2 after 1,048,576 iterations; each of our columns uses the same "
        "protocol as the published column before it. The FixMatch paper's ± is over 5 folds, TorchSSL's over 3 "
        "seeds, ours over n seeds."
    )
    return Table("Ours beside the published numbers (top-1 accuracy %, CIFAR-10)", columns, rows, notes)


def settings_table(section: Section, data: ReportData) -> Table | None:
    """Every setting the implementations of this section choose for themselves, per implementation, as each run
    recorded it in MLflow (a TorchSSL run records TorchSSL's fixed choices as `torchssl_fixed.*` params), and
    when each evaluated."""
    from implementations.ledger import LEDGER

    impls = impl_order(section.runs["impl"])
    rows = []
    for entry in LEDGER:
        if not entry.field:
            continue
        cells = [_recorded_values(data, section.runs[section.runs["impl"] == impl], entry.field) for impl in impls]
        rows.append([entry.topic, entry.field, *cells])
    for stage in ("training", "evaluation"):  # implementations/tf32.py
        rows.append([f"TF32 during {stage} (fp32 convolutions and matrix multiplies on a GPU)", f"(tf32_{stage} tag)",
                     *[", ".join(sorted(set(section.runs.loc[section.runs["impl"] == impl, f"tf32_{stage}"])))
                       for impl in impls]])
    rows.append(["when the EMA model is evaluated", "(evaluation steps)",
                 *[_steps_text(sorted({step for steps in section.summaries.loc[section.summaries["impl"] == impl,
                                                                                 "evaluation_steps"]
                                       for step in steps})) for impl in impls]])
    return Table(
        "Settings each implementation chose for itself, as recorded by its runs",
        ["setting", "config field", *impls], rows,
        ["Every other setting is the section's protocol, the same for all implementations (line above). A cell "
         "lists every value its runs recorded; own-as-torchssl is own with TorchSSL's choice in every row. The "
         "difference ledger at the end of the report gives each choice with its source."],
    )


def method_tables(section: Section, data: ReportData) -> list[Table]:
    """The method as each implementation of this section ran it, side by side: one table per algorithm, rows from
    the method sheets the runs recorded (implementations/method_sheet.py); a cell lists every distinct text its
    runs recorded."""
    impls = impl_order(section.runs["impl"])
    sheets: dict[str, dict[str, list[dict]]] = {}  # algorithm -> impl -> sheets
    for _, run in section.runs.iterrows():
        sheet = data.method_sheets.get(run["run_id"])
        if sheet is not None:
            sheets.setdefault(sheet["algorithm"], {}).setdefault(run["impl"], []).append(sheet)
    tables = []
    for algorithm, by_impl in sheets.items():
        columns = [impl for impl in impls if impl in by_impl]
        aspects = list(dict.fromkeys(aspect for sheets_of in by_impl.values() for sheet in sheets_of
                                     for aspect, _ in sheet["aspects"]))
        texts = [[" / ".join(dict.fromkeys(dict(sheet["aspects"]).get(aspect, "–") for sheet in by_impl[impl]))
                  for impl in columns] for aspect in aspects]
        texts.append(["; ".join(dict.fromkeys(path for sheet in by_impl[impl] for path in sheet["files"]))
                      for impl in columns])
        rows = [[aspect, cells[0], *[f"same as {columns[0]}" if cell == cells[0] else cell for cell in cells[1:]]]
                for aspect, cells in zip([*aspects, "where it lives"], texts)]
        missing = sorted(set(impls) - set(columns))
        notes = ["Written by each run from the configuration it trained with; TorchSSL's files are in its checkout "
                 "at the commit under “How these numbers were obtained”."]
        if missing:
            notes.append(f"{', '.join(missing)}: the runs recorded no method sheet (made before ssl-bench recorded one).")
        tables.append(Table(f"Method as implemented: {algorithm}", ["aspect", *columns], rows, notes))
    return tables


def _recorded_values(data: ReportData, runs: pd.DataFrame, field_name: str) -> str:
    values = []
    for run_id in runs["run_id"]:
        params = data.params.get(run_id, {})
        value = params.get(field_name, params.get(f"torchssl_fixed.{field_name}"))
        values.append("not recorded" if value is None else value)
    return ", ".join(sorted(set(values))) or "–"


def ledger_table() -> Table:
    """The difference ledger (implementations/ledger.py): what own and TorchSSL do differently, and the paper."""
    from implementations.ledger import LEDGER

    rows = [[entry.area, entry.topic, entry.paper, entry.own, entry.torchssl,
             "yes" if entry.can_change_accuracy else "no",
             (f"`{entry.field}` = {entry.torchssl_value!r}" if entry.differs else "same") if entry.field
             else ("same" if not entry.differs else entry.why_no_switch)]
            for entry in LEDGER]
    return Table(
        "The difference ledger: own's default (the paper's choices) against TorchSSL at its pinned commit",
        ["area", "topic", "paper", "own", "TorchSSL", "can change accuracy", "switch to TorchSSL's choice"], rows,
        ["`own-as-torchssl` sets every switch to TorchSSL's choice; `bench parity` checks that configuration step "
         "by step against TorchSSL's own code (same initial weights and batches). `bench parity --list` prints "
         "this ledger."],
    )


def unfinished_table(data: ReportData) -> Table | None:
    unfinished = data.unfinished
    if unfinished.empty:
        return None
    rows = []
    for run in unfinished.itertuples():
        top1 = data.history(run.run_id, interface.EVAL_TOP1)
        last = f"{100 * top1.iloc[-1]:.2f} (iteration {count(int(top1.index[-1]))})" if not top1.empty else "none yet"
        planned = count(int(run.iterations_planned)) if not pd.isna(run.iterations_planned) else "?"
        reason = run.error if len(run.error) <= 160 else run.error[:157] + "..."
        rows.append([run.impl, str(run.labels), str(run.seed), run.preset, run.status,
                     f"{count(int(run.iterations_run))} of {planned}", last, reason or "—", f"`{run.run_id}`"])
    return Table(
        "Unfinished runs (not in any table above or average)",
        ["implementation", "labels", "seed", "preset", "MLflow status", "iterations reached", "last top-1 %",
         "why it stopped (as recorded)", "run id"],
        rows,
        ["RUNNING: still training, or its process died without ending the run. "
         "FAILED/KILLED: stopped; `bench run` with the same arguments resumes it from its last checkpoint."],
    )
