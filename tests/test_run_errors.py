"""`bench run` refuses bad input before any work: one clear sentence, a non-zero exit, nothing written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from tests.fixtures_data import SUBSET_DIR

USAGE_ERROR, ERROR = 2, 1


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def bench_run(output_dir: Path, *arguments: str, env: dict | None = None):
    defaults = {"--labels": "40", "--impl": "own", "--seeds": "0", "--preset": "smoke",
                "--data-dir": str(SUBSET_DIR), "--device": "cpu"}
    given = set(arguments[::2])
    options = [item for key, value in defaults.items() if key not in given for item in (key, value)]
    env = {"MLFLOW_TRACKING_URI": None, **(env or {})}
    result = CliRunner().invoke(main, ["run", *options, *arguments, "--output-dir", str(output_dir)], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert not output_dir.exists(), "bad input must be refused before anything is written"
    return result


def error_line(result) -> str:
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    return line.removeprefix("Error: ")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unknown_implementation(output_dir):
    result = bench_run(output_dir, "--impl", "own,mixmatch")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result) == "Unknown implementation 'mixmatch' in --impl; choose from own, own-as-torchssl, torchssl."


def test_labels_not_divisible_by_the_number_of_classes(output_dir):
    result = bench_run(output_dir, "--labels", "40,45")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result) == "--labels 45 is not divisible by the 10 classes (the labeled set is class-balanced)."


def test_labels_larger_than_the_images_available_per_class(output_dir):
    result = bench_run(output_dir, "--labels", "6000")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result).startswith("--labels 6000 needs 600 labeled images per class, but the data at ")
    assert error_line(result).endswith("has only 527 of class 'dog'.")  # the subset's scarcest class


def test_unknown_preset(output_dir):
    result = bench_run(output_dir, "--preset", "huge")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result) == "Unknown preset 'huge'; choose from paper, smoke, cpu."


@pytest.mark.parametrize("option", ["--labels", "--seeds", "--impl"])
def test_empty_list(output_dir, option):
    result = bench_run(output_dir, option, "")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result).startswith(f"{option} needs at least one ")


@pytest.mark.parametrize("option, values, repeated", [("--labels", "40,250,40", "40"), ("--seeds", "0,1,1", "1"),
                                                      ("--impl", "own,own", "own")])
def test_duplicate_in_a_list(output_dir, option, values, repeated):
    result = bench_run(output_dir, option, values)
    assert result.exit_code == USAGE_ERROR
    assert error_line(result) == f"{option} lists {repeated} more than once."


def test_a_list_entry_that_is_not_a_number(output_dir):
    result = bench_run(output_dir, "--seeds", "0,one")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result) == "--seeds takes whole numbers separated by commas; 'one' is not one."


def test_unreachable_tracking_uri_fails_fast(output_dir):
    uri = f"http://127.0.0.1:{closed_port()}"
    result = bench_run(output_dir, "--tracking-uri", uri)
    assert result.exit_code == ERROR
    assert error_line(result).startswith(f"The MLflow tracking server at {uri} is not reachable (")


def test_unreachable_tracking_uri_from_the_environment(output_dir):
    uri = f"http://127.0.0.1:{closed_port()}"
    result = bench_run(output_dir, env={"MLFLOW_TRACKING_URI": uri})
    assert result.exit_code == ERROR
    assert f"The MLflow tracking server at {uri} is not reachable" in error_line(result)


def test_missing_data_dir(output_dir, tmp_path):
    missing = tmp_path / "no-cifar-here"
    result = bench_run(output_dir, "--data-dir", str(missing))
    assert result.exit_code == ERROR
    assert error_line(result).startswith(f"CIFAR-10 was not found at {missing}")


def test_torchssl_without_its_checkout_names_the_command_that_fetches_it(output_dir, tmp_path):
    result = bench_run(output_dir, "--impl", "own,torchssl",
                       env={"SSL_BENCH_TORCHSSL_DIR": str(tmp_path / "no-checkout")})
    assert result.exit_code == ERROR
    assert str(tmp_path / "no-checkout") in error_line(result)
    assert "bench vendor sync" in error_line(result)


def _no_gpu_reason() -> str:
    """What PyTorch's build says of itself, read here from torch.version, not from the code under test."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if torch.version.cuda is not None:
        pytest.skip("a CUDA build without a usable GPU: the reason is the driver's own words")
    return f"this PyTorch ({torch.__version__}) is a CPU-only build"


def test_cuda_asked_for_on_a_machine_without_it(output_dir):
    reason = _no_gpu_reason()
    result = bench_run(output_dir, "--device", "cuda")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result) == f"--device cuda was asked for, but {reason}; use --device cpu."


def test_gpus_chosen_on_a_machine_without_one_are_refused(output_dir):
    reason = _no_gpu_reason()
    result = bench_run(output_dir, "--device", "auto", "--gpus", "0")
    assert result.exit_code == USAGE_ERROR
    assert error_line(result) == f"--gpus 0 was asked for, but {reason}; use --device cpu."


def test_the_paper_preset_without_a_gpu_is_refused_even_with_yes_unless_the_cpu_is_asked_for(output_dir):
    reason = _no_gpu_reason()
    result = bench_run(output_dir, "--device", "auto", "--preset", "paper", "--yes")
    assert result.exit_code == USAGE_ERROR
    lines = result.output.splitlines()
    assert f"No GPU: {reason}; the runs train on the CPU." in lines  # said before the refusal
    assert error_line(result).startswith("The paper preset on this machine's CPU would train each run for months")
    assert "pass --device cpu to train on the CPU all the same, or choose --preset cpu" in error_line(result)


def test_torchssl_with_ten_labels_is_refused_because_it_would_ignore_our_split(output_dir):
    result = bench_run(output_dir, "--impl", "own,torchssl", "--labels", "10")
    assert result.exit_code == USAGE_ERROR
    assert "fixed index table" in error_line(result)


def test_a_damaged_store_is_named_in_one_sentence(tmp_path):
    output_dir = tmp_path / "runs"
    output_dir.mkdir()
    (output_dir / "mlflow.db").write_bytes(b"this is not an sqlite database" * 100)
    result = CliRunner().invoke(main, ["run", "--labels", "40", "--preset", "smoke", "--device", "cpu",
                                       "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir)],
                                env={"MLFLOW_TRACKING_URI": None})
    assert result.exit_code == ERROR
    assert error_line(result) == (f"The MLflow store {output_dir.resolve() / 'mlflow.db'} is damaged (file is not a "
                                  "database): restore it from a backup, or move it aside and pass --tracking-uri (or "
                                  "--output-dir) to use another store.")
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_grid_that_would_train_for_months_on_this_cpu_says_so_and_needs_yes(output_dir):
    # The cpu preset's step (a fraction of a second here) at 100 million iterations: months, like the paper preset's
    # seconds-long WRN-28-2 step at 2^20 iterations, whose two timed steps would cost this test a minute.
    result = bench_run(output_dir, "--preset", "cpu", "--iterations", "100000000")  # also checks nothing was created
    assert result.exit_code == USAGE_ERROR
    message = error_line(result)
    assert message.startswith("A run of this grid would train for about ") and " days on this CPU (100,000,000 iterations" in message
    days = int(message.split("about ")[1].split(" days")[0].replace(",", ""))
    assert days > 100  # at least 0.1 s per iteration
    lines = result.output.splitlines()  # the user is told what the wait is for, before it
    assert lines.index("Timing one training step on this CPU to estimate the grid's duration…") < \
        lines.index(f"Error: {message}")
    assert "`--preset cpu` trains a run in about" in message and message.endswith("Pass --yes to start it anyway.")
