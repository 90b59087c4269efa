"""Nothing lost, nothing spliced: real `bench run` processes, a real sqlite store (and a real `mlflow server`),
the smoke preset on real CIFAR-10 images, under the faults a long grid meets.

- kill -9 of the worker after its first checkpoint: the run ends KILLED with the reason, and the same command
  resumes it in the same MLflow run;
- kill -9 of the runner and of the worker at random moments, several times, then the same command: the run's
  curve equals an uninterrupted run's (own, CPU, deterministic), no (key, step) twice;
- the same command after the runner died attaches to the worker still training and exits 0;
- the output dir kept and the store swapped: the run trains afresh in the new store, nothing adopted;
- a torn checkpoint: one sentence naming it and what to do; doing it restarts the run in a new MLflow run;
- the tracking server gone for a while mid-run: training goes on and every number arrives;
- a store, and the checkpoint of a run in it, made by the code before its rooms and seam (EARLIER_CODE): the same
  command under today's code resumes the run to the uninterrupted curve, and `bench report` reports it;
- the disk holding the output dir and store fills mid-run: one sentence saying so, no traceback or SQL; once
  space is freed, the same command finishes the run to the uninterrupted curve.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from harness import tracking
from implementations import interface
from implementations.interface import DEFAULT_EXPERIMENT
from tests.bench_processes import (
    DETERMINISTIC_KEYS,
    ENVIRONMENT,
    ITERATIONS,
    bench_run,
    child_runs,
    history,
    run_arguments,
    start_run,
    store_client,
    the_worker,
    wait_for,
)

pytestmark = pytest.mark.slow


def assert_curve_of_an_uninterrupted_run(client, run_id, reference_client, reference_id) -> None:
    evaluation_keys = sorted(key for key in reference_client.get_run(reference_id).data.metrics
                             if key.startswith("eval/"))
    assert interface.EVAL_TOP1 in evaluation_keys
    for key in (*evaluation_keys, *DETERMINISTIC_KEYS):
        assert history(client, run_id, key) == history(reference_client, reference_id, key), key
    for key in client.get_run(run_id).data.metrics:
        steps = [step for step, _ in history(client, run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} has a step twice"


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    """The output dir of the uninterrupted run every faulted run must equal."""
    output_dir = tmp_path_factory.mktemp("reference")
    completed = bench_run(output_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return output_dir


@pytest.fixture(scope="module")
def reference(reference_dir):
    client = store_client(reference_dir)
    (run,) = child_runs(client)
    return client, run.info.run_id


def checkpoints(output_dir: Path) -> list[Path]:
    return list(output_dir.glob(f"{DEFAULT_EXPERIMENT}/*/*/checkpoint.pt"))


def numbers_in_mlflow(output_dir: Path) -> bool:
    """The numbers the first checkpoint covers have reached MLflow (they are sent just after it is written)."""
    if not checkpoints(output_dir):  # the store and its experiment exist by then
        return False
    return any(run.data.metrics for run in child_runs(store_client(output_dir)))


def start_run_and_kill_its_worker_after_the_first_checkpoint(output_dir: Path) -> subprocess.Popen:
    runner = start_run(output_dir)
    wait_for(lambda: numbers_in_mlflow(output_dir) or runner.poll() is not None,
             what="the first checkpoint and its numbers in MLflow")
    assert runner.poll() is None, "the run ended before its first checkpoint"
    the_worker(output_dir).send_signal(signal.SIGKILL)
    return runner


def test_a_worker_killed_after_its_first_checkpoint_is_killed_in_mlflow_and_the_same_command_resumes_it(reference, tmp_path):
    runner = start_run_and_kill_its_worker_after_the_first_checkpoint(tmp_path)
    stdout, stderr = runner.communicate(timeout=120)
    client = store_client(tmp_path)
    (killed,) = child_runs(client)
    assert runner.returncode == 1 and "KILLED" in stdout
    assert killed.info.status == "KILLED" and "SIGKILL" in killed.data.tags[tracking.ERROR_TAG]
    assert checkpoints(tmp_path), "its checkpoint is kept"

    resumed = bench_run(tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 resumed from an earlier attempt" in resumed.stdout
    (run,) = child_runs(client)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert tracking.ERROR_TAG not in run.data.tags  # the previous attempt's error is cleared
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)
    reference_client, reference_id = reference
    summary = {key: value for key, value in run.data.metrics.items() if key.startswith("summary/")}
    assert summary == {key: value for key, value in reference_client.get_run(reference_id).data.metrics.items()
                       if key.startswith("summary/")}
    assert [step for step, _ in history(client, run.info.run_id, interface.TRAIN_TOTAL_LOSS)] == list(range(5, ITERATIONS + 1, 5))


def test_kills_of_runner_and_worker_at_random_moments_leave_the_curve_of_an_uninterrupted_run(reference, tmp_path):
    chance = random.Random(12)
    kills = []
    for attempt in range(4):
        runner = start_run(tmp_path)
        wait_for(lambda: the_worker(tmp_path) is not None or runner.poll() is not None, what="a worker")
        time.sleep(chance.uniform(2.0, 8.0))
        victim = chance.choice(["runner", "worker"])
        worker = the_worker(tmp_path)
        if worker is None:  # already done
            break
        if victim == "runner":
            runner.send_signal(signal.SIGKILL)  # the worker trains on as an orphan
        else:
            worker.send_signal(signal.SIGKILL)
        kills.append(victim)
        runner.wait(timeout=120)
        runner.stdout.close()
        runner.stderr.close()
    finished = bench_run(tmp_path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    client = store_client(tmp_path)
    (run,) = child_runs(client)
    assert run.info.status == "FINISHED", kills
    assert run.data.metrics["summary/iterations"] == ITERATIONS
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)
    assert kills, "no fault was injected"


def test_the_same_command_after_the_runner_died_follows_the_orphaned_worker_and_exits_0(reference, tmp_path):
    runner = start_run(tmp_path)
    wait_for(lambda: the_worker(tmp_path) is not None, what="a worker")
    time.sleep(3)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=60)
    assert the_worker(tmp_path) is not None, "the worker should train on after its runner died"
    again = bench_run(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "attached to its running worker" in again.stderr
    assert "FINISHED" in again.stderr
    client = store_client(tmp_path)
    (run,) = child_runs(client)
    assert run.info.status == "FINISHED"
    log = (tmp_path / DEFAULT_EXPERIMENT / run.data.tags["run_key"] / run.info.run_id / "worker.log").read_text()
    assert log.count("--- worker ended FINISHED") == 1 and log.count("starting") == 1  # one worker did it all
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)


def test_a_store_swapped_under_a_kept_output_dir_trains_afresh_and_adopts_nothing(reference, reference_dir, tmp_path):
    # The reference's output dir holds a finished run with its checkpoint; another store is pointed at it.
    other_uri = f"sqlite:///{tmp_path / 'other.db'}"
    swapped = bench_run(reference_dir, "--tracking-uri", other_uri)
    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
    assert "already finished" not in swapped.stdout
    client = store_client(tmp_path, other_uri)
    (run,) = child_runs(client)
    assert run.info.status == "FINISHED" and run.data.metrics["summary/iterations"] == ITERATIONS
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)


def test_a_torn_checkpoint_is_one_sentence_and_removing_its_folder_restarts_the_run_in_a_new_mlflow_run(reference, tmp_path):
    runner = start_run_and_kill_its_worker_after_the_first_checkpoint(tmp_path)
    runner.communicate(timeout=120)
    (checkpoint,) = checkpoints(tmp_path)
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # torn

    refused = bench_run(tmp_path)
    assert refused.returncode == 1
    assert f"The checkpoint {checkpoint} cannot be read" in refused.stderr + refused.stdout
    assert f"delete the folder {checkpoint.parent}" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
    client = store_client(tmp_path)
    (torn_run,) = child_runs(client)
    assert torn_run.info.status == "FAILED"

    import shutil

    shutil.rmtree(checkpoint.parent)
    restarted = bench_run(tmp_path)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "moved to MLflow's trash" in restarted.stderr
    (run,) = child_runs(client)
    assert run.info.run_id != torn_run.info.run_id and run.info.status == "FINISHED"
    assert client.get_run(torn_run.info.run_id).info.lifecycle_stage == "deleted"
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENVIRONMENT, start_new_session=True)
    store = tracking.TrackingStore(f"http://127.0.0.1:{port}", artifact_root=None, embedded=False)

    def answers() -> bool:
        try:
            tracking.check_reachable(store, timeout_seconds=1)
        except tracking.TrackingError:
            assert server.poll() is None, "mlflow server ended"
            return False
        return True

    wait_for(answers, timeout=120, what="mlflow server")
    return server


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def test_a_tracking_server_gone_for_a_while_mid_run_loses_nothing(reference, tmp_path):
    port = free_port()
    server = start_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    runner = start_run(tmp_path / "runs", "--tracking-uri", uri)
    progress = lambda: list((tmp_path / "runs").glob(f"{DEFAULT_EXPERIMENT}/*/*/progress.json"))  # noqa: E731
    try:
        wait_for(lambda: progress() or runner.poll() is not None, what="training to start")
        stop_server(server)
        time.sleep(4)  # the run trains on; what it logs waits in its journal
        assert runner.poll() is None, "the run should not have ended while the server was away"
        server = start_server(tmp_path, port)
        stdout, stderr = runner.communicate(timeout=600)
        assert runner.returncode == 0, stdout + stderr
        client = MlflowClient(uri)
        (run,) = child_runs(client)
        assert run.info.status == "FINISHED"
        assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)
    finally:
        if runner.poll() is None:
            runner.kill()
        stop_server(server)


# The code before the harness was split into rooms and the implementations behind one seam (issue 23's base): a
# store it made, with a checkpoint of a run it was training, must resume and report under today's code.
EARLIER_CODE = "64bedd8"


def earlier_code(tmp_path: Path) -> Path:
    """This project's files at EARLIER_CODE, exported from its git history."""
    repository = Path(__file__).resolve().parents[1]
    found = subprocess.run(["git", "-C", str(repository), "cat-file", "-e", f"{EARLIER_CODE}^{{commit}}"],
                           capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"this checkout's git history does not hold commit {EARLIER_CODE} (a shallow clone?)")
    folder = tmp_path / "earlier-code"
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(repository), "archive", EARLIER_CODE], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def test_a_store_and_checkpoint_made_by_the_earlier_code_resume_and_report_under_todays(reference, tmp_path):
    code = earlier_code(tmp_path)
    output_dir = tmp_path / "runs"
    runner = start_run(output_dir, code_dir=code)
    wait_for(lambda: numbers_in_mlflow(output_dir) or runner.poll() is not None,
             what="the earlier code's first checkpoint and its numbers in MLflow")
    assert runner.poll() is None, "the earlier code's run ended before its first checkpoint"
    the_worker(output_dir).send_signal(signal.SIGKILL)
    runner.communicate(timeout=120)
    client = store_client(output_dir)
    (killed,) = child_runs(client)
    assert killed.info.status == "KILLED" and checkpoints(output_dir)

    resumed = bench_run(output_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 resumed from an earlier attempt" in resumed.stdout
    (run,) = child_runs(client)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)

    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--output-dir", str(output_dir),
                             "--out", str(tmp_path / "report"), "--format", "md"],
                            capture_output=True, text=True, env=ENVIRONMENT, timeout=600)
    assert report.returncode == 0, report.stdout + report.stderr
    markdown = (tmp_path / "report" / "report.md").read_text()
    final_top1 = run.data.metrics[interface.EVAL_TOP1]
    assert run.data.tags["split_digest"][:16] in markdown and f"{100 * final_top1:.2f}" in markdown


