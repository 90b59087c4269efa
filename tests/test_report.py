"""`bench report`: tables, figures, Markdown and PDF from the MLflow store, and nothing else.

The end-to-end tests (slow) build a real store with the real `bench run` (own, plus torchssl when its
checkout is present) on the smoke preset and the real images in ../shared, run `bench report`, and check
every number in the Markdown against values recomputed here straight from MLflow. The other tests write
small stores with the MLflow client in the run layout of harness/tracking/ (a real sqlite store) to
put the report in states a short grid does not reach: unfinished runs, mixed presets, bad input.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from PIL import Image
from scipy import stats

from harness import tracking
from harness.cli import main as bench_cli
from harness.presets import PRESETS
from implementations import interface
from implementations.interface import DEFAULT_EXPERIMENT
from tests.fixtures_data import SUBSET_DIR, torchssl_checkout

PAPER_ITERATIONS = 2**20
LABELS = (40,)  # of the end-to-end grid: one label count keeps it to 7 runs
MARKERS = "†‡§"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def bench(*arguments: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *arguments], capture_output=True, text=True,
                          timeout=timeout)


def report(*arguments: str):
    """`bench report` in this process (the CLI exactly as a user calls it, minus interpreter start-up)."""
    return CliRunner().invoke(bench_cli, ["report", *arguments], catch_exceptions=False)


def markdown_tables(text: str, sections: int = 1) -> dict[str, list[dict[str, str]]]:
    """Every '**Table N.** title' followed by a pipe table, as title -> rows of column -> cell (the rows of
    the same table in each of several sections concatenated)."""
    tables = {}
    for match in re.finditer(r"\*\*Table \d+\.\*\* (.+)\n\n((?:\|.*\|\n)+)", text):
        lines = [line for line in match.group(2).splitlines() if line.strip()]
        header = [cell.strip() for cell in lines[0].strip("|").split(" | ")]
        rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
        title = match.group(1).strip()
        assert sections > 1 or title not in tables, f"two tables titled {title!r}"
        tables.setdefault(title, []).extend(dict(zip(header, row)) for row in rows)
    return tables


def number(cell: str) -> str:
    """The value of a cell without its flags (†, ‡, §)."""
    return cell.strip().rstrip(MARKERS).strip()


def mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    mean = statistics.mean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f} ± n/a"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


# ---- the end-to-end store: the real `bench run` ------------------------------------------------------


def torchssl_problem() -> str | None:
    """Why torchssl runs cannot be part of the grid, or None (never when the bundle is beside the project)."""
    try:
        torchssl_checkout()
    except pytest.skip.Exception as skipped:
        return str(skipped)
    return None


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """own, own-as-torchssl (+ torchssl when its checkout is present) × labels 40 × seeds {0, 1}, smoke preset; then
    `bench report` on the store."""
    output_dir = tmp_path_factory.mktemp("report-grid")
    impls = "own,own-as-torchssl" if torchssl_problem() else "own,own-as-torchssl,torchssl"
    ran = bench("run", "--impl", impls, "--labels", ",".join(map(str, LABELS)), "--seeds", "0,1", "--preset", "smoke",
                "--max-parallel", "2",
                "--device", "cpu", "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Seed 0 of 40 labels again with another own-only speed setting: a new own run, no other run trained again.
    rerun = bench("run", "--impl", impls, "--labels", "40", "--seeds", "0", "--preset", "smoke", "--precision", "bf16",
                  "--device", "cpu", "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    out = output_dir / "report"
    made = bench("report", "--output-dir", str(output_dir), "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    uri = f"sqlite:///{output_dir / 'mlflow.db'}"
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        children = mlflow.search_runs(experiment_names=[DEFAULT_EXPERIMENT],
                                      filter_string=f"tags.`{tracking.ROLE_TAG}` = '{tracking.CHILD}'")
    finally:
        mlflow.set_tracking_uri(previous_uri)  # None: unset again, as before
    client = MlflowClient(uri)
    expected = {}
    set_aside = {}
    newest_first = children.sort_values("end_time", ascending=False)
    for _, run in newest_first.iterrows():
        assert run["status"] == "FINISHED"
        key = (run["tags.impl"], int(run["tags.labels"]), int(run["tags.seed"]))
        if key in expected:  # an older run of the same seed: the report keeps the newest
            set_aside[key] = run
            continue
        histories = {key: sorted(client.get_metric_history(run["run_id"], key), key=lambda m: m.step)
                     for key in (interface.EVAL_TOP1, interface.EVAL_TOP5, interface.EVAL_F1, interface.EVAL_AUC)}
        top1 = [metric.value for metric in histories[interface.EVAL_TOP1]]
        last_step = histories[interface.EVAL_TOP1][-1].step
        at_last = {key: next(m.value for m in history if m.step == last_step) for key, history in histories.items()}
        best = max(top1)
        # The median's window: evaluations after iteration K − 20·E, the same iterations for every implementation.
        window_start = int(run["params.iterations"]) - 20 * int(run["params.eval_interval"])
        in_window = [metric.value for metric in histories[interface.EVAL_TOP1] if metric.step > window_start]
        expected[key] = {
            "last": top1[-1], "best": best, "median20": statistics.median(in_window),
            "best_iteration": next(m.step for m in histories[interface.EVAL_TOP1] if m.value == best),
            "top5": at_last[interface.EVAL_TOP5], "f1": at_last[interface.EVAL_F1], "auc": at_last[interface.EVAL_AUC],
            "iterations": int(run["metrics.summary/iterations"]),
            "split_digest": run["tags.split_digest"], "git_commit": run["tags.git_commit"], "run_id": run["run_id"],
            "torchssl_commit": run.get("tags.torchssl_commit"),
        }
    text = (out / "report.md").read_text()
    return {"out": out, "stdout": made.stdout, "text": text, "tables": markdown_tables(text),
            "expected": expected, "impls": impls.split(","), "rerun": rerun, "set_aside": set_aside}


def groups(grid):
    for impl in grid["impls"]:
        for labels in LABELS:
            yield impl, labels, [grid["expected"][(impl, labels, seed)] for seed in (0, 1)]


def row_of(table: list[dict[str, str]], impl: str, labels: int) -> dict[str, str]:
    (row,) = [row for row in table if row["implementation"] == impl and row["labels"] == str(labels)]
    return row


TOP1 = "Top-1 accuracy (%) of the EMA model on the test set, mean ± std over seeds"
OTHER = "Other test-set metrics at the last evaluation, mean ± std over seeds"
PAIRED = "Differences between implementations, paired by seed (percentage points)"
SETTINGS = "Settings each implementation chose for itself, as recorded by its runs"
LAST = "top-1 % at last evaluation"
BEST = "best top-1 % over all evaluations (chosen on the test set: optimistic)"
MEDIAN = "top-1 %, median over the final window of 20 evaluation intervals"
PUBLISHED = "Ours beside the published numbers (top-1 accuracy %, CIFAR-10)"
TIME = "Time to accuracy: the first evaluation at which the EMA model's top-1 reaches each target"


@pytest.mark.slow
def test_top1_table_holds_last_best_and_median_of_last_20_as_in_mlflow(grid):
    table = grid["tables"][TOP1]
    assert len(table) == len(LABELS) * len(grid["impls"])
    for impl, labels, runs in groups(grid):
        row = row_of(table, impl, labels)
        assert row["seeds (n)"] == "2 (0, 1)"
        assert row["iterations run"] == f"{runs[0]['iterations']:,}" == f"{PRESETS['smoke'].iterations:,}"
        assert number(row[LAST]) == mean_std([run["last"] for run in runs])
        assert number(row[BEST]) == mean_std([run["best"] for run in runs])
        assert row["iteration of best, per seed"] == ", ".join(f"{run['best_iteration']:,}" for run in runs)
        assert number(row[MEDIAN]) == mean_std([run["median20"] for run in runs])
        # smoke: 40 iterations, an evaluation every 20, so the window of 20 intervals reaches back to the start
        assert row["median window: iterations (evaluations in it)"].startswith("1–40 (")


@pytest.mark.slow
def test_other_metrics_table_holds_top5_macro_f1_and_auc_at_the_last_evaluation(grid):
    table = grid["tables"][OTHER]
    for impl, labels, runs in groups(grid):
        row = row_of(table, impl, labels)
        assert number(row["top-5 accuracy %"]) == mean_std([run["top5"] for run in runs])
        assert number(row["macro F1 %"]) == mean_std([run["f1"] for run in runs])
        assert number(row["one-vs-one macro AUC (0–1)"]) == mean_std([run["auc"] for run in runs], 1.0, 4)


@pytest.mark.slow
def test_every_number_of_a_short_run_on_the_subset_carries_both_flags_and_their_footnotes(grid):
    for title in (TOP1, OTHER):
        for row in grid["tables"][title]:
            for column, cell in row.items():
                if "%" in column or "AUC" in column:
                    assert "†" in cell and "‡" in cell, (column, cell)
    assert f"† Trained 40 of the paper's {PAPER_ITERATIONS:,} iterations" in grid["text"]
    assert "‡ Trained and evaluated on data that is not the official CIFAR-10" in grid["text"]


@pytest.mark.slow
def test_a_grid_that_learned_nothing_says_so_and_shows_no_verdict_difference_or_published_numbers(grid):
    # The smoke preset trains 40 iterations: each run's last count of correct test images is one that predictions
    # unrelated to the image reach, given how often it predicts each class (Cohen's chance agreement, at least 10 %),
    # at p = 0.001 over the section's runs (Bonferroni).
    client = MlflowClient(f"sqlite:///{grid['out'].parent / 'mlflow.db'}")
    runs = list(grid["expected"].values())
    bounds = []
    for run in runs:
        last = max(entry.path for entry in client.list_artifacts(run["run_id"], "confusion_matrix")
                   if entry.path.endswith(".json"))  # step_<iteration>.json, zero-padded: the last evaluation's
        folder = grid["out"].parent / "confusion" / run["run_id"]
        folder.mkdir(parents=True)
        matrix = np.array(json.loads(Path(client.download_artifacts(run["run_id"], last, str(folder))).read_text())["matrix"])
        total = matrix.sum()
        chance = max(0.1, float(sum(matrix[k].sum() * matrix[:, k].sum() for k in range(10)) / total**2))
        assert stats.binomtest(int(np.trace(matrix)), int(total), chance, alternative="greater").pvalue > 0.001 / len(runs)
        bounds.append(stats.binom.isf(0.001 / len(runs), int(total), chance) / total)
    assert (f"These runs learned nothing: chance is 10 %, and none of the {len(runs)} runs' last top-1 beats what "
            f"predictions unrelated to the image reach on 1,017 test images (at most {100 * max(bounds):.1f} %"
            in grid["text"])
    assert PAIRED not in grid["tables"] and PUBLISHED not in grid["tables"] and TIME not in grid["tables"]
    assert "Verdicts" not in grid["text"] and "**Learned nothing**" in grid["text"]
    assert TOP1 in grid["tables"]  # what the runs did is still shown


@pytest.mark.slow
def test_a_seed_rerun_with_another_speed_flag_counts_once_and_trains_no_torchssl_run_again(grid):
    rerun, impls = grid["rerun"].stdout, len(grid["impls"])
    # own is new (its key covers the precision); own-as-torchssl (fp32 as TorchSSL) and torchssl are not
    assert f"{impls - 1} of {impls} runs already finished; skipping them." in rerun
    assert set(grid["set_aside"]) == {("own", 40, 0)}
    older = grid["set_aside"][("own", 40, 0)]
    assert older["params.precision"] == "fp32"
    assert "Set aside: 1 older finished run(s)" in grid["text"] and older["run_id"][:8] in grid["text"]
    assert row_of(grid["tables"][TOP1], "own", 40)["seeds (n)"] == "2 (0, 1)"


@pytest.mark.slow
def test_each_section_shows_every_implementation_choice_as_its_runs_recorded_it(grid):
    rows = {row["config field"]: row for row in grid["tables"][SETTINGS]}
    assert rows["randaugment_ops"]["own"] == "2" and rows["randaugment_ops"]["own-as-torchssl"] == "3"
    assert rows["width_change_conv_input"]["own"] == "activated" and rows["width_change_conv_input"]["own-as-torchssl"] == "raw"
    assert rows["precision"]["own"] == "bf16, fp32"  # seed 0 of 40 labels reran with bf16
    for stage in ("training", "evaluation"):  # on the CPU, as each run recorded it (no CUDA: no TF32)
        assert rows[f"(tf32_{stage} tag)"]["own"] == "none (not a CUDA device)"
    if "torchssl" not in grid["impls"]:
        pytest.skip(torchssl_problem())
    assert rows["randaugment_ops"]["torchssl"] == "3" and rows["cutout_fill"]["torchssl"] == "[125, 123, 114]"
    assert "What own and TorchSSL do differently" in grid["text"]


@pytest.mark.slow
def test_the_method_section_describes_each_implementation_as_it_ran_with_files_that_exist(grid):
    if "torchssl" not in grid["impls"]:
        pytest.skip(torchssl_problem())
    section = grid["text"].split("### Method as implemented", 1)[1]
    (title,) = [title for title in grid["tables"] if title.startswith("Method as implemented: FixMatch")]
    rows = {row["aspect"]: row for row in grid["tables"][title]}
    assert set(rows["loss"]) == {"aspect", "own", "own-as-torchssl", "torchssl"}
    assert "τ = 0.95" in rows["loss"]["own"] and "λ = 1" in rows["loss"]["own"]
    strong = rows["strong augmentation"]
    assert "RandAugment: 2 operations" in strong["own"] and strong["own"].startswith("flip + crop, then RandAugment")
    assert "RandAugment: 3 operations" in strong["torchssl"] and strong["torchssl"].endswith("then flip + crop")
    assert strong["own-as-torchssl"] == strong["torchssl"]  # own switched to every TorchSSL choice
    assert "decay 0.999" in rows["EMA and evaluation"]["own"]
    assert rows["EMA and evaluation"]["own-as-torchssl"] == "same as own"
    assert "every 1,000 once past 80 %" in rows["EMA and evaluation"]["torchssl"]
    # Every file named is where the sheet says: own's in this repository, TorchSSL's in its pinned checkout.
    roots = {"own": Path(__file__).resolve().parents[1], "torchssl": torchssl_checkout()}
    for impl, root in roots.items():
        named = [path.strip() for entry in rows["where it lives"][impl].split("; ")
                 for path in entry.split(" (")[0].split(", ")]
        assert named and all((root / path).is_file() for path in named), (impl, named)
    assert section.index("Method as implemented") < section.index("What own and TorchSSL do differently")


def edges_drawn_on(png: Path) -> list[str]:
    """The edges of a figure that something is drawn on: a legend or a label cut off by the figure's border."""
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("L"))
    edges = {"left": pixels[:, :2], "right": pixels[:, -2:], "top": pixels[:2], "bottom": pixels[-2:]}
    return [edge for edge, strip in edges.items() if (strip < 250).any()]


