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
    axis.plot(steps, curves.mean(axis=1) * scale, color=line_color, linewidth=1.2, linestyle=_linestyle(label),
              marker="o" if len(steps) <= 40 else None, markersize=2.5,  # few evaluations: show where they are
              label=label)
    if curves.shape[1] > 1:
        axis.fill_between(steps, curves.min(axis=1) * scale, curves.max(axis=1) * scale,
                          color=line_color, alpha=0.2, linewidth=0)


def _label_grid(label_counts: list[int], rows_per_label: bool, panels_per_label: int, height: float,
                full_width: bool = False, sharex: bool | str = True):
    if rows_per_label:
        shape = (len(label_counts), panels_per_label)
    else:
        columns = min(COLUMNS_PER_ROW, len(label_counts))
        shape = (int(np.ceil(len(label_counts) / columns)), columns)
    width = WIDTH_INCHES if shape[1] > 1 or full_width else WIDTH_INCHES * 0.6  # one panel: no need to stretch it
    figure = Figure(figsize=(width, height * shape[0] + LEGEND_INCHES), layout="constrained", dpi=DPI)
    axes = figure.subplots(*shape, squeeze=False, sharex=sharex)
    return figure, axes


LEGEND_INCHES = 0.3  # the figure's one legend, below its panels


def seeds_label(impl: str, seed_counts: set[int]) -> str:
    """The legend's entry of an implementation: how many seeds its lines average, over every panel."""
    low, high = min(seed_counts), max(seed_counts)
    return f"{impl} ({low}{f'–{high}' if high != low else ''} seed{'s' if high != 1 else ''})"


def implementations_legend(figure: Figure, impls: list[str], seeds: dict[str, set[int]], **properties) -> None:
    """One legend below the panels, never over data: each implementation drawn (its colour and line style, and
    `properties`, as its lines are) with the seeds they average."""
    from matplotlib.lines import Line2D

    drawn = [impl for impl in impls if impl in seeds]
    if not drawn:
        return
    handles = [Line2D([], [], color=color(impl, impls), **{"linewidth": 1.2, "linestyle": _linestyle(impl), **properties})
               for impl in drawn]
    figure.legend(handles, [seeds_label(impl, seeds[impl]) for impl in drawn], loc="outside lower center",
                  ncols=min(len(drawn), 4), frameon=False)


def iteration_axis(axis, last_step: float) -> None:
    """Iterations from 0 to the last evaluated one (one point, or many: the same scale for every panel)."""
    axis.set_xlim(0, max(last_step, 1) * 1.04)
    axis.xaxis.set_major_formatter(EngFormatter(sep=""))


def minimum_span(axis, span: float, low: float | None = None, high: float | None = None) -> None:
    """At least `span` on the y-axis, within [low, high]: a flat line or one point gets a readable scale instead
    of ticks a rounding error apart."""
    bottom, top = axis.get_ylim()
    if top - bottom >= span:
        return
    centre = (bottom + top) / 2
    bottom, top = centre - span / 2, centre + span / 2
    if low is not None and bottom < low:
        bottom, top = low, low + span
    if high is not None and top > high:
        bottom, top = high - span, high
    axis.set_ylim(bottom, top)


def _last_step(data: ReportData, runs: pd.DataFrame, key: str) -> float:
    steps = [data.history(run_id, key).index.max() for run_id in runs["run_id"]]
    steps = [step for step in steps if pd.notna(step)]
    return float(max(steps)) if steps else 1.0


def _save(figure: Figure, report_dir: Path, section: Section, name: str, tight: bool = False) -> Path:
    relative = Path("figures") / f"{section.slug}_{name}.png"
    figure.savefig(report_dir / relative, dpi=DPI, **({"bbox_inches": "tight", "pad_inches": 0.05} if tight else {}))
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
    seeds: dict[str, set[int]] = {}
    for axis, labels in zip(axes.flat, label_counts):
        for impl in impls:
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            curves = _seed_curves(data, runs, interface.EVAL_TOP1)
            if not curves.empty:
                _plot_band(axis, curves, impl, color(impl, impls), scale=100)
                seeds.setdefault(impl, set()).add(curves.shape[1])
        axis.set_title(f"{labels} labels")
        axis.set_xlabel("iteration")
        axis.set_ylabel("test top-1 % (EMA model)")
        minimum_span(axis, 5, 0, 100)
    iteration_axis(axes.flat[0], _last_step(data, section.runs, interface.EVAL_TOP1))
    for axis in list(axes.flat)[len(label_counts):]:
        axis.set_visible(False)
    implementations_legend(figure, impls, seeds, marker="o", markersize=2.5)
    path = _save(figure, report_dir, section, "top1_vs_iteration")
    return FigureFile(path, "Test top-1 accuracy of the EMA model at each evaluation: the mean over the seeds the "
                            "legend counts (line) and the range from the lowest to the highest seed (band).")


