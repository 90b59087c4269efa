"""The report's figures, drawn from the MLflow histories with matplotlib (Agg, no display) as PNGs.

Each function draws one figure for one section and returns where it wrote it and its caption.
Curves are the mean over seeds with a band from the lowest to the highest seed at each iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import EngFormatter, PercentFormatter  # noqa: E402

from harness.report.collect import ReportData  # noqa: E402
from harness.report.summaries import IMPL_ORDER, Section, impl_order  # noqa: E402
from implementations import interface  # noqa: E402

WIDTH_INCHES = 7.2  # fits an A4 page with 15 mm margins at 100 %
DPI = 150
COLUMNS_PER_ROW = 3
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.grid": True, "grid.alpha": 0.3,
}
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
# 12 distinguishable colours, one per algorithm in the cross-method figure (matplotlib's tab20, darker halves first)
_ALGORITHM_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                      "#bcbd22", "#17becf", "#393b79", "#637939"]
LINESTYLES = ("-", ":", "--", "-.")  # one per implementation, in the registry's order


def _linestyle(impl: str) -> str:
    return LINESTYLES[IMPL_ORDER.index(impl) % len(LINESTYLES)] if impl in IMPL_ORDER else LINESTYLES[-1]


@dataclass(frozen=True)
class FigureFile:
    path: Path  # relative to the report directory
    caption: str


def color(impl: str, impls: list[str]) -> str:
    return _PALETTE[impls.index(impl) % len(_PALETTE)]


def draw_section_figures(data: ReportData, section: Section, report_dir: Path) -> list[FigureFile]:
    (report_dir / "figures").mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        figures = [
            top1_vs_iteration(data, section, report_dir),
            training_signals(data, section, report_dir, "losses",
                             [(interface.TRAIN_SUPERVISED_LOSS, "supervised loss"),
                              (interface.TRAIN_UNSUPERVISED_LOSS, "unsupervised loss")],
                             "Supervised (labeled cross-entropy) and unsupervised (masked pseudo-label cross-entropy) "
                             "training loss, averaged between logs"),
            training_signals(data, section, report_dir, "mask_rate_pseudo_label_accuracy",
                             [(interface.TRAIN_MASK_RATE, "mask rate (confidence ≥ τ)"),
                              (interface.TRAIN_PSEUDO_LABEL_ACCURACY, "pseudo-label accuracy (kept)")],
                             "Mask rate (share of unlabeled images whose confidence passes the threshold τ) and "
                             "accuracy of those kept pseudo-labels against the hidden true labels", percent_axis=True),
            top1_vs_training_time(data, section, report_dir),
            *confusion_matrices(data, section, report_dir),
            per_class_accuracy(data, section, report_dir),
        ]
    return [figure for figure in figures if figure is not None]


def _seed_curves(data: ReportData, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """step × seed values of one metric for the given runs."""
    columns = {int(run.seed): data.history(run.run_id, key) for run in runs.itertuples()}
    columns = {seed: values for seed, values in columns.items() if not values.empty}
    return pd.DataFrame(columns).sort_index() if columns else pd.DataFrame()


def _plot_band(axis, curves: pd.DataFrame, label: str, line_color: str, scale: float = 1.0) -> None:
    steps = curves.index.to_numpy()
    axis.plot(steps, curves.mean(axis=1) * scale, color=line_color, linewidth=1.2,
              marker="o" if len(steps) <= 40 else None, markersize=2.5,  # few evaluations: show where they are
              label=f"{label} (mean of {curves.shape[1]} seed{'s' if curves.shape[1] != 1 else ''})")
    if curves.shape[1] > 1:
        axis.fill_between(steps, curves.min(axis=1) * scale, curves.max(axis=1) * scale,
                          color=line_color, alpha=0.2, linewidth=0)


def _label_grid(label_counts: list[int], rows_per_label: bool, panels_per_label: int, height: float,
                full_width: bool = False):
    if rows_per_label:
        shape = (len(label_counts), panels_per_label)
    else:
        columns = min(COLUMNS_PER_ROW, len(label_counts))
        shape = (int(np.ceil(len(label_counts) / columns)), columns)
    width = WIDTH_INCHES if shape[1] > 1 or full_width else WIDTH_INCHES * 0.6  # one panel: no need to stretch it
    figure = Figure(figsize=(width, height * shape[0]), layout="constrained", dpi=DPI)
    axes = figure.subplots(*shape, squeeze=False)
    return figure, axes


def _save(figure: Figure, report_dir: Path, section: Section, name: str) -> Path:
    relative = Path("figures") / f"{section.slug}_{name}.png"
    figure.savefig(report_dir / relative, dpi=DPI)
    return relative


class PercentTicks(PercentFormatter):
    """Percent tick labels with as many decimals as the axis range needs, so that no two ticks read the same at
    any scale (PercentFormatter's automatic decimals), and never "−0 %" for a tick a rounding error below zero."""

    def __init__(self):
        super().__init__(decimals=None)

    def __call__(self, x, pos=None):
        return super().__call__(0.0 if abs(x) < 1e-9 else x, pos)


def top1_vs_iteration(data: ReportData, section: Section, report_dir: Path) -> FigureFile:
    label_counts = sorted(section.runs["labels"].unique())
    impls = impl_order(section.runs["impl"])
    figure, axes = _label_grid(label_counts, rows_per_label=False, panels_per_label=1, height=2.6)
    for axis, labels in zip(axes.flat, label_counts):
        for impl in impls:
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            curves = _seed_curves(data, runs, interface.EVAL_TOP1)
            if not curves.empty:
                _plot_band(axis, curves, impl, color(impl, impls), scale=100)
        axis.set_title(f"{labels} labels")
        axis.set_xlabel("iteration")
        axis.set_ylabel("test top-1 % (EMA model)")
        axis.xaxis.set_major_formatter(EngFormatter(sep=""))
        axis.legend(loc="lower right")
    for axis in list(axes.flat)[len(label_counts):]:
        axis.set_visible(False)
    path = _save(figure, report_dir, section, "top1_vs_iteration")
    return FigureFile(path, "Test top-1 accuracy of the EMA model at each evaluation: mean over seeds (line) and the "
                            "range from the lowest to the highest seed (band).")


def top1_vs_training_time(data: ReportData, section: Section, report_dir: Path) -> FigureFile | None:
    """Per label count, each run's top-1 against the iteration and against its training time (time_to_accuracy.py):
    one line per seed, colour = implementation."""
    from harness.report.time_to_accuracy import seconds_at, training_seconds

    label_counts = sorted(section.runs["labels"].unique())
    impls = impl_order(section.runs["impl"])
    figure, axes = _label_grid(label_counts, rows_per_label=True, panels_per_label=2, height=2.3)
    drawn = False
    for row, labels in enumerate(label_counts):
        for impl in impls:
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            for index, run in enumerate(runs.itertuples()):
                top1, seconds = data.history(run.run_id, interface.EVAL_TOP1), training_seconds(data, run.run_id)
                if top1.empty or seconds.empty:
                    continue
                label = f"{impl} ({len(runs)} seed{'s' if len(runs) != 1 else ''})" if index == 0 else None
                minutes = [seconds_at(seconds, int(step)) / 60 for step in top1.index]
                for axis, x in ((axes[row, 0], top1.index.to_numpy()), (axes[row, 1], minutes)):
                    axis.plot(x, top1.to_numpy() * 100, color=color(impl, impls), linewidth=1, marker="o",
                              markersize=2, label=label)
                drawn = True
        for column, x_label in enumerate(("iteration", "training time (minutes; evaluation not counted)")):
            axis = axes[row, column]
            axis.set_title(f"{labels} labels")
            axis.set_xlabel(x_label)
            axis.set_ylabel("test top-1 % (EMA model)")
            if column == 0:
                axis.xaxis.set_major_formatter(EngFormatter(sep=""))
            if axis.has_data():
                axis.legend(loc="lower right")
    if not drawn:
        return None
    path = _save(figure, report_dir, section, "top1_vs_training_time")
    return FigureFile(path, "Test top-1 accuracy of the EMA model against the iteration (left) and against the "
                            "worker's training time (right, evaluation and checkpoints not counted): one line per "
                            "seed.")


def methods_top1_vs_iteration(data: ReportData, report_sections: list[Section], report_dir: Path) -> FigureFile | None:
    """Every algorithm's test top-1 against the iteration, one panel per label count: colour = algorithm, line
    style = implementation; None when the report holds one algorithm only."""
    algorithms = sorted({section.algorithm for section in report_sections})
    if len(algorithms) < 2:
        return None
    runs = pd.concat([section.runs for section in report_sections])
    label_counts = sorted(runs["labels"].unique())
    (report_dir / "figures").mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        # Full width: the legend beside the panel has a line per method and implementation.
        figure, axes = _label_grid(label_counts, rows_per_label=True, panels_per_label=1, height=3.6, full_width=True)
        for axis, labels in zip(axes.flat, label_counts):
            for section in sorted(report_sections, key=lambda section: section.algorithm):
                line_color = _ALGORITHM_PALETTE[algorithms.index(section.algorithm) % len(_ALGORITHM_PALETTE)]
                for impl in impl_order(section.runs["impl"]):
                    group = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
                    curves = _seed_curves(data, group, interface.EVAL_TOP1)
                    if curves.empty:
                        continue
                    axis.plot(curves.index.to_numpy(), curves.mean(axis=1) * 100, color=line_color,
                              linestyle=_linestyle(impl), linewidth=1.2,
                              label=f"{section.algorithm} / {impl} ({curves.shape[1]} seed{'s' if curves.shape[1] != 1 else ''})")
            axis.set_title(f"{labels} labels")
            axis.set_xlabel("iteration")
            axis.set_ylabel("test top-1 % (EMA model)")
            axis.xaxis.set_major_formatter(EngFormatter(sep=""))
            axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncols=1 + len(axis.lines) // 14)
        relative = Path("figures") / "methods_top1_vs_iteration.png"
        figure.savefig(report_dir / relative, dpi=DPI)
    return FigureFile(relative, "Test top-1 accuracy of the EMA model against the iteration for every method: colour = "
                                "algorithm, solid = own, dashed = TorchSSL, dotted = own-as-torchssl; mean over seeds.")


def training_signals(data: ReportData, section: Section, report_dir: Path, name: str,
                     metrics: list[tuple[str, str]], caption: str, percent_axis: bool = False) -> FigureFile | None:
    label_counts = sorted(section.runs["labels"].unique())
    impls = impl_order(section.runs["impl"])
    logged = set(data.histories.loc[data.histories["run_id"].isin(section.runs["run_id"]), "key"])
    if not any(key in logged for key, _ in metrics):
        return None
    figure, axes = _label_grid(label_counts, rows_per_label=True, panels_per_label=len(metrics), height=1.9)
    for row, labels in enumerate(label_counts):
        for column, (key, title) in enumerate(metrics):
            axis = axes[row, column]
            for impl in impls:
                runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
                curves = _seed_curves(data, runs, key)
                if not curves.empty:
                    _plot_band(axis, curves, impl, color(impl, impls), scale=100 if percent_axis else 1)
            axis.set_title(f"{title}, {labels} labels")
            axis.xaxis.set_major_formatter(EngFormatter(sep=""))
            if percent_axis:
                axis.yaxis.set_major_formatter(PercentTicks())
            if row == len(label_counts) - 1:
                axis.set_xlabel("iteration")
            if axis.has_data():
                axis.legend(loc="best")
    path = _save(figure, report_dir, section, name)
    return FigureFile(path, caption + ": mean over seeds (line), lowest to highest seed (band).")


def confusion_matrices(data: ReportData, section: Section, report_dir: Path) -> list[FigureFile]:
    figures = []
    impls = impl_order(section.runs["impl"])
    for labels in sorted(section.runs["labels"].unique()):
        panels = []
        for impl in impls:
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            matrices = [data.confusion[run_id] for run_id in runs["run_id"] if run_id in data.confusion]
            if matrices:
                panels.append((impl, matrices))
        if not panels:
            continue
        width = WIDTH_INCHES if len(panels) > 1 else WIDTH_INCHES * 0.6
        figure = Figure(figsize=(width, 3.7), layout="constrained", dpi=DPI)
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for axis, (impl, matrices) in zip(axes, panels):
            counts = sum(m.matrix for m in matrices)  # summed over seeds, then each true class's row → %
            rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 100
            class_names = matrices[0].class_names
            image = axis.imshow(rows, cmap="Blues", vmin=0, vmax=100)
            for (true, predicted), value in np.ndenumerate(rows):
                axis.text(predicted, true, f"{value:.0f}", ha="center", va="center", fontsize=5.5,
                          color="white" if value > 60 else "black")
            axis.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=6.5)
            axis.set_yticks(range(len(class_names)), class_names, fontsize=6.5)
            axis.set_xlabel("predicted class")
            axis.set_ylabel("true class")
            axis.grid(False)
            steps = sorted({m.step for m in matrices})
            at = f"iteration {steps[0]:,}" if len(steps) == 1 else f"iterations {steps[0]:,}–{steps[-1]:,}"
            axis.set_title(f"{impl}, {labels} labels\n{len(matrices)} seed{'s' if len(matrices) > 1 else ''}, {at}")
        figure.colorbar(image, ax=list(axes), shrink=0.8, label="% of the true class")
        path = _save(figure, report_dir, section, f"confusion_matrix_{labels}_labels")
        figures.append(FigureFile(path, f"Confusion matrices at the last evaluation, {labels} labels: counts summed "
                                        "over seeds, each row as % of its true class (the diagonal is per-class "
                                        "accuracy)."))
    return figures


