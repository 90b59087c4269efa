"""`python -m harness.worker <spec.json>`: how a run ends in MLflow when training cannot go on, and what it tells
the runner while it trains."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import psutil
import pytest
import torch

from harness import tracking
from harness.data import load_cifar10
from harness.presets import PRESETS
from harness.splits import draw_split
from harness.worker import EXIT_FAILED, RunSpec
from harness.worker_events import RunnerEvents, Stopped
from tests.fixtures_data import SUBSET_DIR


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return tracking.resolve_store(tmp_path_factory.mktemp("worker") / "runs")


@pytest.fixture(scope="module")
def split_path(store, tmp_path_factory) -> Path:
    data = load_cifar10(SUBSET_DIR)
    path = tmp_path_factory.mktemp("splits") / "labels40-seed0"
    draw_split(data.train_labels, 40, 0, data.num_classes, data.identity).save(path)
    return path


def planned_run(store, split_path: Path, tmp_path: Path, data_dir: Path = SUBSET_DIR, **config_changes) -> RunSpec:
    client = store.client()
    experiment_id = tracking.get_or_create_experiment(client, "worker-tests", store.artifact_root)
    parent = tracking.find_or_create_parent_run(client, experiment_id, 40, "smoke")
    run_id = tracking.create_child_run(client, experiment_id, parent, "own · labels=40 · seed=0", {"impl": "own"})
    from harness.splits import LabelSplit

    config = PRESETS["smoke"].replace(device="cpu", **config_changes)
    spec = RunSpec(impl="own", labels=40, seed=0, preset="smoke", run_key=f"test-{run_id}", run_name="own · labels=40 · seed=0",
                   config=config.as_params(), data_dir=str(data_dir), split_path=str(split_path),
                   split_digest=LabelSplit.load(split_path).digest, tracking_uri=store.tracking_uri,
                   experiment_id=experiment_id, run_id=run_id, work_dir=str(tmp_path / "work"))
    spec.save(tmp_path / "spec.json")
    return spec


def run_worker(spec_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.worker", str(spec_path)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_non_finite_loss_ends_the_run_failed_with_a_clear_message(store, split_path, tmp_path):
    spec = planned_run(store, split_path, tmp_path, learning_rate=1e30, iterations=20)
    worker = run_worker(tmp_path / "spec.json")
    assert worker.returncode == EXIT_FAILED, worker.stderr
    run = store.client().get_run(spec.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.ERROR_TAG].startswith("non-finite loss: the training loss became NaN or infinite")
    assert "Traceback" not in worker.stderr  # an expected end of a run, not a crash


def test_a_worker_that_raises_ends_the_run_failed_with_the_error_recorded(store, split_path, tmp_path):
    spec = planned_run(store, split_path, tmp_path, data_dir=tmp_path / "data-gone")
    worker = run_worker(tmp_path / "spec.json")
    assert worker.returncode == EXIT_FAILED
    run = store.client().get_run(spec.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.ERROR_TAG].startswith(f"DataError: CIFAR-10 was not found at {tmp_path / 'data-gone'}")
    assert "FAILED" in run.data.tags["mlflow.note.content"]


def test_worker_progress_events_are_the_only_thing_on_its_stdout(store, split_path, tmp_path):
    planned_run(store, split_path, tmp_path, data_dir=tmp_path / "data-gone")
    worker = run_worker(tmp_path / "spec.json")
    events = [json.loads(line) for line in worker.stdout.splitlines()]
    assert [event["event"] for event in events] == ["started", "finished"]
    assert events[-1]["status"] == "FAILED"


def test_a_torn_spec_is_one_sentence_saying_what_to_do(tmp_path):
    torn = tmp_path / "spec.json"
    torn.write_text('{"impl": "own", "labels": 4')
    worker = run_worker(torn)
    assert worker.returncode == EXIT_FAILED
    assert worker.stderr.strip().startswith(f"The run spec {torn} cannot be read (")
    assert "run the same `bench run` again" in worker.stderr
    assert "Traceback" not in worker.stderr


@pytest.mark.slow
def test_progress_shows_from_the_first_iteration_before_any_log_window_ends(store, split_path, tmp_path):
    planned_run(store, split_path, tmp_path, iterations=20, log_interval=20, eval_interval=20, checkpoint_interval=20)
    worker = run_worker(tmp_path / "spec.json")
    assert worker.returncode == 0, worker.stderr
    progress = [json.loads(line) for line in worker.stdout.splitlines() if '"progress"' in line]
    assert progress[0]["iteration"] == 1 and progress[0]["total"] == 20  # the bar moves at once, not at 20
    assert progress[-1]["iteration"] == 20 and progress[-1]["checkpoint"] == 20


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints", [dict(checkpoint_interval=20),
                                         dict(checkpoint_interval=100_000, checkpoint_minutes=0.01)],
                         ids=["every-20-iterations", "every-0.6-seconds-only"])
def test_a_stopped_run_records_which_checkpoint_it_kept_and_what_resuming_trains_again(store, split_path, tmp_path,
                                                                                      checkpoints):
    spec = planned_run(store, split_path, tmp_path, iterations=100_000, **checkpoints)
    worker = subprocess.Popen([sys.executable, "-m", "harness.worker", str(tmp_path / "spec.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in worker.stdout:
        event = json.loads(line)
        if event.get("checkpoint") and event["iteration"] > event["checkpoint"]:
            break
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=120)
    error = store.client().get_run(spec.run_id).data.tags[tracking.ERROR_TAG]
    match = re.fullmatch(r"stopped by SIGTERM at iteration (\d+); its checkpoint of iteration (\d+) is kept, the (\d+) "
                         r"iterations after it are trained again when the run resumes", error)
    assert match, error
    stopped_at, kept, lost = map(int, match.groups())
    # With checkpoints every 100,000 iterations only, a kept checkpoint below that was written by time.
    assert 0 < kept < stopped_at and stopped_at - kept == lost
    # The checkpoint on disk is the one the message names.
    saved = torch.load(Path(spec.work_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert saved["training"]["scheduler"]["last_epoch"] == kept


@pytest.mark.slow
def test_the_worker_of_a_slurm_job_killed_outright_still_ends_its_run(store, split_path, tmp_path):
    # submitit's local cancel SIGKILLs the job's process a second after its SIGINT: nothing in the job can stop its
    # worker then. The kernel sends the worker SIGTERM when its job dies, and the worker ends its run KILLED.
    spec = planned_run(store, split_path, tmp_path, iterations=100_000)
    job = subprocess.Popen([sys.executable, "-c", "import sys; from harness.slurm import RunJob; "
                            "RunJob(sys.argv[1], stop_seconds=30)()", str(tmp_path / "spec.json")])
    progress = Path(spec.work_dir) / "progress.json"
    deadline = time.monotonic() + 120
    while not progress.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert progress.exists(), (tmp_path / "worker.log").read_text()
    worker = psutil.Process(json.loads((tmp_path / "worker.json").read_text())["worker_pid"])
    job.kill()
    job.wait()
    worker.wait(timeout=60)
    run = store.client().get_run(spec.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.ERROR_TAG].startswith("stopped by SIGTERM at iteration ")


def test_a_sigterm_whose_exception_python_drops_still_stops_the_run_at_the_next_iteration(monkeypatch):
    # Python prints and drops an exception raised in a weakref callback (an import lock's, say): a SIGTERM landing
    # there must still stop the run, at the next call from the training loop.
    events = RunnerEvents(None, total_iterations=1000)
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    previous = {number: signal.signal(number, events.stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        class Collectable:
            pass

        collectable = Collectable()
        reference = weakref.ref(collectable, lambda _: signal.raise_signal(signal.SIGTERM))
        del collectable  # the callback runs here; the handler's Stopped is dropped, not raised
        assert reference() is None and [type(entry.exc_value) for entry in dropped] == [Stopped]
        with pytest.raises(Stopped, match="SIGTERM"):
            events.on_progress(7)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