def top1_vs_training_time(data: ReportData, section: Section, report_dir: Path) -> FigureFile | None:
    """Per label count, each run's top-1 against the iteration and against its training time (time_to_accuracy.py):
    one line per seed, colour = implementation."""
    from harness.report.time_to_accuracy import seconds_at, training_seconds

    label_counts = sorted(section.runs["labels"].unique())
    impls = impl_order(section.runs["impl"])
    figure, axes = _label_grid(label_counts, rows_per_label=True, panels_per_label=2, height=2.3, sharex="col")
    seeds: dict[str, set[int]] = {}
    longest = 0.0
    for row, labels in enumerate(label_counts):
        for impl in impls:
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            for run in runs.itertuples():
                top1, seconds = data.history(run.run_id, interface.EVAL_TOP1), training_seconds(data, run.run_id)
                if top1.empty or seconds.empty:
                    continue
                minutes = [seconds_at(seconds, int(step)) / 60 for step in top1.index]
                longest = max(longest, *minutes)
                for axis, x in ((axes[row, 0], top1.index.to_numpy()), (axes[row, 1], minutes)):
                    axis.plot(x, top1.to_numpy() * 100, color=color(impl, impls), linewidth=1, marker="o",
                              markersize=2, linestyle=_linestyle(impl))
                seeds.setdefault(impl, set()).add(len(runs))
        for column, x_label in enumerate(("iteration", "training time (minutes; evaluation not counted)")):
            axis = axes[row, column]
            axis.set_title(f"{labels} labels")
            axis.set_xlabel(x_label)
            axis.set_ylabel("test top-1 % (EMA model)")
            minimum_span(axis, 5, 0, 100)
    if not seeds:
        return None
    iteration_axis(axes[0, 0], _last_step(data, section.runs, interface.EVAL_TOP1))
    axes[0, 1].set_xlim(0, max(longest, 1 / 60) * 1.04)
    implementations_legend(figure, impls, seeds, marker="o", markersize=2)
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
    seeds: dict[str, set[int]] = {}
    for row, labels in enumerate(label_counts):
        for column, (key, title) in enumerate(metrics):
            axis = axes[row, column]
            for impl in impls:
                runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
                curves = _seed_curves(data, runs, key)
                if not curves.empty:
                    _plot_band(axis, curves, impl, color(impl, impls), scale=100 if percent_axis else 1)
                    seeds.setdefault(impl, set()).add(curves.shape[1])
            axis.set_title(f"{title}, {labels} labels")
            if percent_axis:
                axis.yaxis.set_major_formatter(PercentTicks())
                minimum_span(axis, 5, 0, 100)
            else:
                minimum_span(axis, max(0.05, 0.1 * abs(np.mean(axis.get_ylim()))), low=0)
            if row == len(label_counts) - 1:
                axis.set_xlabel("iteration")
    iteration_axis(axes[0, 0], max(_last_step(data, section.runs, key) for key, _ in metrics))
    implementations_legend(figure, impls, seeds, marker="o", markersize=2.5)
    path = _save(figure, report_dir, section, name)
    return FigureFile(path, caption + ": the mean over the seeds the legend counts (line), lowest to highest seed "
                                      "(band).")


def confusion_matrices(data: ReportData, section: Section, report_dir: Path) -> list[FigureFile]:
    figures = []
    for labels in sorted(section.runs["labels"].unique()):
        panels = []
        for impl in impl_order(section.runs["impl"]):
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            matrices = [data.confusion[run_id] for run_id in runs["run_id"] if run_id in data.confusion]
            if matrices:
                panels.append((impl, matrices))
        if not panels:
            continue
        figure = _confusion_figure(panels, labels)
        path = _save(figure, report_dir, section, f"confusion_matrix_{labels}_labels", tight=True)
        figures.append(FigureFile(path, f"Confusion matrices at the last evaluation, {labels} labels: counts summed "
                                        "over seeds, each row as % of its true class (the diagonal is per-class "
                                        "accuracy)."))
    return figures


