"""Paired comparisons between implementations: per seed, the same split and initialisation seed, first minus
second, with its 95 % t interval and its verdict (verdicts.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.report.formatting import (
    TOP1_BEST,
    TOP1_LAST,
    TOP1_MEDIAN,
    Table,
    flag_notes,
    marks_of,
    with_marks,
)
from harness.report.summaries import PAIRS, Section
from harness.report.verdicts import DEFAULT_MARGIN, Verdict, verdict

MEASURES = (
    ("top1_last", TOP1_LAST),
    ("top1_best", TOP1_BEST),
    ("top1_median_window", TOP1_MEDIAN),
)


@dataclass(frozen=True)
class PairedMeasure:
    """One measure of one pair of implementations at one label count: the seeds both ran on the same split."""

    first: str
    second: str
    labels: int
    column: str  # a run_summaries column
    measure: str  # its words
    seeds: list[int]
    first_values: pd.Series  # by seed, fractions
    second_values: pd.Series
    unpaired_split: int  # seeds both ran, on different splits
    rows: pd.DataFrame  # the runs of both, for the marks

    @property
    def differences(self) -> np.ndarray:
        """first − second per paired seed, in percentage points."""
        return (self.first_values - self.second_values).to_numpy() * 100

    def verdict(self, margin: float) -> Verdict | None:
        return verdict(self.first, self.second, self.differences, margin)


def paired_measures(section: Section) -> list[PairedMeasure]:
    """Every pair of implementations the registry compares (PAIRS), per label count and measure."""
    summaries = section.summaries
    measures = []
    for first, second in PAIRS:
        for labels in sorted(summaries["labels"].unique()):
            at_labels = summaries[summaries["labels"] == labels]
            ours, theirs = (at_labels[at_labels["impl"] == impl].set_index("seed") for impl in (first, second))
            if ours.empty or theirs.empty:
                continue
            common = sorted(set(ours.index) & set(theirs.index))
            paired = [seed for seed in common if ours.at[seed, "split_digest"] and
                      ours.at[seed, "split_digest"] == theirs.at[seed, "split_digest"]]
            both = pd.concat([ours.loc[paired], theirs.loc[paired]])
            measures += [PairedMeasure(first, second, int(labels), column, label, paired, ours.loc[paired, column],
                                       theirs.loc[paired, column], len(common) - len(paired), both)
                         for column, label in MEASURES]
    return measures


def paired_difference_table(section: Section, margin: float = DEFAULT_MARGIN) -> Table | None:
    """Each compared pair per seed that both finished on the same split, with a paired t interval and the
    verdict (verdicts.py)."""
    rows = []
    marks_needed = pd.DataFrame()
    for paired in paired_measures(section):
        marks_needed = pd.concat([marks_needed, paired.rows])
        marks = marks_of(paired.rows) if paired.seeds else ""
        found = paired.verdict(margin)
        rows.append([
            f"{paired.first} − {paired.second}", str(paired.labels), paired.measure,
            f"{len(paired.seeds)} ({', '.join(map(str, paired.seeds))})" if paired.seeds else "0",
            with_marks(f"{100 * paired.first_values.mean():.2f}", marks) if paired.seeds else "n/a",
            with_marks(f"{100 * paired.second_values.mean():.2f}", marks) if paired.seeds else "n/a",
            with_marks(f"{paired.differences.mean():+.2f}", marks) if paired.seeds else "n/a",
            with_marks(paired_interval(found, paired.unpaired_split), marks if len(paired.seeds) >= 2 else ""),
            found.words() if found is not None else "no paired seed",
        ])
    if not rows:
        return None
    notes = flag_notes(marks_needed, section.runs) if not marks_needed.empty else []
    notes.append(
        "Pairs: seeds finished by both implementations on the same label split (same split digest); means over those "
        "seeds only. Interval: mean difference ± t(0.975, n − 1) · sd / √n over the n paired differences, in "
        "percentage points (pp). own-as-torchssl is own with every switch of the difference ledger at TorchSSL's "
        "choice: own-as-torchssl − torchssl is what the code changes beyond the ledger, own − own-as-torchssl what "
        "the ledger's choices change."
    )
    notes.append(VERDICT_NOTE.format(margin=margin))
    return Table(
        "Differences between implementations, paired by seed (percentage points)",
        ["difference", "labels", "measure", "paired seeds (n)", "first mean %", "second mean %",
         "first − second (pp)", "95 % interval (paired t)", f"verdict (margin ±{margin:g} pp)"],
        rows, notes,
    )


VERDICT_NOTE = (
    "Verdict: equivalent when both one-sided t tests (TOST, statsmodels) reject a difference beyond ±{margin:g} pp at "
    "5 % (`bench report --margin` sets it); lower or higher when the 95 % interval excludes 0; otherwise undecided, "
    "with the paired seeds that would decide if the next seeds spread as these did (the smallest N whose 90 % "
    "interval would lie inside the margin, or whose 95 % interval would exclude 0)."
)


def paired_interval(found: Verdict | None, unpaired_split: int) -> str:
    """The verdict's 95 % t interval of the mean difference, or why there is none."""
    n = found.seeds if found is not None else 0
    if n < 2:
        reason = f"{n} paired seed{'s' if n != 1 else ''}, needs ≥ 2"
        if unpaired_split:
            reason += f"; {unpaired_split} seed(s) ran on different splits"
        return f"n/a ({reason})"
    low, high = found.interval
    return f"[{low:+.2f}, {high:+.2f}]"


HEADLINE_MEASURE = "top1_last"  # the verdicts that open the report; the differences table has every measure


def headline_verdicts(report_sections: list[Section], margin: float = DEFAULT_MARGIN) -> list[str]:
    """One line per compared pair and label count of each section that learned something: its verdict on top-1 at
    the last evaluation."""
    lines = []
    for section in report_sections:
        if section.at_chance is not None:
            continue
        where = section.title.replace("`", "") if len(report_sections) > 1 else section.algorithm
        for paired in paired_measures(section):
            found = paired.verdict(margin) if paired.column == HEADLINE_MEASURE else None
            if found is not None:
                lines.append(f"{where}, {paired.labels} labels, top-1 at the last evaluation: {found.words()}")
    return lines
