"""`bench run` end to end on CPU: own × labels {40, 250} × seeds {0, 1}, smoke preset, real CIFAR-10
images from ../shared, a real sqlite MLflow store in a temp dir; then the same command again."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from harness import tracking
from harness.launch import KEEP_FREED_MEMORY_TUNABLES
from harness.presets import PRESETS
from harness.splits import LabelSplit
from implementations import interface
from implementations.interface import DEFAULT_EXPERIMENT
from tests.fixtures_data import SUBSET_DIR

pytestmark = pytest.mark.slow

GRID = ["--impl", "own", "--labels", "40,250", "--seeds", "0,1", "--preset", "smoke", "--device", "cpu",
        "--max-parallel", "2"]  # two workers at once: also covers the parallel path
SMOKE = PRESETS["smoke"]


def bench(*arguments: str, timeout: float = 900) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MLFLOW_TRACKING_URI", "GLIBC_TUNABLES")}
    return subprocess.run([sys.executable, "-m", "harness.cli", *arguments], capture_output=True, text=True,
                          timeout=timeout, env=environment)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The grid, run once for every test of this module; then the same command run a second time."""
    output_dir = tmp_path_factory.mktemp("grid")
    arguments = ["run", *GRID, "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir)]
    first = bench(*arguments)
    assert first.returncode == 0, first.stdout + first.stderr
    again = bench(*arguments)
    uri = f"sqlite:///{output_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    return {"output_dir": output_dir, "uri": uri, "client": client, "experiment": experiment, "first": first,
            "again": again,
            "children": [run for run in runs if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD],
            "parents": [run for run in runs if run.data.tags.get(tracking.ROLE_TAG) == tracking.PARENT]}


def child(grid, labels: int, seed: int):
    (run,) = [run for run in grid["children"] if run.data.tags["labels"] == str(labels)
              and run.data.tags["seed"] == str(seed)]
    return run


def test_grid_leaves_four_finished_child_runs(grid):
    children = grid["children"]
    assert len(children) == 4
    assert {(run.data.tags["impl"], run.data.tags["labels"], run.data.tags["seed"]) for run in children} == {
        ("own", "40", "0"), ("own", "40", "1"), ("own", "250", "0"), ("own", "250", "1")}
    assert all(run.info.status == "FINISHED" for run in children)


def test_each_label_count_has_one_parent_holding_its_runs(grid):
    parents = {run.data.tags["labels"]: run for run in grid["parents"]}
    assert set(parents) == {"40", "250"}
    assert parents["40"].info.run_name == "fixmatch · labels=40 · smoke" and parents["40"].data.tags["algorithm"] == "fixmatch"
    assert all(parent.data.tags["preset"] == "smoke" and parent.info.status == "FINISHED" for parent in parents.values())
    for run in grid["children"]:
        assert run.data.tags["mlflow.parentRunId"] == parents[run.data.tags["labels"]].info.run_id


def test_child_runs_carry_the_layout_tags(grid):
    run = child(grid, 250, 1)
    tags = run.data.tags
    assert run.info.run_name == "fixmatch/own/250/s1"
    assert tags["preset"] == "smoke" and tags["algorithm"] == "fixmatch"
    assert tags["run_key"].startswith("own-250-1-smoke-")
    assert tags["data_official"] == "false" and tags["data_identity"].startswith("cifar10-nonofficial-5482-")
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert tags["git_dirty"] in ("true", "false", "unknown")
    assert {"env.python", "env.torch", "env.torchvision", "env.pillow", "env.numpy", "env.device_name",
            "env.cpu_count", "env.gpu_count"} <= set(tags)


def test_split_digest_tag_is_the_digest_of_the_split_the_harness_saved(grid):
    for run in grid["children"]:
        tags = run.data.tags
        (saved,) = (grid["output_dir"] / "splits").glob(f"labels{tags['labels']}-seed{tags['seed']}-*.npy")
        split = LabelSplit.load(saved)
        assert tags["split_digest"] == split.digest
        assert (split.num_labels, split.seed) == (int(tags["labels"]), int(tags["seed"]))