@pytest.mark.slow
def test_every_referenced_figure_exists_and_is_a_png(grid):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", grid["text"])
    # top-1, losses, mask rate + pseudo-label accuracy, top-1 against time, a confusion matrix per label count,
    # per-class bars
    assert len(links) == 5 + len(LABELS)
    for link in links:
        assert not Path(link).is_absolute()
        with Image.open(grid["out"] / link) as image:
            assert image.format == "PNG"
            image.verify()
        assert edges_drawn_on(grid["out"] / link) == [], link  # nothing cut off


@pytest.mark.slow
def test_pdf_opens_with_the_number_of_pages_the_command_reports(grid):
    from pypdf import PdfReader

    pages = int(re.search(r"report\.pdf \((\d+) pages\)", grid["stdout"]).group(1))
    reader = PdfReader(grid["out"] / "report.pdf")
    assert len(reader.pages) == pages >= 2
    assert "Top-1 accuracy" in "".join(page.extract_text() for page in reader.pages)


PAGE_DPI = 50
MOST_BLANK = 0.85  # of a page's height, margins included; the last page may end anywhere
EDGE_MM = 4  # the page's margins are 12-16 mm: ink this close to the border is drawn past them


def page_problems(pdf: Path) -> list[str]:
    """Each page rendered (PDFium, the engine of pypdfium2), as a reader sees it printed: pages but the last that are
    nearly empty (a heading, a caption or a figure alone at the top), and ink at the border (a table or figure
    wider than the page)."""
    import pypdfium2

    problems = []
    document = pypdfium2.PdfDocument(str(pdf))
    edge = round(EDGE_MM / 25.4 * PAGE_DPI)
    for number, page in enumerate(document, start=1):
        ink = np.asarray(page.render(scale=PAGE_DPI / 72, grayscale=True).to_pil().convert("L")) < 200
        blank = 1 - ink.any(axis=1).mean()  # rows without ink, as a share of the page's height
        if blank > MOST_BLANK and number < len(document):
            problems.append(f"page {number} is {blank:.0%} blank")
        for side, strip in {"top": ink[:edge], "bottom": ink[-edge:], "left": ink[:, :edge],
                            "right": ink[:, -edge:]}.items():
            if strip.any():
                problems.append(f"page {number} has ink at its {side} edge")
    return problems


