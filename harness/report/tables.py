"""The report's numbers: per-run summaries, their mean ± std over seeds, paired own − torchssl
differences, and our numbers beside the published ones. Every table names exactly what it shows.

Accuracies are stored in MLflow as fractions and shown here as percentages with two decimals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from harness.report.collect import PAPER_ITERATIONS, PROTOCOL_FIELDS, ReportData
from implementations import comparisons, implementation_names
from implementations import interface as names

MEDIAN_WINDOW = 20  # the FixMatch paper reports the median over its last 20 checkpoints
SHORT_MARK = "†"  # trained fewer iterations than the paper's schedule
UNOFFICIAL_MARK = "‡"  # trained/evaluated on data that is not the official full data set
FEW_EVALUATIONS_MARK = "§"  # median over fewer than MEDIAN_WINDOW evaluations
# The registered implementations in their order, and the pairs the report compares (each implementation with the
# one it names as compared_with; each difference is first minus second).
IMPL_ORDER = implementation_names()
PAIRS = comparisons()


@dataclass(frozen=True)
class Anchor:
    source: str
    protocol: str
    top1: dict[int, tuple[float, float]]  # labels -> (mean %, std %)
    statistic: str = "top1_best"  # which of our numbers is in the same protocol (a run_summaries column)


# CIFAR-10 FixMatch (RandAugment). The paper gives error rates; accuracy = 100 − error.
FIXMATCH_PAPER = Anchor(
    "FixMatch paper (RA)",
    "median of the last 20 checkpoints, 5 folds; 100 − published error",
    {40: (86.19, 3.37), 250: (94.93, 0.65), 4000: (95.74, 0.05)},
    statistic="top1_median_last20",
)


def _torchssl_readme(top1: dict[int, tuple[float, float]]) -> Anchor:
    """An algorithm's row of TorchSSL's README at the pinned commit (its table of CIFAR-10 accuracies)."""
    return Anchor("TorchSSL README", "best checkpoint, 3 seeds", top1)


TORCHSSL_README = _torchssl_readme({40: (92.53, 0.28), 250: (95.14, 0.05), 4000: (95.79, 0.08)})
# Every algorithm's published CIFAR-10 numbers. TorchSSL's FullySupervised row trains on all 50,000 labels, so our
# supervised baseline (the labeled split only) has none.
# CIFAR-10 MixMatch, its paper's Table 1 (error rates, 5 splits; it has no 40-label run).
MIXMATCH_PAPER = Anchor(
    "MixMatch paper",
    "median of the last 20 checkpoints, 5 splits; 100 − published error",
    {250: (88.92, 0.87), 4000: (93.76, 0.06)},
    statistic="top1_median_last20",
)
PUBLISHED: dict[str, tuple[Anchor, ...]] = {
    "fixmatch": (FIXMATCH_PAPER, TORCHSSL_README),
    "pseudolabel": (_torchssl_readme({40: (25.39, 0.26), 250: (53.51, 2.2), 4000: (84.92, 0.19)}),),
    "pimodel": (_torchssl_readme({40: (25.66, 1.76), 250: (53.76, 1.29), 4000: (86.87, 0.59)}),),
    "meanteacher": (_torchssl_readme({40: (29.91, 1.6), 250: (62.54, 3.3), 4000: (91.9, 0.21)}),),
    "mixmatch": (MIXMATCH_PAPER, _torchssl_readme({40: (63.81, 6.48), 250: (86.37, 0.59), 4000: (93.34, 0.26)})),
    "uda": (_torchssl_readme({40: (89.38, 3.75), 250: (94.84, 0.06), 4000: (95.71, 0.07)}),),
    "flexmatch": (_torchssl_readme({40: (95.03, 0.06), 250: (95.02, 0.09), 4000: (95.81, 0.01)}),),
    "remixmatch": (_torchssl_readme({40: (90.12, 1.03), 250: (93.7, 0.05), 4000: (95.16, 0.01)}),),
    "vat": (_torchssl_readme({40: (25.34, 2.12), 250: (58.97, 1.79), 4000: (89.49, 0.12)}),),
    # FreeMatch and SoftMatch: TorchSSL's README at the pin has their code but no CIFAR-10 row.
}


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    """Finished runs that may be pooled: one preset, one data set, one training protocol; one run per
    implementation, labels and seed (the newest finished), the others set aside."""

    title: str
    slug: str
    preset: str
    protocol: dict[str, str]
    runs: pd.DataFrame  # rows of ReportData.runs
    summaries: pd.DataFrame  # rows of run_summaries(), same runs
    set_aside: pd.DataFrame = field(default_factory=pd.DataFrame)  # older finished runs of the same seed

    @property
    def algorithm(self) -> str:
        return self.protocol.get("algorithm", "fixmatch")  # runs recorded before other algorithms: FixMatch


def impl_order(impls) -> list[str]:
    known = [impl for impl in IMPL_ORDER if impl in set(impls)]
    return known + sorted(set(impls) - set(known))


def median_window(iterations: int, eval_interval) -> tuple[int, int] | None:
    """(first, last) iteration of the final window the median is taken over: the last MEDIAN_WINDOW evaluation
    intervals of training, the same iterations for every implementation whatever its evaluation schedule."""
    if pd.isna(eval_interval) or not eval_interval:
        return None
    return max(0, iterations - MEDIAN_WINDOW * int(eval_interval)) + 1, iterations


def run_summaries(data: ReportData) -> pd.DataFrame:
    """One row per finished run: its last, best and median-of-the-final-window top-1 and last other metrics."""
    rows = []
    for run in data.finished.itertuples():
        top1 = data.history(run.run_id, names.EVAL_TOP1)
        if top1.empty:
            continue
        window = median_window(int(run.iterations_run), run.eval_interval)
        recent = top1[top1.index >= window[0]] if window else top1.iloc[-MEDIAN_WINDOW:]
        if recent.empty:
            recent = top1.iloc[-1:]
        last_step = int(top1.index[-1])
        rows.append({
            "run_id": run.run_id,
            "impl": run.impl,
            "labels": int(run.labels),
            "seed": int(run.seed),
            "split_digest": run.split_digest,
            "iterations_run": int(run.iterations_run),
            "data_official": run.data_official,
            "last_iteration": last_step,
            "top1_last": float(top1.iloc[-1]),
            "top1_best": float(top1.max()),
            "best_iteration": int(top1.idxmax()),  # the first evaluation that reached the best
            "top1_median_last20": float(recent.median()),
            "evaluations_in_median": len(recent),
            "median_window": window,
            "evaluation_steps": tuple(int(step) for step in top1.index),
            "top5_last": _value_at(data.history(run.run_id, names.EVAL_TOP5), last_step),
            "f1_last": _value_at(data.history(run.run_id, names.EVAL_F1), last_step),
            "auc_last": _value_at(data.history(run.run_id, names.EVAL_AUC), last_step),
        })
    return pd.DataFrame(rows, columns=[
        "run_id", "impl", "labels", "seed", "split_digest", "iterations_run", "data_official", "last_iteration",
        "top1_last", "top1_best", "best_iteration", "top1_median_last20", "evaluations_in_median", "median_window",
        "evaluation_steps", "top5_last", "f1_last", "auc_last",
    ])


def _value_at(history: pd.Series, step: int) -> float:
    return float(history[step]) if step in history.index else math.nan


def sections(data: ReportData, summaries: pd.DataFrame) -> list[Section]:
    finished = data.finished[data.finished["run_id"].isin(summaries["run_id"])]
    groups = list(finished.groupby(["preset", "data_identity", "protocol"], sort=True))
    result = []
    for (preset, identity, protocol), all_runs in groups:
        # A seed rerun with another own-only setting (e.g. a speed flag) is the same protocol: the newest counts.
        newest_first = all_runs.sort_values("end_time", ascending=False, kind="stable")
        duplicate = newest_first.duplicated(["impl", "labels", "seed"], keep="first")
        runs = all_runs[all_runs["run_id"].isin(newest_first.loc[~duplicate, "run_id"])]
        set_aside = newest_first[duplicate]
        protocol_params = dict(zip(PROTOCOL_FIELDS, protocol))
        title = f"Preset `{preset}`"
        siblings = [key for key, _ in groups if key[0] == preset]
        if len({key[1] for key in siblings}) > 1:
            title += f", data `{identity}`"
        if len({key[2] for key in siblings}) > 1:
            # What sets this protocol apart; fields its algorithm does not read (not recorded, "?") are left out.
            varying = [i for i, name in enumerate(PROTOCOL_FIELDS)
                       if len({key[2][i] for key in siblings}) > 1 and protocol[i] != "?"]
            title += ", " + ", ".join(f"{PROTOCOL_FIELDS[i]}={protocol[i]}" for i in varying)
        slug = _slug(preset) + (f"-{len([s for s in result if s.preset == preset]) + 1}" if len(siblings) > 1 else "")
        result.append(Section(title, slug, preset, protocol_params, runs,
                              summaries[summaries["run_id"].isin(runs["run_id"])], set_aside))
    return result


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "runs"


# ---- formatting -----------------------------------------------------------------------------------


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


def _marks(group: pd.DataFrame) -> str:
    marks = ""
    if (group["iterations_run"] < PAPER_ITERATIONS).any():
        marks += SHORT_MARK
    if (group["data_official"] != True).any():  # noqa: E712 (None = not recorded also counts)
        marks += UNOFFICIAL_MARK
    return marks


def _with(text: str, marks: str) -> str:
    return f"{text} {marks}" if marks and text != "not logged" else text


def _seeds(group: pd.DataFrame) -> str:
    seeds = sorted(group["seed"])
    return f"{len(seeds)} ({', '.join(map(str, seeds))})"


def _iterations(group: pd.DataFrame) -> str:
    low, high = int(group["iterations_run"].min()), int(group["iterations_run"].max())
    return count(low) if low == high else f"{count(low)}–{count(high)}"


def _flag_notes(summaries: pd.DataFrame, section_runs: pd.DataFrame | None = None) -> list[str]:
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


def _groups(summaries: pd.DataFrame):
    for labels in sorted(summaries["labels"].unique()):
        at_labels = summaries[summaries["labels"] == labels]
        for impl in impl_order(at_labels["impl"]):
            yield impl, int(labels), at_labels[at_labels["impl"] == impl].sort_values("seed")


# ---- tables ----------------------------------------------------------------------------------------


TOP1_LAST = "top-1 % at last evaluation"
TOP1_BEST = "best top-1 % over all evaluations (chosen on the test set: optimistic)"
TOP1_MEDIAN = f"top-1 %, median over the final window of {MEDIAN_WINDOW} evaluation intervals"


def methods_table(report_sections: list[Section]) -> Table | None:
    """Every algorithm × implementation × labels of the report in one table, beside TorchSSL's published number of
    that algorithm; None when the report holds one algorithm only."""
    algorithms = {section.algorithm for section in report_sections}
    if len(algorithms) < 2:
        return None
    rows = []
    for section in sorted(report_sections, key=lambda section: section.algorithm):
        algorithm = section.algorithm
        published = {anchor.source: anchor for anchor in PUBLISHED.get(algorithm, ())}.get(TORCHSSL_README.source)
        for impl, labels, group in _groups(section.summaries):
            marks = _marks(group)
            reference = published.top1.get(labels) if published else None
            rows.append([
                algorithm, impl, str(labels), _seeds(group), _iterations(group),
                _with(percent(group["top1_best"]), marks), _with(percent(group["top1_median_last20"]), marks),
                "{:.2f} ± {:.2f}".format(*reference) if reference else "–",
            ])
    summaries = pd.concat([section.summaries for section in report_sections])
    runs = pd.concat([section.runs for section in report_sections])
    notes = _flag_notes(summaries, runs) + [
        "Each algorithm's details (settings, method, figures) are in its own section below. Published: TorchSSL's README, CIFAR-10, "
        "WRN-28-2 after 1,048,576 iterations, best checkpoint over 3 seeds (compare with our best column); the "
        "supervised baseline has none (TorchSSL's FullySupervised row trains on all 50,000 labels; ours, and "
        "TorchSSL's fullysupervised as the adapter runs it, train on the labeled split only), nor have FreeMatch and "
        "SoftMatch (no CIFAR-10 row in that README).",
    ] + resume_gap_notes(runs)
    return Table("The methods side by side: top-1 accuracy (%) of the EMA model, mean ± std over seeds",
                 ["algorithm", "implementation", "labels", "seeds (n)", "iterations run", TOP1_BEST, TOP1_MEDIAN,
                  "TorchSSL README: best top-1 %"], rows, notes)


def resume_gap_notes(runs: pd.DataFrame) -> list[str]:
    """What the checkpoints of the TorchSSL algorithms in `runs` leave out, and which of their runs were resumed
    from such a checkpoint (their training is then not one uninterrupted run of the method)."""
    torchssl = runs[runs["torchssl_resume_gap"].fillna("") != ""]  # only TorchSSL's runs record a gap
    notes = []
    for algorithm, group in torchssl.groupby("algorithm", sort=True):
        gap = group["torchssl_resume_gap"].iloc[0]
        resumed = group[pd.to_numeric(group["torchssl_resumed_from"], errors="coerce").fillna(0) > 0]
        resumed_text = (f" Resumed from such a checkpoint, so not comparable as one run: "
                        f"{', '.join(resumed['run_name'])}." if len(resumed) else " None of these runs was resumed.")
        notes.append(f"TorchSSL's {algorithm}: {gap}.{resumed_text}")
    return notes


def method_differences_table(report_sections: list[Section], data: ReportData) -> Table | None:
    """How the report's methods differ, one row per algorithm, from what each method's own file declares (its
    TRAITS, recorded in every run's method sheet); None for a report of one algorithm."""
    traits_by_algorithm: dict[str, dict[str, str]] = {}
    for section in report_sections:
        for run_id in section.runs["run_id"]:
            sheet = data.method_sheets.get(run_id, {})
            if sheet.get("traits"):
                traits_by_algorithm.setdefault(section.algorithm, sheet["traits"])
    if len(traits_by_algorithm) < 2:
        return None
    aspects = list(dict.fromkeys(aspect for traits in traits_by_algorithm.values() for aspect in traits))
    rows = [[algorithm, *[traits.get(aspect, "–") for aspect in aspects]]
            for algorithm, traits in sorted(traits_by_algorithm.items())]
    return Table("How the methods differ, as each method's own file declares it (TRAITS, in implementations/own)",
                 ["algorithm", *aspects], rows,
                 ["The equations of each method are in its section's method table and at the top of its file."])


def method_ledger_table(report_sections: list[Section], data: ReportData) -> Table | None:
    """Per algorithm of the report: where own's code for it differs from TorchSSL's, and where the defaults both
    run with (TorchSSL's) differ from the paper's recipe, from the method sheets the runs recorded; None when no
    method of the report has any."""
    rows = []
    for algorithm in sorted({section.algorithm for section in report_sections}):
        sheets = [data.method_sheets.get(run_id, {}) for section in report_sections if section.algorithm == algorithm
                  for run_id in section.runs["run_id"]]
        sheet = next((sheet for sheet in sheets if "differences_from_torchssl" in sheet), None)
        if sheet is None:
            continue
        rows += [[algorithm, "own's code vs TorchSSL's", text] for text in sheet["differences_from_torchssl"]]
        rows += [[algorithm, "defaults vs the paper", text] for text in sheet.get("defaults_differ_from_paper", ())]
    if not rows:
        return None
    return Table("Where each method's code differs from TorchSSL's, and its defaults from its paper (the method's own "
                 "file: DIFFERENCES_FROM_TORCHSSL, DEFAULTS_DIFFER_FROM_PAPER)", ["algorithm", "what", "difference"],
                 rows, ["FixMatch's differences of recipe (augmentation, network, evaluation) are the ledger at the "
                        "end of the report; they apply to every method, which all share the recipe."])


def top1_table(section: Section) -> Table:
    rows = []
    few_evaluations = False
    for impl, labels, group in _groups(section.summaries):
        marks = _marks(group)
        median_marks = marks
        if (group["evaluations_in_median"] < MEDIAN_WINDOW).any():
            median_marks += FEW_EVALUATIONS_MARK
            few_evaluations = True
        rows.append([
            impl, str(labels), _seeds(group), _iterations(group),
            _with(percent(group["top1_last"]), marks),
            _with(percent(group["top1_best"]), marks),
            ", ".join(count(int(step)) for step in group["best_iteration"]),
            _with(percent(group["top1_median_last20"]), median_marks),
            _window_text(group),
        ])
    notes = _flag_notes(section.summaries, section.runs)
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
    for impl, labels, group in _groups(section.summaries):
        marks = _marks(group)
        rows.append([
            impl, str(labels), _seeds(group),
            _with(percent(group["top5_last"]), marks),
            _with(percent(group["f1_last"]), marks),
            _with(fraction(group["auc_last"]), marks),
        ])
    notes = _flag_notes(section.summaries, section.runs) + [
        "All at the last evaluation, EMA model, test set; mean ± sample standard deviation over seeds. Macro: the "
        "unweighted mean over classes. AUC: one-vs-one, macro-averaged, on the 0–1 scale.",
    ]
    return Table(
        "Other test-set metrics at the last evaluation, mean ± std over seeds",
        ["implementation", "labels", "seeds (n)", "top-5 accuracy %", "macro F1 %", "one-vs-one macro AUC (0–1)"],
        rows, notes,
    )


MEASURES = (
    ("top1_last", TOP1_LAST),
    ("top1_best", TOP1_BEST),
    ("top1_median_last20", TOP1_MEDIAN),
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
            marks = _marks(both) if paired else ""
            for column, label in MEASURES:
                differences = (ours.loc[paired, column] - theirs.loc[paired, column]).to_numpy() * 100
                rows.append([
                    f"{first} − {second}", str(labels), label,
                    f"{len(paired)} ({', '.join(map(str, paired))})" if paired else "0",
                    _with(f"{100 * ours.loc[paired, column].mean():.2f}", marks) if paired else "n/a",
                    _with(f"{100 * theirs.loc[paired, column].mean():.2f}", marks) if paired else "n/a",
                    _with(f"{differences.mean():+.2f}", marks) if paired else "n/a",
                    _with(_paired_interval(differences, unpaired_split), marks if len(paired) >= 2 else ""),
                ])
    if not rows:
        return None
    notes = _flag_notes(marks_needed, section.runs) if not marks_needed.empty else []
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


def _paired_interval(differences: np.ndarray, unpaired_split: int) -> str:
    n = len(differences)
    if n < 2:
        reason = f"{n} paired seed{'s' if n != 1 else ''}, needs ≥ 2"
        if unpaired_split:
            reason += f"; {unpaired_split} seed(s) ran on different splits"
        return f"n/a ({reason})"
    half_width = stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / math.sqrt(n)
    mean = differences.mean()
    return f"[{mean - half_width:+.2f}, {mean + half_width:+.2f}]"


def published_table(section: Section) -> Table | None:
    """Our numbers beside the published anchors of the section's algorithm, each in the anchor's own protocol."""
    anchors = PUBLISHED.get(section.algorithm, ())
    if not anchors:
        return None
    summaries = section.summaries
    impls = impl_order(summaries["impl"])
    heading = {"top1_median_last20": TOP1_MEDIAN, "top1_best": TOP1_BEST}

    def ours(labels: int, impl: str, column: str) -> str:
        group = summaries[(summaries["labels"] == labels) & (summaries["impl"] == impl)]
        if group.empty:
            return "not run"
        marks = _marks(group)
        if column == "top1_median_last20" and (group["evaluations_in_median"] < MEDIAN_WINDOW).any():
            marks += FEW_EVALUATIONS_MARK
        return _with(f"{percent(group[column])} (n={len(group)})", marks)

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
    notes = _flag_notes(shown, section.runs) if not shown.empty else []
    if not shown.empty and (shown["evaluations_in_median"] < MEDIAN_WINDOW).any() and \
            any(anchor.statistic == "top1_median_last20" for anchor in anchors):
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
        top1 = data.history(run.run_id, names.EVAL_TOP1)
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
