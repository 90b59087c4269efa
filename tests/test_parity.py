"""`bench parity` and the difference ledger, against the real TorchSSL checkout and real CIFAR-10 images.

Own configured as TorchSSL has it must compute TorchSSL's own FixMatch iteration step by step; leaving any
model switch of the ledger at own's default must make the check fail, or the check proves nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from harness.cli import main as bench
from harness.parity import ParityOptions, run_parity
from implementations import implementation
from implementations.interface import TrainConfig
from implementations.ledger import LEDGER, TORCHSSL_CHOICES
from tests.fixtures_data import SUBSET_DIR, torchssl_checkout

QUANTITIES = ("logits", "supervised loss", "unsupervised loss", "total loss", "learning rate",
              "mask (pseudo-label kept)", "pseudo-labels", "gradient of every parameter", "parameters after the step",
              "EMA parameters", "batch-norm running statistics")


def table_rows(output: str) -> dict[str, str]:
    """quantity -> its row in the printed table."""
    rows = {}
    for line in output.splitlines():
        for quantity in QUANTITIES:
            if line.startswith(quantity + " "):
                rows[quantity] = line
    return rows


@pytest.mark.slow
def test_own_as_torchssl_computes_torchssls_iteration_at_wrn_28_2():
    torchssl_checkout()
    completed = subprocess.run([sys.executable, "-m", "harness.cli", "parity", "--labels", "40", "--steps", "10",
                                "--data-dir", str(SUBSET_DIR)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = table_rows(completed.stdout)
    assert set(rows) == set(QUANTITIES)
    assert all(row.rstrip().endswith("ok") for row in rows.values()), completed.stdout
    assert "0 of 160 differ" in rows["mask (pseudo-label kept)"] and "0 of 160 differ" in rows["pseudo-labels"]
    assert "WRN-28-2" in completed.stdout and "10 steps" in completed.stdout
    assert "initialisation: own's and TorchSSL's own initialisations agree" in completed.stdout
    assert completed.stdout.rstrip().splitlines()[-1].startswith("PASS")


@pytest.mark.slow
@pytest.mark.parametrize("left_at_default, failing", [
    (("own_defaults", ("width_change_conv_input",)), "logits"),
    (("own_defaults", ("conv_bias",)), "initialisation"),
    (("changes", (("bn_eps", 1e-5),)), "logits"),  # PyTorch's default, own's before the ledger
])
def test_parity_fails_when_a_model_switch_is_left_at_owns_choice(left_at_default, failing, capsys):
    torchssl_checkout()
    options = ParityOptions(labels=40, steps=2, data_dir=SUBSET_DIR, **dict([left_at_default]))
    assert run_parity(options) == 1
    output = capsys.readouterr().out
    last_line = output.rstrip().splitlines()[-1]
    assert last_line.startswith("FAIL") and failing in last_line
    if failing == "logits":
        assert table_rows(output)["logits"].rstrip().endswith("FAIL")
    else:
        assert "initialisation: FAIL" in output and "conv" in output


def test_a_switch_that_is_not_in_the_ledger_is_refused_in_one_sentence():
    result = CliRunner().invoke(bench, ["parity", "--own-default", "learning_rate", "--data-dir", str(SUBSET_DIR)])
    assert result.exit_code == 2
    assert "--own-default learning_rate is not a ledger switch; choose from" in result.output
    assert "Traceback" not in result.output


def test_missing_data_is_one_sentence_naming_only_options_bench_parity_has(tmp_path):
    torchssl_checkout()  # the check refuses without the checkout before it looks for data
    result = CliRunner().invoke(bench, ["parity", "--data-dir", str(tmp_path / "nothing-here")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (message,) = result.output.strip().splitlines()
    assert "cifar-10-batches-py" in message
    named = set(re.findall(r"--[a-z][a-z-]+", message))
    assert named, message  # it says which option to use
    parity_options = set(re.findall(r"--[a-z][a-z-]+", CliRunner().invoke(bench, ["parity", "--help"]).output))
    assert named <= parity_options, f"{message} names {named - parity_options}, which bench parity does not have"


def test_every_ledger_item_that_can_change_accuracy_has_a_switch_to_torchssls_choice():
    for entry in LEDGER:
        if entry.can_change_accuracy:
            assert entry.field in TrainConfig().as_params(), entry.topic
            assert entry.torchssl_value is not None, entry.topic


def test_own_by_default_makes_the_papers_choices_and_own_as_torchssl_takes_every_torchssl_value():
    own, own_as_torchssl = TrainConfig(), implementation("own-as-torchssl").configure(TrainConfig())
    for entry in LEDGER:
        if entry.field:
            assert getattr(own_as_torchssl, entry.field) == entry.torchssl_value, entry.field
    assert (own.bn_eps, own.conv_bias, own.width_change_conv_input, own.randaugment_ops) == (1e-3, "none", "activated", 2)
    assert own_as_torchssl.replace(**{field: getattr(own, field) for field in TORCHSSL_CHOICES}) == own


def test_bench_parity_list_prints_every_ledger_entry_with_its_switch():
    result = CliRunner().invoke(bench, ["parity", "--list"])
    assert result.exit_code == 0
    for entry in LEDGER:
        assert entry.topic in result.output
        if entry.field:
            assert f"switch: {entry.field} = {entry.own_value!r} (own) → {entry.torchssl_value!r} (TorchSSL)" in result.output
