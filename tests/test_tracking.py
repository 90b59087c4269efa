"""harness/tracking/ against a real sqlite MLflow store in a temp dir."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import git
import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric

from harness import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tracking.TrackingStore:
    """One store for the module: creating an MLflow sqlite database takes seconds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return tracking.resolve_store(tmp_path_factory.mktemp("store") / "runs")


@pytest.fixture(scope="module")
def client(store):
    return store.client()


@pytest.fixture
def experiment_id(client, store, request) -> str:
    """A fresh experiment per test, so parent/child look-ups see only that test's runs."""
    return tracking.get_or_create_experiment(client, request.node.name, store.artifact_root)


@pytest.fixture
def run_id(client, experiment_id) -> str:
    return client.create_run(experiment_id).info.run_id


def steps(client, run_id: str, key: str) -> list[int]:
    return [point.step for point in client.get_metric_history(run_id, key)]


def test_the_embedded_store_is_sqlite_under_the_output_dir_with_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tracking.resolve_store(tmp_path / "runs")
    assert store.embedded
    assert store.tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert store.artifact_root == (tmp_path / "runs" / "artifacts").as_uri()


def mlflow_schema(database) -> dict:
    """Every table's and index's SQL, and the migration the store is at, read with sqlite3 itself."""
    import sqlite3

    with sqlite3.connect(database) as connection:
        schema = dict(connection.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
        schema["alembic version"] = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return schema


def test_a_new_embedded_store_is_a_copy_of_mlflows_own_empty_store_with_its_default_experiment_under_the_output_dir(
        tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made_by_mlflow = tmp_path / "mlflow-made.db"
    mlflow.MlflowClient(f"sqlite:///{made_by_mlflow}").search_experiments()
    for name in ("first", "second"):  # the first makes the cached empty store, the second copies it
        store = tracking.resolve_store(tmp_path / name)
        (tmp_path / name).mkdir()
        tracking.create_embedded_store(store)
        assert mlflow_schema(tmp_path / name / "mlflow.db") == mlflow_schema(made_by_mlflow)
        (default,) = store.client().search_experiments()
        assert default.name == "Default" and default.artifact_location == f"{store.artifact_root}/0"
    assert [path.name for path in (tmp_path / "cache" / "ssl-bench").iterdir()] == [
        f"empty-mlflow-{mlflow.__version__}.db"]


def test_without_a_cache_to_write_the_store_is_made_by_mlflow_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    store = tracking.resolve_store(tmp_path / "runs")
    (tmp_path / "runs").mkdir()
    tracking.create_embedded_store(store)
    assert not (tmp_path / "runs" / "mlflow.db").exists() and list((tmp_path / "runs").iterdir()) == []
    assert [experiment.name for experiment in store.client().search_experiments()] == ["Default"]


def test_mlflow_tracking_uri_overrides_the_embedded_store_and_the_option_overrides_both(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.resolve_store(tmp_path).tracking_uri == "http://tracking.example:5000"
    assert not tracking.resolve_store(tmp_path).embedded
    assert tracking.resolve_store(tmp_path, "sqlite:////elsewhere.db").tracking_uri == "sqlite:////elsewhere.db"


def test_experiments_keep_their_artifacts_under_the_output_dir(client, store):
    experiment_id = tracking.get_or_create_experiment(client, "cifar10-fixmatch", store.artifact_root)
    assert tracking.get_or_create_experiment(client, "cifar10-fixmatch", store.artifact_root) == experiment_id
    location = client.get_experiment(experiment_id).artifact_location
    assert location == f"{store.artifact_root}/cifar10-fixmatch"
    assert store.artifact_root.endswith("/runs/artifacts")


def test_an_unreachable_server_fails_within_seconds_in_one_sentence():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = tracking.resolve_store("unused", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError) as raised:
        tracking.check_reachable(store)
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert message.startswith(f"The MLflow tracking server at http://127.0.0.1:{port} is not reachable (")
    assert "\n" not in message


def sink_for(client, run_id, tmp_path, class_names=("a",), **options) -> tracking.MlflowMetricsSink:
    return tracking.MlflowMetricsSink(client, run_id, class_names, tmp_path / "journal.jsonl", **options)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(point.step, point.value) for point in client.get_metric_history(run_id, key)]


def test_logged_metrics_reach_mlflow_when_a_checkpoint_covers_them(client, run_id, tmp_path):
    sink = sink_for(client, run_id, tmp_path)
    sink.log_metrics({"train/total_loss": 2.5, "train/lr": 0.03}, step=5)
    assert history(client, run_id, "train/total_loss") == []
    sink.checkpointed(5)
    assert history(client, run_id, "train/total_loss") == [(5, 2.5)]
    sink.log_metrics({"train/total_loss": 2.0, "train/lr": 0.029}, step=10)
    sink.checkpointed(10)
    assert history(client, run_id, "train/total_loss") == [(5, 2.5), (10, 2.0)]
    assert history(client, run_id, "train/lr") == [(5, 0.03), (10, 0.029)]


def test_a_resumed_attempt_drops_what_the_interrupted_one_logged_after_its_checkpoint(client, run_id, tmp_path):
    interrupted = sink_for(client, run_id, tmp_path)
    for step in (5, 10, 15):
        interrupted.log_metrics({"train/total_loss": float(step)}, step=step)
    interrupted.log_metrics({"eval/top1": 0.1}, step=10)
    interrupted.checkpointed(5)  # ... and the process is killed at iteration 17
    resumed = sink_for(client, run_id, tmp_path)
    resumed.checkpointed(5)  # the new attempt resumes from the checkpoint at 5
    for step in (10, 15, 20):
        resumed.log_metrics({"train/total_loss": 100.0 + step}, step=step)
    resumed.log_metrics({"eval/top1": 0.2}, step=20)
    resumed.checkpointed(20)
    assert history(client, run_id, "train/total_loss") == [(5, 5.0), (10, 110.0), (15, 115.0), (20, 120.0)]
    assert history(client, run_id, "eval/top1") == [(20, 0.2)]


def test_entries_covered_by_a_checkpoint_but_unsent_when_killed_are_sent_on_resume(client, run_id, tmp_path):
    interrupted = sink_for(client, run_id, tmp_path)
    interrupted.log_metrics({"train/total_loss": 1.0}, step=5)
    interrupted.log_metrics({"train/total_loss": 2.0}, step=10)  # killed after checkpointing 10, before sending
    sink_for(client, run_id, tmp_path).checkpointed(10)
    assert history(client, run_id, "train/total_loss") == [(5, 1.0), (10, 2.0)]


def test_a_reopened_sink_never_logs_a_key_at_a_step_already_in_the_store(client, run_id, tmp_path):
    first = sink_for(client, run_id, tmp_path)
    first.log_metrics({"train/total_loss": 5.0}, step=5)
    first.checkpointed(5)
    again = sink_for(client, run_id, tmp_path / "other")  # e.g. a journal replayed from elsewhere
    (tmp_path / "other").mkdir()
    again.log_metrics({"train/total_loss": 50.0}, step=5)
    again.log_metrics({"train/total_loss": 10.0}, step=10)
    again.checkpointed(10)
    assert history(client, run_id, "train/total_loss") == [(5, 5.0), (10, 10.0)]


def test_a_journal_line_torn_by_a_kill_is_ignored(client, run_id, tmp_path):
    sink = sink_for(client, run_id, tmp_path)
    sink.log_metrics({"train/total_loss": 1.0}, step=5)
    with open(tmp_path / "journal.jsonl", "a") as journal:
        journal.write('{"step": 10, "metr')
    sink_for(client, run_id, tmp_path).checkpointed(10)
    assert history(client, run_id, "train/total_loss") == [(5, 1.0)]


def test_the_sink_splits_writes_at_mlflows_batch_limit(client, run_id, tmp_path):
    sink = sink_for(client, run_id, tmp_path)
    metrics = {f"eval/class_accuracy/class_{index:04d}": index / 2500 for index in range(2500)}
    sink.log_metrics(metrics, step=7)
    sink.checkpointed(7)
    assert client.get_run(run_id).data.metrics == metrics


class Listener:
    def __init__(self):
        self.heard = []

    def on_metrics(self, metrics, step):
        self.heard.append(("metrics", step, dict(metrics)))

    def on_progress(self, iteration):
        self.heard.append(("progress", iteration))

    def on_checkpoint(self, iteration):
        self.heard.append(("checkpoint", iteration))


def test_the_sink_tells_its_listener_of_every_call_at_once(client, run_id, tmp_path):
    listener = Listener()
    sink = sink_for(client, run_id, tmp_path, listener=listener)
    sink.progress(19)
    sink.log_metrics({"eval/top1": 0.5}, step=20)
    sink.checkpointed(20)
    assert listener.heard == [("progress", 19), ("metrics", 20, {"eval/top1": 0.5}), ("checkpoint", 20)]


def test_each_confusion_matrix_is_a_json_artifact_named_by_its_iteration(client, run_id, tmp_path):
    sink = sink_for(client, run_id, tmp_path, class_names=("cat", "dog"))
    sink.log_confusion_matrix(np.array([[3, 1], [0, 4]]), step=250)
    sink.checkpointed(250)
    uri = f"{client.get_run(run_id).info.artifact_uri}/confusion_matrix/step_00000250.json"
    assert json.loads(mlflow.artifacts.load_text(uri)) == {"step": 250, "class_names": ["cat", "dog"],
                                                           "matrix": [[3, 1], [0, 4]]}


def test_the_parent_run_of_a_label_count_and_preset_is_found_again(client, experiment_id):
    parent = tracking.find_or_create_parent_run(client, experiment_id, 40, "smoke")
    assert tracking.find_or_create_parent_run(client, experiment_id, 40, "smoke") == parent
    assert tracking.find_or_create_parent_run(client, experiment_id, 250, "smoke") != parent
    assert client.get_run(parent).info.run_name == "fixmatch · labels=40 · smoke"
    other_method = tracking.find_or_create_parent_run(client, experiment_id, 40, "smoke", "pimodel")
    assert other_method != parent and client.get_run(other_method).info.run_name == "pimodel · labels=40 · smoke"


def test_a_child_run_is_found_by_its_run_key(client, experiment_id):
    parent = tracking.find_or_create_parent_run(client, experiment_id, 40, "smoke")
    run_id = tracking.create_child_run(client, experiment_id, parent, "own · labels=40 · seed=0",
                                       {"impl": "own", "run_key": "own-40-0-smoke-abc"})
    found = tracking.find_child_run(client, experiment_id, "own-40-0-smoke-abc")
    assert found.info.run_id == run_id and found.info.status == "RUNNING"
    assert found.data.tags["mlflow.parentRunId"] == parent
    assert tracking.find_child_run(client, experiment_id, "own-40-1-smoke-abc") is None


def test_git_info_gives_the_commit_and_whether_tracked_files_changed(tmp_path):
    repository = git.Repo.init(tmp_path)
    (tmp_path / "code.py").write_text("x = 1\n")
    repository.index.add(["code.py"])
    commit = repository.index.commit("first", author=git.Actor("t", "t@t"), committer=git.Actor("t", "t@t"))
    assert tracking.git_info(tmp_path) == {"git_commit": commit.hexsha, "git_dirty": "false"}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert tracking.git_info(tmp_path) == {"git_commit": commit.hexsha, "git_dirty": "true"}


def test_git_info_outside_a_repository_says_unknown(tmp_path):
    assert tracking.git_info(tmp_path) == {"git_commit": "unknown", "git_dirty": "unknown"}


HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


def hold_the_store(store, seconds: float) -> subprocess.Popen:
    """Another process with an exclusive lock on the sqlite store, as a writer of another runner has."""
    database = store.tracking_uri.removeprefix("sqlite:///")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, database, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_write_to_a_store_locked_by_another_process_waits_and_succeeds(client, store, run_id):
    holder = hold_the_store(store, 3)
    started = time.monotonic()
    client.log_batch(run_id, metrics=[Metric("train/lr", 0.03, 0, 1)])
    holder.wait(timeout=30)
    assert time.monotonic() - started >= 1  # it did wait for the lock
    assert history(client, run_id, "train/lr") == [(1, 0.03)]


def test_a_store_locked_beyond_the_wait_is_one_sentence(client, store, run_id, monkeypatch):
    # SQLite itself waits 20 s (MLflow's busy timeout) before a call fails as locked; then ours retries.
    monkeypatch.setattr(tracking.store, "LOCKED_STORE_WAIT_SECONDS", 1.0)
    holder = hold_the_store(store, 40)
    try:
        with pytest.raises(tracking.TrackingError, match=r"^The MLflow store stayed locked by another process for 1 s"):
            client.log_batch(run_id, metrics=[Metric("train/lr", 0.03, 0, 1)])
    finally:
        holder.kill()
        holder.wait()