# In a mount namespace of its own, so that the small disk is this test's alone and vanishes with it: the run's
# output dir and store on a tmpfs, filled by another writer once the first checkpoint is written; then the
# space freed and the same command run again. What the store holds is copied out before the namespace ends.
FULL_DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size=64m tmpfs "$DISK" || exit 77
"$@" > "$OUT/first.out" 2> "$OUT/first.err" &
runner=$!
until ls "$DISK"/runs/*/*/*/checkpoint.pt > /dev/null 2>&1 || ! kill -0 $runner 2> /dev/null; do sleep 0.1; done
dd if=/dev/zero of="$DISK/ballast" bs=64k 2> /dev/null
wait $runner; echo $? > "$OUT/first.rc"
rm "$DISK/ballast"
"$@" > "$OUT/second.out" 2> "$OUT/second.err"; echo $? > "$OUT/second.rc"
cp -a "$DISK/runs" "$OUT/runs"
"""


def in_a_mount_namespace() -> list[str]:
    """unshare, as root or in a user namespace of its own; the test is skipped, with the reason, where neither
    is allowed."""
    command = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    probe = subprocess.run([*command, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace with a tmpfs here ({probe.stderr.strip() or probe.returncode})")
    return command


def test_a_disk_that_fills_mid_run_is_one_sentence_and_after_space_is_freed_the_same_command_finishes(reference, tmp_path):
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    script = tmp_path / "full_disk.sh"
    script.write_text(FULL_DISK_SCRIPT)
    completed = subprocess.run([*in_a_mount_namespace(), "bash", str(script), *run_arguments(disk / "runs")],
                               env={**ENVIRONMENT, "DISK": str(disk), "OUT": str(out)}, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    first = (out / "first.out").read_text() + (out / "first.err").read_text()
    assert (out / "first.rc").read_text().strip() == "1", first
    assert "Traceback" not in first and "SQL" not in first and "sqlalchemy" not in first.lower(), first
    (sentence,) = [line for line in first.splitlines() if line.startswith("fixmatch/own/40/s0 UNRECORDED: ")
                   or line.startswith("fixmatch/own/40/s0 FAILED: ")]
    assert re.search(rf": the disk holding {re.escape(str(disk / 'runs'))}\S* is full", sentence), sentence
    assert "is kept" in sentence and "free space there and run the same command again" in sentence, sentence

    second = (out / "second.out").read_text() + (out / "second.err").read_text()
    assert (out / "second.rc").read_text().strip() == "0", second
    client = store_client(out / "runs")
    (run,) = child_runs(client)
    assert run.info.status == "FINISHED"
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)


CHECKPOINT_ON_A_FULL_DISK = r"""
import os, subprocess, sys, torch
from implementations.common import DiskFullError, write_atomically
disk = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], check=True)
write_atomically(os.path.join(disk, "checkpoint.pt"), lambda file: torch.save(torch.zeros(1000), file))
try:
    write_atomically(os.path.join(disk, "checkpoint.pt"), lambda file: torch.save(torch.zeros(500_000), file))
except DiskFullError as error:
    print("DiskFullError", error.filename, sorted(os.listdir(disk)), torch.load(os.path.join(disk, "checkpoint.pt")).numel())
"""


def test_a_checkpoint_that_does_not_fit_on_the_disk_is_a_disk_full_error_and_the_previous_one_stays(tmp_path):
    # torch.save itself reports a full disk as a RuntimeError about a zip position.
    disk = tmp_path / "disk"
    disk.mkdir()
    completed = subprocess.run([*in_a_mount_namespace(), sys.executable, "-c", CHECKPOINT_ON_A_FULL_DISK, str(disk)],
                               env=ENVIRONMENT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["DiskFullError", str(disk / "checkpoint.pt"), "['checkpoint.pt']", "1000"]
