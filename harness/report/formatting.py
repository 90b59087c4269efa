"""How the report writes its numbers (percentages, mean ± std over seeds, the marks and their notes), and the
Table they go in."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from harness.report.collect import PAPER_ITERATIONS
from harness.report.summaries import (
    MEDIAN_WINDOW,
    SHORT_MARK,
    UNOFFICIAL_MARK,
    impl_order,
)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def percent(values: pd.Series) -> str:
    """mean ± sample std (n − 1) over seeds, in percent."""
    values = values.dropna()
    if values.empty:
        return "not logged"
    mean = 100 * values.mean()
    if len(values) < 2:
        return f"{mean:.2f} ± n/a"
    return f"{mean:.2f} ± {100 * values.std(ddof=1):.2f}"


def fraction(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "not logged"
    if len(values) < 2:
        return f"{values.mean():.4f} ± n/a"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def count(value: int) -> str:
    return f"{value:,}"


def marks_of(group: pd.DataFrame) -> str:
    marks = ""
    if (group["iterations_run"] < PAPER_ITERATIONS).any():
        marks += SHORT_MARK
    if (group["data_official"] != True).any():  # noqa: E712 (None = not recorded also counts)
        marks += UNOFFICIAL_MARK
    return marks


def with_marks(text: str, marks: str) -> str:
    return f"{text} {marks}" if marks and text != "not logged" else text


def seeds_text(group: pd.DataFrame) -> str:
    seeds = sorted(group["seed"])
    return f"{len(seeds)} ({', '.join(map(str, seeds))})"


def iterations_text(group: pd.DataFrame) -> str:
    low, high = int(group["iterations_run"].min()), int(group["iterations_run"].max())
    return count(low) if low == high else f"{count(low)}–{count(high)}"


def flag_notes(summaries: pd.DataFrame, section_runs: pd.DataFrame | None = None) -> list[str]:
    notes = []
    short = sorted(set(summaries.loc[summaries["iterations_run"] < PAPER_ITERATIONS, "iterations_run"]))
    if short:
        trained = " or ".join(count(n) for n in short)
        notes.append(
            f"{SHORT_MARK} Trained {trained} of the paper's {count(PAPER_ITERATIONS)} iterations: "
            "not comparable to published numbers."
        )
    unofficial = summaries[summaries["data_official"] != True]  # noqa: E712
    if not unofficial.empty:
        identities = "unrecorded"
        if section_runs is not None:
            flagged = section_runs["run_id"].isin(unofficial["run_id"])
            identities = ", ".join(sorted(set(section_runs.loc[flagged, "data_identity"])))
        notes.append(
            f"{UNOFFICIAL_MARK} Trained and evaluated on data that is not the official CIFAR-10 ({identities}): "
            f"not comparable to published numbers."
        )
    return notes


def groups(summaries: pd.DataFrame):
    for labels in sorted(summaries["labels"].unique()):
        at_labels = summaries[summaries["labels"] == labels]
        for impl in impl_order(at_labels["impl"]):
            yield impl, int(labels), at_labels[at_labels["impl"] == impl].sort_values("seed")


TOP1_LAST = "top-1 % at last evaluation"


TOP1_BEST = "best top-1 % over all evaluations (chosen on the test set: optimistic)"


TOP1_MEDIAN = f"top-1 %, median over the final window of {MEDIAN_WINDOW} evaluation intervals"