def test_runs_of_different_seeds_train_on_different_splits(grid):
    assert child(grid, 40, 0).data.tags["split_digest"] != child(grid, 40, 1).data.tags["split_digest"]


def test_every_resolved_hyper_parameter_is_a_param(grid):
    params = child(grid, 40, 0).data.params
    # Not the fields only other methods read: FixMatch ramps nothing up, sharpens nothing, mixes nothing.
    never_read = {"unsupervised_warmup", "sharpen_temperature", "mixup_alpha", "threshold_warmup"}
    expected = {key: str(value) for key, value in SMOKE.replace(device="cpu", seed=0).as_params().items()
                if key not in never_read}
    expected["cutout_fill"] = "[127, 127, 127]"  # a tuple is logged as JSON, so that it reads back as a list
    assert {key: params[key] for key in expected} == expected
    assert not never_read & set(params)
    assert params["labels"] == "40"


def test_metrics_are_logged_with_the_iteration_as_step(grid):
    client, run = grid["client"], child(grid, 40, 0)
    evaluation_steps = list(range(SMOKE.eval_interval, SMOKE.iterations + 1, SMOKE.eval_interval))
    for key in (interface.EVAL_TOP1, interface.EVAL_F1, interface.EVAL_LOSS):
        assert [point.step for point in client.get_metric_history(run.info.run_id, key)] == evaluation_steps
    logging_steps = list(range(SMOKE.log_interval, SMOKE.iterations + 1, SMOKE.log_interval))
    for key in (interface.TRAIN_TOTAL_LOSS, interface.TRAIN_MASK_RATE, interface.TRAIN_LR, interface.TRAIN_ITERATIONS_PER_SECOND):
        assert [point.step for point in client.get_metric_history(run.info.run_id, key)] == logging_steps
    metrics = run.data.metrics
    assert metrics["summary/iterations"] == SMOKE.iterations
    assert metrics["summary/best_top1"] == max(point.value for point in
                                               client.get_metric_history(run.info.run_id, interface.EVAL_TOP1))


