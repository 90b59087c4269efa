"""Paired comparisons between implementations: per seed, the same split and initialisation seed, first minus
second, with its 95 % t interval."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

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

MEASURES = (
    ("top1_last", TOP1_LAST),
    ("top1_best", TOP1_BEST),
    ("top1_median_window", TOP1_MEDIAN),
)


def paired_difference_table(section: Section) -> Table | None:
    """own − torchssl and own-as-torchssl − torchssl per seed that both finished on the same split, with a
    paired t interval."""
    summaries = section.summaries
    rows = []
    marks_needed = pd.DataFrame()
    for first, second in PAIRS:
        for labels in sorted(summaries["labels"].unique()):
            at_labels = summaries[summaries["labels"] == labels]
            ours, theirs = (at_labels[at_labels["impl"] == impl].set_index("seed") for impl in (first, second))
            if ours.empty or theirs.empty:
                continue
            common = sorted(set(ours.index) & set(theirs.index))
            paired = [seed for seed in common if ours.at[seed, "split_digest"] and
                      ours.at[seed, "split_digest"] == theirs.at[seed, "split_digest"]]
            unpaired_split = len(common) - len(paired)
            both = pd.concat([ours.loc[paired], theirs.loc[paired]])
            marks_needed = pd.concat([marks_needed, both])
            marks = marks_of(both) if paired else ""
            for column, label in MEASURES:
                differences = (ours.loc[paired, column] - theirs.loc[paired, column]).to_numpy() * 100
                rows.append([
                    f"{first} − {second}", str(labels), label,
                    f"{len(paired)} ({', '.join(map(str, paired))})" if paired else "0",
                    with_marks(f"{100 * ours.loc[paired, column].mean():.2f}", marks) if paired else "n/a",
                    with_marks(f"{100 * theirs.loc[paired, column].mean():.2f}", marks) if paired else "n/a",
                    with_marks(f"{differences.mean():+.2f}", marks) if paired else "n/a",
                    with_marks(paired_interval(differences, unpaired_split), marks if len(paired) >= 2 else ""),
                ])
    if not rows:
        return None
    notes = flag_notes(marks_needed, section.runs) if not marks_needed.empty else []
    notes.append(
        "Pairs: seeds finished by both implementations on the same label split (same split digest); means over those "
        "seeds only. Interval: mean difference ± t(0.975, n − 1) · sd / √n over the n paired differences, in "
        "percentage points (pp). own-as-torchssl is own with every switch of the difference ledger at TorchSSL's "
        "choice: what remains of own − torchssl there is not explained by the ledger."
    )
    return Table(
        "Differences between implementations, paired by seed (percentage points)",
        ["difference", "labels", "measure", "paired seeds (n)", "first mean %", "second mean %",
         "first − second (pp)", "95 % interval (paired t)"],
        rows, notes,
    )


def paired_interval(differences: np.ndarray, unpaired_split: int) -> str:
    n = len(differences)
    if n < 2:
        reason = f"{n} paired seed{'s' if n != 1 else ''}, needs ≥ 2"
        if unpaired_split:
            reason += f"; {unpaired_split} seed(s) ran on different splits"
        return f"n/a ({reason})"
    half_width = stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / math.sqrt(n)
    mean = differences.mean()
    return f"[{mean - half_width:+.2f}, {mean + half_width:+.2f}]"