@pytest.mark.slow
def test_no_page_of_the_smoke_grid_report_is_nearly_empty_or_drawn_past_its_margins(grid):
    assert page_problems(grid["out"] / "report.pdf") == []


def test_a_three_implementation_report_judges_each_pair_and_no_page_is_nearly_empty_or_past_its_margins(learned,
                                                                                                        tmp_path):
    result = report("--output-dir", str(learned), "--experiment", "learned", "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert "18 finished run(s)" in result.output
    verdicts = [line for line in result.output.splitlines() if line.startswith("Verdict: ")]
    for first, second in (("own", "torchssl"), ("own", "own-as-torchssl"), ("own-as-torchssl", "torchssl")):
        judged = [line for line in verdicts if re.search(rf"[:(] {first} − {second} = ", line)
                  or re.search(rf": {first} (lower|higher) than {second} by ", line)]
        assert len(judged) == 2, (first, second, verdicts)  # one per label count
    assert page_problems(tmp_path / "report" / "report.pdf") == []
    for figure in (tmp_path / "report" / "figures").iterdir():
        assert edges_drawn_on(figure) == [], figure.name


@pytest.mark.slow
def test_how_obtained_section_names_splits_commits_and_iterations(grid):
    section = grid["text"].split("## How these numbers were obtained", 1)[1]
    for run in grid["expected"].values():
        assert f"`{run['split_digest'][:16]}`" in section
        assert f"`{run['git_commit'][:12]}`" in section
        if isinstance(run["torchssl_commit"], str) and run["torchssl_commit"]:
            assert f"TorchSSL `{run['torchssl_commit'][:12]}`" in section
    assert "cifar10" in section and "NOT the official full CIFAR-10" in section
    assert f"the paper trains {PAPER_ITERATIONS:,}" in section
    assert "Hardware and software." in section and "device cpu" in section


# ---- small stores in the run layout, written with the MLflow client --------------------------------


def write_child(client: MlflowClient, experiment_id: str, *, impl: str, labels: int, seed: int, preset: str,
                status: str = "FINISHED", top1: tuple[float, ...] = (0.30, 0.40), eval_interval: int = 20,
                iterations: int | None = None, official: bool = False, parent_id: str | None = None) -> str:
    config = PRESETS[preset].replace(seed=seed, **({"iterations": iterations} if iterations else {}))
    if parent_id is None:
        parents = client.search_runs([experiment_id], f"tags.`{tracking.ROLE_TAG}` = 'parent' and "
                                     f"tags.labels = '{labels}' and tags.preset = '{preset}'")
        parent_id = parents[0].info.run_id if parents else client.create_run(
            experiment_id, run_name=f"labels={labels} · {preset}",
            tags={tracking.ROLE_TAG: tracking.PARENT, "labels": str(labels), "preset": preset}).info.run_id
    run_id = client.create_run(experiment_id, run_name=f"{impl} · labels={labels} · seed={seed}", tags={
        tracking.ROLE_TAG: tracking.CHILD, "mlflow.parentRunId": parent_id, "impl": impl, "labels": str(labels),
        "seed": str(seed), "preset": preset, "split_digest": f"{labels:04d}{seed:04d}" + "ab" * 28,
        "data_identity": "cifar10" if official else "cifar10-subset", "data_official": str(official).lower(),
        "git_commit": "0123456789abcdef" * 2 + "01234567", "git_dirty": "false",
        **({"torchssl_commit": "f26e1d42967cec7f7c8a00c2e7ff9219d8ab7c92", "torchssl_tree_clean": "true"}
           if impl == "torchssl" else {}),
    }).info.run_id
    params = [Param(key, str(value)) for key, value in config.as_params().items()] + [Param("labels", str(labels))]
    stamp = int(time.time() * 1000)
    metrics = []
    for index, value in enumerate(top1):
        step = (index + 1) * eval_interval
        metrics += [Metric(interface.EVAL_TOP1, value, stamp, step),
                    Metric(interface.EVAL_TOP5, min(1.0, value + 0.3), stamp, step),
                    Metric(interface.EVAL_F1, value / 2, stamp, step), Metric(interface.EVAL_AUC, 0.5 + value / 2, stamp, step),
                    Metric(interface.TRAIN_SUPERVISED_LOSS, 2.0 - value, stamp, step)]
    last = len(top1) * eval_interval
    if status == "FINISHED":
        metrics.append(Metric("summary/iterations", last, stamp, last))
    client.log_batch(run_id, metrics=metrics, params=params)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("report-store")
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    ids = {}
    mixed = client.create_experiment("mixed")
    ids["own-40-0"] = write_child(client, mixed, impl="own", labels=40, seed=0, preset="smoke", top1=(0.20, 0.25))
    ids["running"] = write_child(client, mixed, impl="own", labels=40, seed=1, preset="smoke", status="RUNNING",
                                 top1=(0.90,))
    ids["failed"] = write_child(client, mixed, impl="own", labels=40, seed=2, preset="smoke", status="FAILED",
                                top1=(0.80,))
    client.set_tag(ids["failed"], tracking.ERROR_TAG, "the loss became NaN at iteration 20")
    ids["cpu"] = write_child(client, mixed, impl="own", labels=40, seed=0, preset="cpu", top1=(0.50, 0.60),
                             eval_interval=250)
    paired = client.create_experiment("paired")
    for impl in ("own", "torchssl"):
        write_child(client, paired, impl=impl, labels=250, seed=0, preset="smoke", top1=(0.3, 0.5))
    full = client.create_experiment("full-schedule")
    write_child(client, full, impl="own", labels=40, seed=0, preset="paper", official=True, top1=(0.86, 0.87),
                eval_interval=PAPER_ITERATIONS // 2)
    client.create_experiment("empty")
    return {"output_dir": output_dir, "client": client, "ids": ids}


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> Path:
    """own, own-as-torchssl and torchssl × 40 and 250 labels × 3 seeds that learned (cpu preset, 10 evaluations),
    with every signal a real run logs: the report at full size, every table and figure in it."""
    output_dir = tmp_path_factory.mktemp("learned-store")
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    experiment = client.create_experiment("learned")
    generator = np.random.default_rng(0)
    for labels, plateau in ((40, 0.55), (250, 0.80)):
        for impl, shift in (("own", 0.0), ("own-as-torchssl", -0.01), ("torchssl", -0.02)):
            for seed in range(3):
                curve = plateau * (1 - np.exp(-np.arange(1, 11) / 3)) + shift + generator.normal(0, 0.01, 10)
                run_id = write_child(client, experiment, impl=impl, labels=labels, seed=seed, preset="cpu",
                                     top1=tuple(curve), eval_interval=250, iterations=2500)
                steps = range(250, 2501, 250)
                signals = {interface.TRAIN_ITERATIONS_PER_SECOND: [3.0 if impl != "torchssl" else 2.0] * 10,
                           interface.TRAIN_MASK_RATE: 0.5 + 0.04 * np.arange(10),
                           interface.TRAIN_PSEUDO_LABEL_ACCURACY: 0.6 + 0.03 * np.arange(10),
                           interface.TRAIN_UNSUPERVISED_LOSS: 0.5 - 0.03 * np.arange(10)}
                matrix = generator.integers(0, 15, (10, 10))
                np.fill_diagonal(matrix, generator.integers(40, 100, 10))
                class_accuracy = matrix.diagonal() / matrix.sum(axis=1)
                metrics = [Metric(key, float(value), 0, step) for key, values in signals.items()
                           for step, value in zip(steps, values)]
                metrics += [Metric(interface.EVAL_CLASS_ACCURACY_PREFIX + name, float(value), 0, 2500)
                            for name, value in zip(CLASS_NAMES, class_accuracy)]
                client.log_batch(run_id, metrics=metrics)
                client.log_text(run_id, json.dumps({"step": 2500, "class_names": list(CLASS_NAMES),
                                                    "matrix": matrix.tolist()}),
                                tracking.confusion_matrix_artifact(2500))
    return output_dir


@pytest.fixture(autouse=True)
def no_tracking_uri_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_unfinished_runs_are_listed_apart_and_never_averaged_in(store, tmp_path):
    result = report("--output-dir", str(store["output_dir"]), "--experiment", "mixed", "--out", str(tmp_path / "r"),
                    "--format", "md")
    assert result.exit_code == 0, result.output
    assert "2 unfinished run(s) (1 FAILED, 1 RUNNING) listed apart, not averaged in." in result.output
    tables = markdown_tables((tmp_path / "r/report.md").read_text(), sections=2)
    own_smoke = [row for row in tables[TOP1] if row["iterations run"] == "40"]
    assert [row["seeds (n)"] for row in own_smoke] == ["1 (0)"]
    assert number(own_smoke[0]["top-1 % at last evaluation"]) == "25.00 ± n/a"
    unfinished = tables["Unfinished runs (not in any table above or average)"]
    assert {(row["seed"], row["MLflow status"]) for row in unfinished} == {("1", "RUNNING"), ("2", "FAILED")}
    failed = next(row for row in unfinished if row["MLflow status"] == "FAILED")
    assert failed["why it stopped (as recorded)"] == "the loss became NaN at iteration 20"
    assert failed["iterations reached"] == "20 of 40"


def test_runs_of_different_presets_get_a_section_each_and_are_never_pooled(store, tmp_path):
    result = report("--output-dir", str(store["output_dir"]), "--experiment", "mixed", "--out", str(tmp_path / "r"),
                    "--format", "md")
    text = (tmp_path / "r/report.md").read_text()
    assert "## Preset `cpu`" in text and "## Preset `smoke`" in text
    assert "numbers are never pooled across sections" in text
    assert "2 section(s)" in result.output
    cpu_section = text.split("## Preset `cpu`")[1].split("## Preset `smoke`")[0]
    cpu_rows = markdown_tables(cpu_section)[TOP1]
    assert [(row["seeds (n)"], number(row["top-1 % at last evaluation"])) for row in cpu_rows] == [
        ("1 (0)", "60.00 ± n/a")]


def test_a_full_schedule_run_on_official_data_carries_no_flag(store, tmp_path):
    report("--output-dir", str(store["output_dir"]), "--experiment", "full-schedule", "--out", str(tmp_path / "r"),
           "--format", "md")
    text = (tmp_path / "r/report.md").read_text()
    (row,) = markdown_tables(text)[TOP1]
    assert row["iterations run"] == f"{PAPER_ITERATIONS:,}"
    assert row["top-1 % at last evaluation"] == "87.00 ± n/a"
    assert not any(mark in cell for cell in row.values() for mark in "†‡")
    assert "† Trained" not in text and "‡ Trained" not in text and "Read first" not in text


def test_a_single_paired_seed_gives_no_interval_and_says_why(store, tmp_path):
    report("--output-dir", str(store["output_dir"]), "--experiment", "paired", "--out", str(tmp_path / "r"),
           "--format", "md")
    rows = markdown_tables((tmp_path / "r/report.md").read_text())[PAIRED]
    assert len(rows) == 3
    assert {row["95 % interval (paired t)"] for row in rows} == {"n/a (1 paired seed, needs ≥ 2)"}
    assert rows[0]["difference"] == "own − torchssl"
    assert number(rows[0]["first − second (pp)"]) == "+0.00"


def test_run_option_reports_the_runs_of_that_parent_only(store, tmp_path):
    client = store["client"]
    parent_id = client.get_run(store["ids"]["cpu"]).data.tags["mlflow.parentRunId"]
    result = report("--output-dir", str(store["output_dir"]), "--run", parent_id, "--out", str(tmp_path / "r"),
                    "--format", "md")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r/report.md").read_text()
    assert "## Preset `cpu`" in text and "## Preset `smoke`" not in text and "Unfinished runs" not in text


def test_a_second_report_replaces_the_first_in_the_same_folder(store, tmp_path):
    out = tmp_path / "r"
    for _ in range(2):
        result = report("--output-dir", str(store["output_dir"]), "--experiment", "paired", "--out", str(out),
                        "--format", "md")
        assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == [".bench-report", "figures", "report.md"]


@pytest.mark.parametrize("arguments, message", [
    (["--experiment", "nope"], "No experiment named 'nope' in the MLflow store at sqlite:///"),
    (["--experiment", "empty"], "Experiment 'empty' has no ssl-bench runs yet; start some with `bench run`."),
    (["--run", "0123456789abcdef0123456789abcdef"], "No run with id 0123456789abcdef0123456789abcdef in the MLflow"),
    (["--format", "md,html"], "--format takes a comma-separated subset of md,pdf, not 'md,html'."),
    (["--experiment", "mixed", "--run", "x"], "Pass either --experiment or --run, not both."),
])
def test_bad_input_is_one_sentence_and_exit_code_1_or_2(store, tmp_path, arguments, message):
    result = report("--output-dir", str(store["output_dir"]), "--out", str(tmp_path / "r"), *arguments)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_child_run_id_passed_as_parent_names_the_parent(store, tmp_path):
    child_id = store["ids"]["cpu"]
    parent_id = store["client"].get_run(child_id).data.tags["mlflow.parentRunId"]
    result = report("--output-dir", str(store["output_dir"]), "--run", child_id, "--out", str(tmp_path / "r"))
    assert result.exit_code == 1
    assert f"is not an ssl-bench parent run; its parent is {parent_id}." in result.output


def test_a_missing_store_is_reported_without_creating_one(tmp_path):
    result = report("--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 1
    assert f"No MLflow store at {tmp_path / 'runs' / 'mlflow.db'}; run `bench run` first" in result.output
    assert not (tmp_path / "runs").exists()


def test_an_out_folder_with_other_files_is_left_alone(store, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = report("--output-dir", str(store["output_dir"]), "--experiment", "paired", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "already holds files that `bench report` did not write" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("low, high", [(0.0, 2.0), (-0.01, 0.03), (0.0, 100.0), (41.9, 42.1)])
def test_percent_tick_labels_are_distinct_and_never_negative_zero_at_any_scale(low, high):
    import matplotlib.pyplot as plt

    from harness.report.figures import PercentTicks

    figure, axis = plt.subplots()
    try:
        axis.plot([0, 1], [low, high])
        axis.yaxis.set_major_formatter(PercentTicks())
        figure.canvas.draw()
        labels = [label.get_text() for label in axis.get_yticklabels() if label.get_text()]
    finally:
        plt.close(figure)
    assert len(labels) >= 3 and len(labels) == len(set(labels)), labels
    assert not any(label[0] in "−-" and float(label.strip("−-%")) == 0 for label in labels), labels  # no "−0 %"