def per_class_accuracy(data: ReportData, section: Section, report_dir: Path) -> FigureFile | None:
    label_counts = sorted(section.runs["labels"].unique())
    impls = impl_order(section.runs["impl"])
    prefix = interface.EVAL_CLASS_ACCURACY_PREFIX
    found = False
    figure = Figure(figsize=(WIDTH_INCHES, 2.1 * len(label_counts)), layout="constrained", dpi=DPI)
    axes = figure.subplots(len(label_counts), 1, squeeze=False)[:, 0]
    for axis, labels in zip(axes, label_counts):
        class_names = _class_names(data, section, labels)
        width = 0.8 / max(len(impls), 1)
        for position, impl in enumerate(impls):
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            per_seed = []
            for run_id in runs["run_id"]:
                top1 = data.history(run_id, interface.EVAL_TOP1)
                if top1.empty:
                    continue
                last = int(top1.index[-1])
                per_seed.append([_at(data.history(run_id, prefix + name), last) for name in class_names])
            if not per_seed:
                continue
            found = True
            values = np.array(per_seed) * 100
            mean = np.nanmean(values, axis=0)
            x = np.arange(len(class_names)) + (position - (len(impls) - 1) / 2) * width
            axis.bar(x, mean, width, color=color(impl, impls),
                     label=f"{impl} (mean of {len(per_seed)} seed{'s' if len(per_seed) > 1 else ''})")
            if len(per_seed) > 1:
                axis.errorbar(x, mean, yerr=[mean - np.nanmin(values, axis=0), np.nanmax(values, axis=0) - mean],
                              fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
        axis.set_xticks(range(len(class_names)), class_names, fontsize=7)
        axis.set_ylim(0, 100)
        axis.set_ylabel("test accuracy %")
        axis.set_title(f"Per-class accuracy at the last evaluation, {labels} labels")
        # Below the class names: inside the axes it hid bars, beside them it crowded the class names.
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=len(impls), frameon=False)
    if not found:
        return None
    path = _save(figure, report_dir, section, "per_class_accuracy")
    return FigureFile(path, "Per-class test accuracy of the EMA model at the last evaluation: mean over seeds (bar), "
                            "lowest to highest seed (whisker).")


def _class_names(data: ReportData, section: Section, labels: int) -> list[str]:
    for run_id in section.runs.loc[section.runs["labels"] == labels, "run_id"]:
        if run_id in data.confusion:
            return list(data.confusion[run_id].class_names)
    prefix = interface.EVAL_CLASS_ACCURACY_PREFIX
    keys = data.histories.loc[data.histories["run_id"].isin(section.runs["run_id"]), "key"]
    return sorted({key[len(prefix):] for key in keys if key.startswith(prefix)})


def _at(history: pd.Series, step: int) -> float:
    return float(history[step]) if step in history.index else np.nan
