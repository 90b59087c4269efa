"""The report's verdicts and time to accuracy, on a sqlite MLflow store these tests write (the run layout of
harness/tracking/), checked against statsmodels and scipy computed here from the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from scipy import stats
from statsmodels.stats.weightstats import DescrStatsW

from implementations import interface
from tests.test_report import LAST, PAIRED, TIME, markdown_tables, number, report, write_child

# Last-evaluation top-1 per seed 0, 1, 2: (own, torchssl), one label count per kind of verdict at a ±1 pp margin.
CASES = {
    40: ("equivalent", (0.500, 0.502, 0.498), (0.499, 0.503, 0.4985)),
    250: ("lower", (0.40, 0.41, 0.42), (0.45, 0.455, 0.47)),
    4000: ("higher", (0.60, 0.62, 0.61), (0.55, 0.565, 0.555)),
    1000: ("undecided", (0.30, 0.40, 0.35), (0.36, 0.33, 0.37)),
}
ITERATIONS_PER_SECOND = {"own": 2.0, "torchssl": 1.25}  # every time below a minute: shown in seconds


@pytest.fixture(scope="module")
def verdict_store(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("verdict-store")
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    experiment = client.create_experiment("verdicts")
    for labels, (_, own, torchssl) in CASES.items():
        for impl, finals in (("own", own), ("torchssl", torchssl)):
            for seed, final in enumerate(finals):
                run_id = write_child(client, experiment, impl=impl, labels=labels, seed=seed, preset="smoke",
                                     top1=(final / 2, final * 0.95, final))
                client.log_batch(run_id, metrics=[Metric(interface.TRAIN_ITERATIONS_PER_SECOND,
                                                         ITERATIONS_PER_SECOND[impl], 0, step)
                                                  for step in range(10, 61, 10)])
    return {"output_dir": output_dir, "client": client, "experiment": experiment}


@pytest.fixture(scope="module")
def verdict_report(verdict_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("verdict-report")
    result = report("--output-dir", str(verdict_store["output_dir"]), "--experiment", "verdicts", "--out", str(out),
                    "--format", "md", "--margin", "1")
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    return {"output": result.output, "text": text, "tables": markdown_tables(text)}


def seeds_to_decide(mean: float, sd: float, margin: float) -> int:
    """The first n whose interval at this mean and spread decides, counted one n at a time."""
    n = 2
    while True:
        error = sd / np.sqrt(n)
        if abs(mean) < margin and stats.t.ppf(0.95, n - 1) * error < margin - abs(mean):
            return n
        if stats.t.ppf(0.975, n - 1) * error < abs(mean):
            return n
        n += 1


@pytest.mark.parametrize("labels", sorted(CASES))
def test_each_kind_of_verdict_is_the_one_statsmodels_gives_for_the_same_paired_differences(verdict_report, labels):
    kind, own, torchssl = CASES[labels]
    differences = (np.array(own) - np.array(torchssl)) * 100
    described = DescrStatsW(differences)
    low, high = described.tconfint_mean(alpha=0.05)
    p_equivalent = described.ttost_mean(-1.0, 1.0)[0]
    expected_kind = ("equivalent" if p_equivalent < 0.05 else "lower" if high < 0 else "higher" if low > 0
                     else "undecided")
    assert expected_kind == kind  # the case is what its name says
    (row,) = [row for row in verdict_report["tables"][PAIRED]
              if row["labels"] == str(labels) and row["measure"] == LAST]
    cell = row["verdict (margin ±1 pp)"]
    interval = f"[{low:+.2f}, {high:+.2f}]"
    assert number(row["95 % interval (paired t)"]) == interval
    if kind == "equivalent":
        assert cell.startswith("equivalent within ±1 pp") and f"TOST p = {p_equivalent:.3f}" in cell
    elif kind in ("lower", "higher"):
        assert cell.startswith(f"own {kind} than torchssl by {abs(differences.mean()):.2f} pp {interval}")
    else:
        needed = seeds_to_decide(differences.mean(), differences.std(ddof=1), 1.0)
        assert cell.startswith("undecided") and f"about {needed} paired seeds would decide" in cell
    headline = f"{labels} labels, top-1 at the last evaluation: {cell}"
    assert any(headline in line for line in verdict_report["text"].split("\n")[:40])  # in the box that opens it
    assert f"Verdict: fixmatch, {headline}" in verdict_report["output"]  # and in the terminal


def test_one_paired_seed_gives_no_verdict(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("one-seed")
    for impl, final in (("own", 0.5), ("torchssl", 0.48)):
        write_child(client, experiment, impl=impl, labels=40, seed=0, preset="smoke", top1=(0.3, final))
    result = report("--output-dir", str(tmp_path), "--experiment", "one-seed", "--out", str(tmp_path / "r"),
                    "--format", "md")
    rows = markdown_tables((tmp_path / "r/report.md").read_text())[PAIRED]
    assert {row["verdict (margin ±1 pp)"] for row in rows if row["measure"] == LAST} == {
        "one seed, no verdict (own − torchssl = +2.00 pp)"}
    assert "Verdict: fixmatch, 40 labels, top-1 at the last evaluation: one seed, no verdict" in result.output


def test_time_to_accuracy_is_the_first_evaluation_at_or_above_each_target_in_mlflow(verdict_store, verdict_report):
    client, experiment = verdict_store["client"], verdict_store["experiment"]
    rows = verdict_report["tables"][TIME]
    for labels in CASES:
        runs = [run for run in client.search_runs([experiment], f"tags.labels = '{labels}'")
                if run.data.tags.get("impl")]
        best_final = max(run.data.metrics[interface.EVAL_TOP1] for run in runs)
        for fraction in (0.5, 0.8, 0.9):
            target = fraction * best_final
            for impl in ("own", "torchssl"):
                firsts = []
                for run in (run for run in runs if run.data.tags["impl"] == impl):
                    history = sorted(client.get_metric_history(run.info.run_id, interface.EVAL_TOP1),
                                     key=lambda point: point.step)
                    firsts += [next(point.step for point in history if point.value >= target)
                               ] if any(point.value >= target for point in history) else []
                (row,) = [row for row in rows if row["labels"] == str(labels) and row["implementation"] == impl
                          and row["target top-1"] == f"{fraction}x = {100 * target:.2f} %"]
                assert row["seeds that reach it"] == f"{len(firsts)} of 3"
                if firsts:
                    median = float(np.median(firsts))
                    assert row["iteration (median)"] == f"{int(round(median)):,}"
                    # every window logs at a steady rate: iterations / rate
                    assert row["training time (median)"] == f"{median / ITERATIONS_PER_SECOND[impl]:.1f} s"
                else:
                    assert row["iteration (median)"] == "not reached"


def test_the_published_number_is_a_target_where_one_exists(verdict_report):
    targets = {row["target top-1"] for row in verdict_report["tables"][TIME] if row["labels"] == "250"}
    assert {"FixMatch paper (RA) 94.93 %", "TorchSSL README 95.14 %"} <= targets
    assert {row["iteration (median)"] for row in verdict_report["tables"][TIME]
            if row["target top-1"].startswith("FixMatch paper")} == {"not reached"}


@pytest.mark.parametrize("arguments, message", [
    (("--margin", "0"), "--margin is the equivalence margin in percentage points and must be above 0"),
    (("--targets", "0.5x,fast"), "--targets takes a comma-separated list"),
    (("--targets", "2x"), "--targets takes a comma-separated list"),
    (("--targets", "40,40"), "--targets lists a target twice"),
])
def test_bad_margins_and_targets_are_one_sentence(verdict_store, tmp_path, arguments, message):
    result = report("--output-dir", str(verdict_store["output_dir"]), "--experiment", "verdicts",
                    "--out", str(tmp_path / "r"), *arguments)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()
