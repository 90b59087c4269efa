"""The tables of a report of several methods: top-1 per method beside the published numbers, how the methods
differ, and the per-method difference ledger."""

from __future__ import annotations

import pandas as pd

from harness.report.anchors import PUBLISHED, TORCHSSL_README
from harness.report.collect import ReportData
from harness.report.formatting import (
    TOP1_BEST,
    TOP1_MEDIAN,
    Table,
    flag_notes,
    groups,
    iterations_text,
    marks_of,
    percent,
    seeds_text,
    with_marks,
)
from harness.report.summaries import Section


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
        for impl, labels, group in groups(section.summaries):
            marks = marks_of(group)
            reference = published.top1.get(labels) if published else None
            rows.append([
                algorithm, impl, str(labels), seeds_text(group), iterations_text(group),
                with_marks(percent(group["top1_best"]), marks), with_marks(percent(group["top1_median_window"]), marks),
                "{:.2f} ± {:.2f}".format(*reference) if reference else "–",
            ])
    summaries = pd.concat([section.summaries for section in report_sections])
    runs = pd.concat([section.runs for section in report_sections])
    notes = flag_notes(summaries, runs) + [
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
