"""Each own method's loss on a hand-built batch, against its paper's formula with the values worked out by hand,
and which side of it the gradient flows through. Two classes throughout: softmax([ln 3, 0]) = (0.75, 0.25),
softmax([0, 0]) = (0.5, 0.5), softmax([ln 9, 0]) = (0.9, 0.1)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from harness import tracking
from implementations import interface as names

from implementations.own.meanteacher import mean_teacher_loss
from implementations.own.pimodel import pi_model_loss
from implementations.own.pseudolabel import pseudo_label_loss
from implementations.own.step_loss import linear_rampup
from tests.fixtures_data import SUBSET_DIR

LN2, LN3, LN9 = math.log(2), math.log(3), math.log(9)


def logits(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=True)


def labeled_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """One labeled image, both classes equally likely: ℓ_s = ln 2."""
    return logits([0.0, 0.0]), torch.tensor([0])


def test_pseudo_label_trains_the_confident_images_on_their_own_argmax_and_ignores_the_rest():
    labeled, labels = labeled_batch()
    unlabeled = logits([LN9, 0.0], [0.0, 0.0])  # confidence 0.9 (kept at τ = 0.85) and 0.5 (not kept)
    loss = pseudo_label_loss(labeled, labels, unlabeled, threshold=0.85, unsupervised_weight=2.0)
    assert loss.supervised.item() == pytest.approx(LN2, abs=1e-6)
    # ℓ_u = 1/2 · (−ln 0.9 + 0): the mean over the whole unlabeled batch
    assert loss.unsupervised.item() == pytest.approx(-math.log(0.9) / 2, abs=1e-6)
    assert loss.total.item() == pytest.approx(LN2 - math.log(0.9), abs=1e-6)
    assert loss.mask.tolist() == [1.0, 0.0] and loss.pseudo_labels[0].item() == 0
    loss.unsupervised.backward()
    # The pseudo-label is a constant: d/dz of CE(0, z)/2 = (p − e₀)/2 = (−0.05, 0.05); the masked image gets none.
    assert unlabeled.grad.flatten().tolist() == pytest.approx([-0.05, 0.05, 0.0, 0.0], abs=1e-6)


def test_pi_model_is_the_mean_squared_difference_of_the_two_predictions_with_gradient_through_both():
    labeled, labels = labeled_batch()
    first, second = logits([LN3, 0.0]), logits([0.0, 0.0])
    loss = pi_model_loss(labeled, labels, first, second, unsupervised_weight=10.0)
    # ‖(0.75, 0.25) − (0.5, 0.5)‖² / (C = 2 · N = 1) = 0.125 / 2
    assert loss.unsupervised.item() == pytest.approx(0.0625, abs=1e-6)
    assert loss.total.item() == pytest.approx(LN2 + 0.625, abs=1e-6)
    assert loss.mask is None and loss.pseudo_labels is None  # no pseudo-labels: no mask rate
    loss.unsupervised.backward()
    # dℓ/dp = 2(p − p̃)/2 = ±0.25; through the softmax Jacobians diag(p) − ppᵀ: (0.09375, −0.09375) and
    # (−0.125, 0.125)
    assert first.grad.flatten().tolist() == pytest.approx([0.09375, -0.09375], abs=1e-6)
    assert second.grad.flatten().tolist() == pytest.approx([-0.125, 0.125], abs=1e-6)


def test_mean_teacher_pulls_the_student_towards_the_teacher_and_never_the_teacher():
    labeled, labels = labeled_batch()
    student, teacher = logits([LN3, 0.0]), logits([0.0, 0.0])
    loss = mean_teacher_loss(labeled, labels, student, teacher, unsupervised_weight=50.0)
    assert loss.unsupervised.item() == pytest.approx(0.0625, abs=1e-6)
    assert loss.total.item() == pytest.approx(LN2 + 50 * 0.0625, abs=1e-5)
    loss.unsupervised.backward()
    assert student.grad.flatten().tolist() == pytest.approx([0.09375, -0.09375], abs=1e-6)
    assert teacher.grad is None


@pytest.mark.parametrize("done, expected", [(0, 0.0), (20, 5.0), (40, 10.0), (100, 10.0)])
def test_the_weight_ramps_up_linearly_over_the_warmup_fraction(done, expected):
    assert linear_rampup(10.0, done, total_iterations=100, warmup_fraction=0.4) == pytest.approx(expected)


def test_no_warmup_is_the_full_weight_from_the_start():
    assert linear_rampup(10.0, 0, total_iterations=100, warmup_fraction=0.0) == 10.0


# ---- the algorithm as a grid dimension: `bench run --algorithm …` ------------------------------------------

OTHER_METHODS = ("supervised", "pseudolabel", "pimodel", "meanteacher")


def bench(*arguments: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *arguments], capture_output=True, text=True,
                          timeout=900, env=environment)


@pytest.fixture(scope="module")
def method_grid(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("methods")
    ran = bench("run", "--algorithm", ",".join(OTHER_METHODS), "--impl", "own", "--labels", "40", "--seeds", "0",
                "--preset", "smoke", "--device", "cpu", "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return output_dir


@pytest.mark.slow
def test_every_own_method_runs_as_a_grid_dimension_on_the_same_split_with_its_signals(method_grid, tmp_path):
    client = MlflowClient(f"sqlite:///{method_grid / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = {run.data.tags["algorithm"]: run for run in client.search_runs([experiment.experiment_id])
            if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD}
    assert set(runs) == set(OTHER_METHODS)
    assert len({run.data.tags["split_digest"] for run in runs.values()}) == 1  # one split for every method
    for algorithm, run in runs.items():
        assert run.info.status == "FINISHED" and run.info.run_name == f"{algorithm}/own/40/s0"
        assert run.data.params["algorithm"] == algorithm
        assert names.EVAL_TOP1 in run.data.metrics and names.TRAIN_SUPERVISED_LOSS in run.data.metrics
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        assert parent.info.run_name == f"{algorithm} · labels=40 · smoke"
    # TorchSSL's defaults: μ = 1 and each method's λ, with its ramp-up
    assert runs["pimodel"].data.params["unsupervised_weight"] == "10.0"
    assert runs["meanteacher"].data.params["unsupervised_weight"] == "50.0"
    assert runs["pimodel"].data.params["unlabeled_ratio"] == "1"
    assert "unsupervised_warmup" not in runs["supervised"].data.params  # a field it never reads
    # Pseudo-labels give a mask rate and their accuracy; the consistency methods a consistency loss only.
    assert names.TRAIN_MASK_RATE in runs["pseudolabel"].data.metrics
    for algorithm in ("pimodel", "meanteacher"):
        assert names.TRAIN_UNSUPERVISED_LOSS in runs[algorithm].data.metrics
        assert names.TRAIN_MASK_RATE not in runs[algorithm].data.metrics
    sheet = json.loads(Path(client.download_artifacts(runs["meanteacher"].info.run_id, "method.json", str(tmp_path)))
                       .read_text())
    assert sheet["algorithm"].startswith("Mean Teacher") and sheet["files"][0].startswith("implementations/own/meanteacher.py")


def test_a_method_torchssl_is_not_wired_for_is_refused_in_one_sentence(tmp_path):
    ran = bench("run", "--algorithm", "pimodel", "--impl", "own,torchssl", "--labels", "40", "--preset", "smoke",
                "--data-dir", str(SUBSET_DIR), "--output-dir", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "run --algorithm pimodel with --impl own" in ran.stderr
    unknown = bench("run", "--algorithm", "mixmatch2", "--labels", "40", "--data-dir", str(SUBSET_DIR),
                    "--output-dir", str(tmp_path / "runs"))
    assert unknown.returncode == 2 and "Unknown algorithm 'mixmatch2' in --algorithm" in unknown.stderr
    assert "Traceback" not in ran.stderr + unknown.stderr


@pytest.mark.slow
def test_the_report_of_several_methods_compares_them_beside_their_published_numbers(method_grid):
    made = bench("report", "--output-dir", str(method_grid), "--out", str(method_grid / "report"))
    assert made.returncode == 0, made.stdout + made.stderr
    text = (method_grid / "report" / "report.md").read_text()
    overview = text.split("## The methods compared", 1)[1].split("\n## ", 1)[0]
    compared, differences = overview.split("How the methods differ", 1)
    rows = {line.split(" | ")[0].strip("| "): line for line in compared.splitlines() if line.startswith("| ")}
    traits = {line.split(" | ")[0].strip("| "): line for line in differences.splitlines() if line.startswith("| ")}
    assert set(OTHER_METHODS) <= set(rows)
    # TorchSSL's README at the pinned commit, 40 labels: Π-model 25.66 ± 1.76, Pseudo-Label 25.39 ± 0.26,
    # Mean Teacher 29.91 ± 1.6; none for the supervised baseline
    assert rows["pimodel"].rstrip(" |").endswith("25.66 ± 1.76") and "25.39 ± 0.26" in rows["pseudolabel"]
    assert "29.91 ± 1.60" in rows["meanteacher"] and rows["supervised"].rstrip(" |").endswith("–")
    assert set(OTHER_METHODS) <= set(traits)
    assert "two independent weak views (student, teacher)" in traits["meanteacher"]
    assert "confidence ≥ τ" in traits["pseudolabel"] and "unlabeled images are not used" in traits["supervised"]
    for title in ("Π-model (Laine & Aila", "Mean Teacher (Tarvainen & Valpola", "Pseudo-Label (Lee"):
        assert f"Method as implemented: {title}" in text
