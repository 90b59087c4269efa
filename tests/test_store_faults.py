"""Every command that opens the MLflow store meets a damaged store, or a tracking URI with a misspelt scheme,
with one sentence of its own: which file or URI, and what to do. Nothing is created beside it."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.entities import Metric

from harness.cli import main
from tests.fixtures_data import SUBSET_DIR

DAMAGED_ADVICE = "restore it from a backup, or move it aside and pass --tracking-uri (or --output-dir) to use another store."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


COMMANDS = {  # each command, as a user names the store of an output dir
    "run": ["run", "--labels", "40", "--preset", "smoke", "--device", "cpu", "--data-dir", str(SUBSET_DIR)],
    "report": ["report"],
    "status": ["status"],
    "cancel": ["cancel"],
    "ui": ["ui", "--port", str(free_port())],
}


@pytest.fixture(scope="module")
def sound_store(tmp_path_factory) -> Path:
    """A real store with an experiment and runs that logged metrics, as `bench run` leaves one."""
    database = tmp_path_factory.mktemp("sound") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{database}")
    experiment_id = client.create_experiment("cifar10-fixmatch")
    for _ in range(3):
        run = client.create_run(experiment_id)
        client.log_batch(run.info.run_id, metrics=[Metric("eval/top1", float(step), 0, step) for step in range(400)])
    return database


def invoke(command: str, *arguments: str):
    result = CliRunner().invoke(main, [*COMMANDS[command], *arguments], env={"MLFLOW_TRACKING_URI": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "sqlalchemy" not in result.output.lower()
    return result


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_truncated_store_is_one_sentence_naming_the_file_and_what_to_do(command, sound_store, tmp_path):
    output_dir = tmp_path / "runs"
    output_dir.mkdir()
    damaged = output_dir / "mlflow.db"
    shutil.copy(sound_store, damaged)
    with open(damaged, "r+b") as database:  # a copy cut short, as a full disk or a killed copy leaves one
        database.truncate(damaged.stat().st_size // 2 + 100)
    before = sorted(path.name for path in output_dir.iterdir())
    result = invoke(command, "--output-dir", str(output_dir))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: The MLflow store {damaged.resolve()} is damaged (database disk image is malformed): {DAMAGED_ADVICE}"]
    assert sorted(path.name for path in output_dir.iterdir()) == before


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_misspelt_tracking_uri_scheme_gets_our_sentence_with_the_close_scheme(command, tmp_path):
    uri = f"sqllite:///{tmp_path / 'mlflow.db'}"
    result = invoke(command, "--tracking-uri", uri, "--output-dir", str(tmp_path / "runs"))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: --tracking-uri {uri} has a scheme MLflow has no store for (sqllite://; did you mean sqlite://?); use "
        "a folder path, sqlite:///path/to/mlflow.db, http(s)://host:port of an MLflow server, or a database URL "
        "(postgresql://, mysql://, mssql://)."]
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_the_environment_variable_is_named_when_it_holds_the_misspelt_uri(tmp_path):
    result = CliRunner().invoke(main, ["report", "--output-dir", str(tmp_path)],
                                env={"MLFLOW_TRACKING_URI": "htp://localhost:5000"})
    assert result.exit_code == 1
    assert result.output.startswith("Error: MLFLOW_TRACKING_URI htp://localhost:5000 has a scheme MLflow has no store "
                                    "for (htp://; did you mean http://?)")


def test_a_sound_store_passes_the_check(sound_store, tmp_path):
    output_dir = tmp_path / "runs"
    output_dir.mkdir()
    shutil.copy(sound_store, output_dir / "mlflow.db")
    result = invoke("report", "--output-dir", str(output_dir))
    assert result.exit_code == 1
    assert "has no ssl-bench runs yet" in result.output  # it read the store: these runs are not bench's
