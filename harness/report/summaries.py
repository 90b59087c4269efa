"""Per-run summaries read from MLflow (top-1 last, best, median of the final window, …) and the sections they are
pooled in: one preset, one data set, one protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.report.collect import PROTOCOL_FIELDS, ReportData
from implementations import comparisons, implementation_names, interface

MEDIAN_WINDOW = 20  # the FixMatch paper reports the median over its last 20 checkpoints


SHORT_MARK = "†"  # trained fewer iterations than the paper's schedule


UNOFFICIAL_MARK = "‡"  # trained/evaluated on data that is not the official full data set


FEW_EVALUATIONS_MARK = "§"  # median over fewer than MEDIAN_WINDOW evaluations


# The registered implementations in their order, and the pairs the report compares (each implementation with
# each it names as compared_with; each difference is first minus second).
IMPL_ORDER = implementation_names()


PAIRS = comparisons()


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
    at_chance: ChanceBound | None = None  # set when no run of the section can be told from guessing

    @property
    def algorithm(self) -> str:
        return self.protocol.get("algorithm", "fixmatch")  # runs recorded before other algorithms: FixMatch


# A section "learned nothing" when none of its runs' last count of correct test images is one that predictions
# unrelated to the image (chance_rate) reach with a probability below CHANCE_P, the family of one-sided binomial
# tests over the section's runs held to it (Bonferroni).
CHANCE_P = 0.001


@dataclass(frozen=True)
class ChanceBound:
    chance: float  # 1 / classes
    bound: float  # the highest top-1, over the section's runs, that predictions unrelated to the image reach
    test_images: int
    runs: int

    def sentence(self) -> str:
        return (f"These runs learned nothing: chance is {100 * self.chance:.0f} %, and none of the {self.runs} runs' last "
                f"top-1 beats what predictions unrelated to the image reach on {self.test_images:,} test images (at most "
                f"{100 * self.bound:.1f} %: more than chance where a run's predictions favour a frequent class; "
                f"one-sided binomial tests at p = {CHANCE_P:g} over the section, Bonferroni).")


def chance_rate(matrix: np.ndarray) -> float:
    """The top-1 that predictions unrelated to the image reach on this test set, given how often each class is true
    and how often it is predicted (Cohen's chance agreement: Σ_k true share_k · predicted share_k), and never
    below 1 / classes: a run that predicts one frequent class for every image is at chance, not above it."""
    total = matrix.sum()
    agreement = float((matrix.sum(axis=1) / total) @ (matrix.sum(axis=0) / total))
    return max(1 / len(matrix), agreement)


def chance_bound(data: ReportData, summaries: pd.DataFrame) -> ChanceBound | None:
    """The bound of chance when no run in `summaries` can be told from it (each run's test set, classes and
    predicted shares from the confusion matrix of its last evaluation; the family of tests at CHANCE_P), else None."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    matrices = [data.confusion.get(run_id) for run_id in summaries["run_id"]]
    if not matrices or any(confusion is None for confusion in matrices):
        return None
    matrices = [np.asarray(confusion.matrix) for confusion in matrices]
    chances = [chance_rate(matrix) for matrix in matrices]
    p_values = [stats.binomtest(int(np.trace(matrix)), int(matrix.sum()), chance, alternative="greater").pvalue
                for matrix, chance in zip(matrices, chances)]
    if multipletests(p_values, alpha=CHANCE_P, method="bonferroni")[0].any():
        return None
    per_run = CHANCE_P / len(matrices)
    bounds = [stats.binom.isf(per_run, int(matrix.sum()), chance) / matrix.sum()
              for matrix, chance in zip(matrices, chances)]
    return ChanceBound(1 / len(matrices[0]), max(bounds), int(matrices[0].sum()), len(matrices))


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
        top1 = data.history(run.run_id, interface.EVAL_TOP1)
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
            "top1_median_window": float(recent.median()),
            "evaluations_in_median": len(recent),
            "median_window": window,
            "evaluation_steps": tuple(int(step) for step in top1.index),
            "top5_last": value_at(data.history(run.run_id, interface.EVAL_TOP5), last_step),
            "f1_last": value_at(data.history(run.run_id, interface.EVAL_F1), last_step),
            "auc_last": value_at(data.history(run.run_id, interface.EVAL_AUC), last_step),
        })
    return pd.DataFrame(rows, columns=[
        "run_id", "impl", "labels", "seed", "split_digest", "iterations_run", "data_official", "last_iteration",
        "top1_last", "top1_best", "best_iteration", "top1_median_window", "evaluations_in_median", "median_window",
        "evaluation_steps", "top5_last", "f1_last", "auc_last",
    ])


def value_at(history: pd.Series, step: int) -> float:
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
        section_summaries = summaries[summaries["run_id"].isin(runs["run_id"])]
        result.append(Section(title, slug, preset, protocol_params, runs, section_summaries, set_aside,
                              chance_bound(data, section_summaries)))
    return result


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "runs"