def _confusion_figure(panels: list[tuple[str, list]], labels: int) -> Figure:
    """At most COLUMNS_PER_ROW matrices a row, the class names once per row, numbers legible printed at 100 %,
    and one colour bar the height of the matrices beside the last of each row."""
    columns = min(COLUMNS_PER_ROW, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    # No layout engine: it would not make room for the colour bars, which sit outside their axes; the file is
    # cropped to what is drawn instead (_save's tight).
    figure = Figure(figsize=(WIDTH_INCHES if columns > 1 else WIDTH_INCHES * 0.55, 3.0 * rows), dpi=DPI)
    axes = figure.subplots(rows, columns, squeeze=False,
                           gridspec_kw={"wspace": 0.08, "hspace": 0.45, "left": 0.13, "right": 0.93})
    for index, (impl, matrices) in enumerate(panels):
        axis = axes.flat[index]
        counts = sum(m.matrix for m in matrices)  # summed over seeds, then each true class's row → %
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 100
        class_names = matrices[0].class_names
        image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=100)
        for (true, predicted), value in np.ndenumerate(shares):
            axis.text(predicted, true, f"{value:.0f}", ha="center", va="center", fontsize=6.5,
                      color="white" if value > 60 else "black")
        axis.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=6.5)
        first_of_row = index % columns == 0
        axis.set_yticks(range(len(class_names)), class_names if first_of_row else [], fontsize=6.5)
        axis.set_xlabel("predicted class")
        if first_of_row:
            axis.set_ylabel("true class")
        axis.grid(False)
        steps = sorted({m.step for m in matrices})
        at = f"iteration {steps[0]:,}" if len(steps) == 1 else f"iterations {steps[0]:,}–{steps[-1]:,}"
        axis.set_title(f"{impl}, {labels} labels\n{len(matrices)} seed{'s' if len(matrices) > 1 else ''}, {at}")
        if index % columns == columns - 1 or index == len(panels) - 1:  # in axes coordinates: the matrix's height
            figure.colorbar(image, cax=axis.inset_axes([1.05, 0.0, 0.05, 1.0]), label="% of the true class")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    return figure


def per_class_accuracy(data: ReportData, section: Section, report_dir: Path) -> FigureFile | None:
    label_counts = sorted(section.runs["labels"].unique())
    impls = impl_order(section.runs["impl"])
    figure = Figure(figsize=(WIDTH_INCHES, 2.1 * len(label_counts) + LEGEND_INCHES), layout="constrained", dpi=DPI)
    axes = figure.subplots(len(label_counts), 1, squeeze=False)[:, 0]
    seeds: dict[str, set[int]] = {}
    for axis, labels in zip(axes, label_counts):
        class_names = _class_names(data, section, labels)
        width = 0.8 / max(len(impls), 1)
        for position, impl in enumerate(impls):
            runs = section.runs[(section.runs["labels"] == labels) & (section.runs["impl"] == impl)]
            values = _class_accuracies(data, runs, class_names)
            if values is None:
                continue
            seeds.setdefault(impl, set()).add(len(values))
            mean = values.mean(axis=0)
            x = np.arange(len(class_names)) + (position - (len(impls) - 1) / 2) * width
            axis.bar(x, mean, width, color=color(impl, impls))
            if len(values) > 1:
                axis.errorbar(x, mean, yerr=[mean - values.min(axis=0), values.max(axis=0) - mean],
                              fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
        axis.set_xticks(range(len(class_names)), class_names, fontsize=7)
        axis.set_ylim(0, 100)
        axis.set_ylabel("test accuracy %")
        axis.set_title(f"Per-class accuracy at the last evaluation, {labels} labels")
    if not seeds:
        return None
    implementations_legend(figure, impls, seeds, linewidth=6, linestyle="-")  # a bar's colour
    path = _save(figure, report_dir, section, "per_class_accuracy")
    return FigureFile(path, "Per-class test accuracy of the EMA model at the last evaluation: the mean over the "
                            "seeds the legend counts (bar), lowest to highest seed (whisker).")


def _class_accuracies(data: ReportData, runs: pd.DataFrame, class_names: list[str]) -> np.ndarray | None:
    """seed × class test accuracy (%) at each run's last evaluation; None when no run logged them."""
    prefix = interface.EVAL_CLASS_ACCURACY_PREFIX
    per_seed = []
    for run_id in runs["run_id"]:
        top1 = data.history(run_id, interface.EVAL_TOP1)
        if top1.empty:
            continue
        values = [_at(data.history(run_id, prefix + name), int(top1.index[-1])) for name in class_names]
        if not np.isnan(values).any():
            per_seed.append(values)
    return np.array(per_seed) * 100 if per_seed else None


def _class_names(data: ReportData, section: Section, labels: int) -> list[str]:
    for run_id in section.runs.loc[section.runs["labels"] == labels, "run_id"]:
        if run_id in data.confusion:
            return list(data.confusion[run_id].class_names)
    prefix = interface.EVAL_CLASS_ACCURACY_PREFIX
    keys = data.histories.loc[data.histories["run_id"].isin(section.runs["run_id"]), "key"]
    return sorted({key[len(prefix):] for key in keys if key.startswith(prefix)})


def _at(history: pd.Series, step: int) -> float:
    return float(history[step]) if step in history.index else np.nan