def test_a_confusion_matrix_is_an_artifact_at_every_evaluation_and_a_png_at_the_end(grid):
    client, run = grid["client"], child(grid, 250, 0)
    paths = {artifact.path for artifact in client.list_artifacts(run.info.run_id, "confusion_matrix")}
    assert paths == {"confusion_matrix/step_00000020.json", "confusion_matrix/step_00000040.json",
                     "confusion_matrix/final.png"}
    document = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/confusion_matrix/step_00000040.json"))
    matrix = np.array(document["matrix"])
    assert document["step"] == 40 and len(document["class_names"]) == 10 and matrix.shape == (10, 10)
    assert matrix.sum() == 1017  # every test image of the subset, once
    assert np.trace(matrix) / matrix.sum() == pytest.approx(run.data.metrics[interface.EVAL_TOP1])
    png = Path(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/confusion_matrix/final.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_split_is_an_artifact_and_a_dataset_input_with_the_split_digest(grid):
    client, run = grid["client"], child(grid, 40, 1)
    digest = run.data.tags["split_digest"]
    indices = np.load(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/split/labeled_indices.npy"))
    sidecar = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/split/split.json"))
    assert LabelSplit(indices, 40, 1, sidecar["dataset_identity"]).digest == digest == sidecar["digest"]
    (dataset_input,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert digest.startswith(dataset_input.dataset.digest) and len(dataset_input.dataset.digest) == 36
    input_tags = {tag.key: tag.value for tag in dataset_input.tags}
    assert input_tags == {"mlflow.data.context": "train", "split_digest": digest}


def test_environment_json_records_versions_and_hardware(grid):
    run = child(grid, 40, 0)
    environment = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/environment.json"))
    import torch

    assert environment["torch"].split("+")[0] == torch.__version__.split("+")[0]
    gpus_here = torch.cuda.device_count() if torch.cuda.is_available() else 0  # the grid runs on the CPU regardless
    assert environment["device"] == "cpu" and environment["gpu_count"] == gpus_here and environment["cpu_count"] >= 1
    assert {"python", "torchvision", "pillow", "numpy", "device_name"} <= set(environment)
    assert environment["glibc_tunables"] == KEEP_FREED_MEMORY_TUNABLES  # the run process's malloc setting


def test_search_runs_returns_the_grid_as_a_dataframe(grid, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", grid["uri"])  # set_tracking_uri sets it too; restored afterwards
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(grid["uri"])
    try:
        frame = mlflow.search_runs([grid["experiment"].experiment_id], "tags.`ssl_bench.role` = 'child'")
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert len(frame) == 4
    assert set(frame["status"]) == {"FINISHED"}
    assert {"metrics.eval/top1", "params.threshold", "tags.split_digest", "tags.impl"} <= set(frame.columns)


def test_the_first_invocation_prints_a_summary_table_and_where_to_look(grid):
    output = grid["first"].stdout
    assert "final top-1" in output and "best top-1" in output and "wall time" in output
    assert output.count("FINISHED") >= 4
    assert f"bench ui --output-dir {grid['output_dir']}" in output
    for run in grid["children"]:
        assert run.info.run_id in output


def test_running_the_same_command_again_trains_nothing_and_reports_four_runs_already_finished(grid):
    again = grid["again"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 of 4 runs already finished" in again.stdout
    assert "started" not in again.stderr  # no worker was launched
    for run in grid["children"]:  # nothing was logged again
        history = grid["client"].get_metric_history(run.info.run_id, interface.EVAL_TOP1)
        assert len(history) == SMOKE.iterations // SMOKE.eval_interval
    work_dirs = [grid["output_dir"] / DEFAULT_EXPERIMENT / run.data.tags["run_key"] / run.info.run_id
                 for run in grid["children"]]
    assert all((folder / "worker.log").read_text().count("--- worker ended FINISHED") == 1 for folder in work_dirs)


def _log_time(line: str) -> float:
    """Seconds since the epoch of the '… at YYYY-MM-DD HH:MM:SS.mmm' in a worker log line (local time)."""
    stamp = re.search(r" at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})", line).group(1)
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def test_each_run_in_mlflow_lasts_as_long_as_its_own_worker_not_the_runs_before_it(grid):
    """Four runs, two at a time: the last two wait for the first two, and none of that wait is theirs."""
    workers = {}
    for run in grid["children"]:
        log = (grid["output_dir"] / DEFAULT_EXPERIMENT / run.data.tags["run_key"] / run.info.run_id
               / "worker.log").read_text().splitlines()
        (start,) = [line for line in log if line.startswith("--- worker ") and " starting " in line]
        (end,) = [line for line in log if line.startswith("--- worker ended ")]
        workers[run.info.run_id] = (_log_time(start), _log_time(end))
        mlflow_seconds = (run.info.end_time - run.info.start_time) / 1000
        worker_seconds = workers[run.info.run_id][1] - workers[run.info.run_id][0]
        assert abs(mlflow_seconds - worker_seconds) < 2.0, (run.info.run_name, mlflow_seconds, worker_seconds)
        # The summary table shows the same time (to the second it prints).
        (row,) = [line for line in grid["first"].stdout.splitlines() if line.endswith(run.info.run_id)]
        minutes, seconds = map(int, re.search(r"(\d+)m(\d\d)s", row).groups())
        assert abs(60 * minutes + seconds - worker_seconds) <= 1.5, row
    # Two at a time: the later runs started only when earlier ones had ended.
    starts = sorted(start for start, _ in workers.values())
    ends = sorted(end for _, end in workers.values())
    assert starts[2] >= ends[0] - 0.5 and starts[3] >= ends[1] - 0.5
    # A parent spans its children.
    for parent in grid["parents"]:
        children = [run for run in grid["children"] if run.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert parent.info.start_time <= min(run.info.start_time for run in children)
        assert parent.info.end_time >= max(run.info.end_time for run in children)
