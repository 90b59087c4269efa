"""`bench report`: the runs in MLflow turned into tables, figures, Markdown and PDF.

collect (MLflow → pandas) → summaries (per run, pooled in sections) → tables, comparisons, method_tables (numbers;
anchors: the published ones; formatting: how they are written) → figures (PNGs) → render (Markdown, PDF).
The report reads the MLflow store only (and the difference ledger, implementations/ledger.py, which it prints
beside the runs); it never imports training code.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.report.collect import ReportError, collect, resolve_tracking_uri
from harness.report.comparisons import headline_verdicts, paired_difference_table
from harness.report.time_to_accuracy import DEFAULT_TARGETS, parse_targets, time_to_accuracy_table
from harness.report.verdicts import DEFAULT_MARGIN
from harness.report.figures import draw_section_figures, methods_top1_vs_iteration
from harness.report.method_tables import method_differences_table, method_ledger_table, methods_table
from harness.report.render import html_document, markdown_report, write_pdf
from harness.report.summaries import Section, run_summaries, sections
from harness.report.tables import (ledger_table, method_tables, other_metrics_table, published_table, settings_table,
                                   top1_table, unfinished_table)
from implementations.interface import DEFAULT_EXPERIMENT

__all__ = ["ReportError", "ReportOutcome", "make_report", "resolve_tracking_uri"]

FORMATS = ("md", "pdf")
MARKDOWN_NAME = "report.md"
PDF_NAME = "report.pdf"
MARKER_NAME = ".bench-report"  # marks a directory this command may replace


@dataclass
class ReportOutcome:
    out_dir: Path
    markdown: Path | None
    pdf: Path | None
    pdf_pages: int | None
    figures: list[Path]
    finished_runs: int
    unfinished_runs: dict[str, int]  # status -> count
    sections: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # the lines that open the report


def make_report(tracking_uri: str, experiment: str | None = None, parent_run_id: str | None = None,
                out_dir: Path | None = None, formats: tuple[str, ...] = FORMATS,
                margin: float = DEFAULT_MARGIN, targets: str = DEFAULT_TARGETS) -> ReportOutcome:
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ReportError(f"--format takes a comma-separated subset of {','.join(FORMATS)}, not '{','.join(formats)}'.")
    if not margin > 0:
        raise ReportError(f"--margin is the equivalence margin in percentage points and must be above 0, not {margin:g}.")
    target_list = parse_targets(targets)
    data = collect(tracking_uri, experiment=experiment, parent_run_id=parent_run_id)
    if out_dir is None:
        name = experiment or DEFAULT_EXPERIMENT
        out_dir = Path("reports") / (f"{name}-{parent_run_id[:8]}" if parent_run_id else name)
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)

    summaries = run_summaries(data)
    report_sections = sections(data, summaries)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=_parent(out_dir)))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the report private to this user
    try:
        section_tables = {section.slug: _section_tables(section, data, margin, target_list) for section in report_sections}
        section_figures = {section.slug: draw_section_figures(data, section, staging) for section in report_sections}
        section_methods = {section.slug: method_tables(section, data) for section in report_sections}
        overview = [table for table in (methods_table(report_sections),
                                        method_differences_table(report_sections, data),
                                        method_ledger_table(report_sections, data)) if table is not None]
        overview_figures = [figure for figure in (methods_top1_vs_iteration(data, report_sections, staging),)
                            if figure is not None]
        verdicts = headline_verdicts(report_sections, margin)
        text = markdown_report(data, report_sections, overview, overview_figures, section_methods,
                               section_tables, section_figures, unfinished_table(data), ledger_table(),
                               dt.datetime.now(dt.timezone.utc), verdicts)
        pdf_pages = None
        if "md" in formats:
            (staging / MARKDOWN_NAME).write_text(text, encoding="utf-8")
        if "pdf" in formats:
            pdf_pages = write_pdf(html_document(text, data.source), staging, staging / PDF_NAME)
        (staging / MARKER_NAME).write_text("Written by `bench report`; the next `bench report` may replace it.\n")
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    figures = [out_dir / figure.path for figure_list in (overview_figures, *section_figures.values())
               for figure in figure_list]
    unfinished = data.unfinished["status"].value_counts().to_dict()
    return ReportOutcome(
        out_dir,
        out_dir / MARKDOWN_NAME if "md" in formats else None,
        out_dir / PDF_NAME if "pdf" in formats else None,
        pdf_pages, figures, len(data.finished), unfinished, [section.title for section in report_sections], verdicts,
    )


def _section_tables(section: Section, data, margin: float, targets: list) -> list:
    """A section's tables; one that learned nothing has no differences, verdicts or published numbers."""
    learned = section.at_chance is None
    tables = [top1_table(section), paired_difference_table(section, margin) if learned else None,
              time_to_accuracy_table(section, data, targets) if learned else None,
              settings_table(section, data), other_metrics_table(section), published_table(section) if learned else None]
    return [table for table in tables if table is not None]


def _parent(out_dir: Path) -> Path:
    parent = out_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir} is a file; pass a directory for the report.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_NAME).exists():
        raise ReportError(f"--out {out_dir} already holds files that `bench report` did not write; "
                          "choose another directory.")


def _replace(staging: Path, out_dir: Path) -> None:
    """Swaps the finished report in, so a failed run never leaves a half-written one behind."""
    previous = None
    if out_dir.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=_parent(out_dir)))
        previous.rmdir()
        out_dir.rename(previous)
    staging.rename(out_dir)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)

