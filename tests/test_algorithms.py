"""Each own method's loss on a hand-built batch, against its paper's formula with the values worked out by hand,
and which side of it the gradient flows through. Two classes unless a test says otherwise: softmax([ln 3, 0]) =
(0.75, 0.25), softmax([0, 0]) = (0.5, 0.5), softmax([ln 9, 0]) = (0.9, 0.1); with three classes, softmax([ln 2, 0, 0])
= (0.5, 0.25, 0.25) and softmax([ln 3, 0, 0]) = (0.6, 0.2, 0.2)."""

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
from implementations import implementation, interface
from implementations.interface import (
    ALGORITHMS,
    DEFAULT_EXPERIMENT,
    TrainConfig,
    for_algorithm,
)
from implementations.own import flexmatch
from implementations.own.flexmatch import (
    FlexMatchState,
    class_thresholds,
    updated_pseudo_labels,
)
from implementations.own.meanteacher import mean_teacher_loss
from implementations.own.mixmatch import guess_labels, mixmatch_loss, mixup, sharpen
from implementations.own.pimodel import pi_model_loss
from implementations.own.pseudolabel import pseudo_label_loss
from implementations.own.step_loss import StepInputs, linear_rampup
from implementations.own.uda import uda_loss
from tests.fixtures_data import SUBSET_DIR, torchssl_checkout
from tests.test_report import edges_drawn_on

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


def test_mixmatch_sharpening_raises_each_probability_to_1_over_t_and_renormalises():
    # T = 0.5: (0.75², 0.25²) = (0.5625, 0.0625), sum 0.625
    assert sharpen(torch.tensor([[0.75, 0.25]]), 0.5).flatten().tolist() == pytest.approx([0.9, 0.1], abs=1e-6)
    assert sharpen(torch.tensor([[0.75, 0.25]]), 1.0).flatten().tolist() == pytest.approx([0.75, 0.25], abs=1e-6)


def test_mixmatch_guesses_the_sharpened_average_of_the_predictions_on_the_two_views():
    # views (0.75, 0.25) and (0.5, 0.5): average (0.625, 0.375) = (5/8, 3/8); squared (25/64, 9/64): (25/34, 9/34)
    guessed = guess_labels([logits([LN3, 0.0]), logits([0.0, 0.0])], temperature=0.5)
    assert guessed.flatten().tolist() == pytest.approx([25 / 34, 9 / 34], abs=1e-6)


@pytest.mark.parametrize("drawn", [0.25, 0.75])  # λ′ = max(λ, 1 − λ) = 0.75 either way
def test_mixup_mixes_each_row_with_the_one_the_shuffle_sends_it_keeping_the_larger_share_of_its_own(drawn):
    images = torch.tensor([[0.0], [4.0], [8.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    mixed_images, mixed_targets = mixup(images, targets, drawn, permutation=torch.tensor([2, 0, 1]))
    # row 0 with row 2: 0.75·0 + 0.25·8 = 2; row 1 with row 0: 0.75·4 + 0 = 3; row 2 with row 1: 0.75·8 + 0.25·4 = 7
    assert mixed_images.flatten().tolist() == pytest.approx([2.0, 3.0, 7.0])
    # (1, 0) with (1, 0); 0.75·(0, 1) + 0.25·(1, 0); 0.75·(1, 0) + 0.25·(0, 1)
    assert mixed_targets.tolist() == [pytest.approx([1.0, 0.0]), pytest.approx([0.25, 0.75]),
                                      pytest.approx([0.75, 0.25])]


def test_mixmatch_loss_is_cross_entropy_with_the_mixed_labeled_targets_plus_the_squared_error_on_the_unlabeled():
    labeled, unlabeled = logits([LN3, 0.0]), logits([0.0, 0.0])
    loss = mixmatch_loss(labeled, torch.tensor([[0.5, 0.5]]), unlabeled, torch.tensor([[0.9, 0.1]]),
                         unsupervised_weight=100.0)
    # ℓ_s = −(0.5·ln 0.75 + 0.5·ln 0.25) = 2 ln 2 − ½ ln 3
    assert loss.supervised.item() == pytest.approx(2 * LN2 - LN3 / 2, abs=1e-6)
    # ℓ_u = ((0.5 − 0.9)² + (0.5 − 0.1)²) / (C = 2 · N = 1) = 0.16
    assert loss.unsupervised.item() == pytest.approx(0.16, abs=1e-6)
    assert loss.total.item() == pytest.approx(2 * LN2 - LN3 / 2 + 16.0, abs=1e-5)
    assert loss.mask is None and loss.pseudo_labels is None and loss.class_thresholds is None
    loss.total.backward()
    # soft cross-entropy: p − target = (0.25, −0.25); squared error: 100 · Jᵀ·2(p − q)/2 with J = diag(p) − ppᵀ
    # = 100 · (0.25·(−0.4) − 0.25·0.4, …) = (−20, 20)
    assert labeled.grad.flatten().tolist() == pytest.approx([0.25, -0.25], abs=1e-6)
    assert unlabeled.grad.flatten().tolist() == pytest.approx([-20.0, 20.0], abs=1e-4)


def test_uda_masks_by_the_weak_confidence_and_trains_the_strong_view_towards_the_sharpened_weak_prediction():
    labeled, labels = labeled_batch()
    weak = logits([LN3, 0.0], [0.0, 0.0])  # confidence 0.75 (kept at τ = 0.7) and 0.5 (not kept)
    strong = logits([0.0, 0.0], [5.0, 0.0])
    loss = uda_loss(labeled, labels, weak, strong, threshold=0.7, temperature=0.5, unsupervised_weight=1.0)
    assert loss.mask.tolist() == [1.0, 0.0] and loss.pseudo_labels.tolist() == [0, 0]
    assert loss.class_thresholds.tolist() == pytest.approx([0.7, 0.7])
    # target softmax([2 ln 3, 0]) = (0.9, 0.1); KL((0.9, 0.1) ‖ (0.5, 0.5)) = 0.9 ln 1.8 + 0.1 ln 0.2 = 0.368064,
    # averaged over both images
    kl = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    assert loss.unsupervised.item() == pytest.approx(kl / 2, abs=1e-6)
    assert loss.total.item() == pytest.approx(LN2 + kl / 2, abs=1e-6)
    loss.unsupervised.backward()
    # d KL / d z = (p − target)/2 = (−0.2, 0.2) for the kept image; the target is a constant
    assert strong.grad.flatten().tolist() == pytest.approx([-0.2, 0.2, 0.0, 0.0], abs=1e-6)
    assert weak.grad is None


# FlexMatch on 10 unlabeled images and 3 classes: images 0, 1 last confidently predicted as class 0, image 2 as
# class 1, image 3 as class 2, the other six never: σ = (2, 1, 1), N − Σσ = 6 unused.
LATEST = torch.tensor([0, 0, 1, 2, -1, -1, -1, -1, -1, -1])


def test_flexmatch_thresholds_map_each_class_learning_effect_through_x_over_2_minus_x():
    # without warm-up β = σ / max σ = (1, 1/2, 1/2); M(β) = (1, (1/2)/(3/2), …) = (1, 1/3, 1/3); τ = 0.55
    without = class_thresholds(LATEST, num_classes=3, threshold=0.55, warmup=False)
    assert without.tolist() == pytest.approx([0.55, 0.55 / 3, 0.55 / 3], abs=1e-6)
    # with warm-up the 6 unused images are the largest "class": β = (2/6, 1/6, 1/6); M(1/3) = (1/3)/(5/3) = 1/5,
    # M(1/6) = (1/6)/(11/6) = 1/11
    warm = class_thresholds(LATEST, num_classes=3, threshold=0.55, warmup=True)
    assert warm.tolist() == pytest.approx([0.11, 0.05, 0.05], abs=1e-6)


@pytest.mark.parametrize("warmup", [True, False])
def test_flexmatch_thresholds_start_at_zero_before_any_confident_pseudo_label(warmup):
    assert class_thresholds(torch.full((10,), -1), 3, 0.95, warmup).tolist() == [0.0, 0.0, 0.0]


def test_flexmatch_step_keeps_pseudo_labels_by_their_class_threshold_and_records_only_the_confident_ones():
    # τ = 0.55 without warm-up: thresholds (0.55, 0.183, 0.183) from LATEST. The unlabeled batch is images 4, 0, 5:
    # weak predictions class 0 at 0.5 (below 0.55: dropped), class 1 at 0.5 (above 0.183: kept, but below τ:
    # not recorded), class 0 at 0.6 (kept and recorded).
    weak = [[LN2, 0.0, 0.0], [0.0, LN2, 0.0], [LN3, 0.0, 0.0]]
    forward = torch.tensor([[0.0, 0.0, 0.0], *weak, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    state = FlexMatchState(LATEST.clone())
    config = for_algorithm(TrainConfig(), "flexmatch").replace(threshold=0.55, threshold_warmup=False)
    loss = flexmatch.step(StepInputs(
        model=lambda images: forward.clone().requires_grad_(), teacher=None, labeled_images=torch.zeros(1, 1),
        labels=torch.tensor([0]), unlabeled_views=(torch.zeros(3, 1), torch.zeros(3, 1)),
        unlabeled_indices=torch.tensor([4, 0, 5]), ramped_weight=0.0, num_classes=3, config=config, state=state))
    assert loss.pseudo_labels.tolist() == [0, 1, 0] and loss.mask.tolist() == [0.0, 1.0, 1.0]
    assert loss.class_thresholds.tolist() == pytest.approx([0.55, 0.55 / 3, 0.55 / 3], abs=1e-6)
    # CE of the uniform strong predictions: ln 3 for each kept image, over the 3 images; ℓ_s = ln 3; λ = 1
    assert loss.unsupervised.item() == pytest.approx(2 * LN3 / 3, abs=1e-6)
    assert loss.total.item() == pytest.approx(LN3 + 2 * LN3 / 3, abs=1e-6)
    # image 5 is now class 0; image 0 keeps its class 0 (its class-1 prediction was not confident), image 4 none
    assert state.latest_pseudo_labels.tolist() == [0, 0, 1, 2, -1, 0, -1, -1, -1, -1]


def test_flexmatch_state_update_lets_only_confident_predictions_overwrite_even_for_an_image_drawn_twice():
    # image 4 drawn twice, confidently as class 2 then not confidently as 1; image 0 not confidently as 1;
    # image 5 confidently as 1
    updated = updated_pseudo_labels(LATEST, indices=torch.tensor([4, 0, 5, 4]),
                                    pseudo_labels=torch.tensor([2, 1, 1, 1]),
                                    confident=torch.tensor([True, False, True, False]))
    assert updated.tolist() == [0, 0, 1, 2, 2, 1, -1, -1, -1, -1]
    assert LATEST.tolist() == [0, 0, 1, 2, -1, -1, -1, -1, -1, -1]  # a new tensor; the old state is left as it was


def test_flexmatch_state_update_gives_an_image_drawn_twice_confidently_its_last_prediction_in_the_batch():
    # image 3 (latest 2) drawn three times: confidently as 1, confidently as 0, then not confidently as 4
    updated = updated_pseudo_labels(LATEST, indices=torch.tensor([3, 6, 3, 3]),
                                    pseudo_labels=torch.tensor([1, 4, 0, 4]),
                                    confident=torch.tensor([True, True, True, False]))
    assert updated.tolist() == [0, 0, 1, 0, -1, -1, 4, -1, -1, -1]


@pytest.mark.parametrize("done, expected", [(0, 0.0), (20, 5.0), (40, 10.0), (100, 10.0)])
def test_the_weight_ramps_up_linearly_over_the_warmup_fraction(done, expected):
    assert linear_rampup(10.0, done, total_iterations=100, warmup_fraction=0.4) == pytest.approx(expected)


def test_no_warmup_is_the_full_weight_from_the_start():
    assert linear_rampup(10.0, 0, total_iterations=100, warmup_fraction=0.0) == 10.0


# ---- the algorithm as a grid dimension: `bench run --algorithm …` ------------------------------------------

OWN_ONLY_NOT = ("freematch", "remixmatch", "softmatch", "vat")  # TorchSSL has them, own not
METHODS = tuple(sorted(ALGORITHMS))
# The signals a method family logs whoever implements it (class mask rates depend on which classes were
# pseudo-labelled, pseudo-label accuracy on whether any was kept: both left out of the comparison).
VARYING = (interface.TRAIN_CLASS_MASK_RATE_PREFIX, interface.TRAIN_PSEUDO_LABEL_ACCURACY)


def bench(*arguments: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *arguments], capture_output=True, text=True,
                          timeout=1200, env=environment)


@pytest.fixture(scope="module")
def method_grid(tmp_path_factory) -> tuple[Path, str]:
    """Every method of both implementations on one split: own's eight, TorchSSL's twelve (4 iterations each)."""
    torchssl_checkout()
    output_dir = tmp_path_factory.mktemp("methods")
    ran = bench("run", "--algorithm", ",".join(METHODS), "--impl", "own,torchssl", "--labels", "40", "--seeds", "0",
                "--preset", "smoke", "--iterations", "4", "--eval-interval", "4", "--max-parallel", "2",
                "--device", "cpu", "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return output_dir, ran.stdout


def _child_runs(output_dir: Path) -> dict[tuple[str, str], object]:
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    return {(run.data.tags["algorithm"], run.data.tags["impl"]): run
            for run in client.search_runs([experiment.experiment_id])
            if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD}


def _family_signals(run) -> set[str]:
    return {name for name in run.data.metrics if name.startswith("train/") and not name.startswith(VARYING)}


@pytest.mark.slow
def test_every_method_of_both_implementations_runs_on_the_same_split_with_the_signals_of_its_family(method_grid):
    output_dir, printed = method_grid
    assert f"Left out: own has no {', '.join(OWN_ONLY_NOT)}" in printed
    all_runs = _child_runs(output_dir)
    assert set(all_runs) == {(algorithm, impl) for algorithm in METHODS for impl in ("own", "torchssl")
                             if not (impl == "own" and algorithm in OWN_ONLY_NOT)}
    assert len({run.data.tags["split_digest"] for run in all_runs.values()}) == 1  # one split for every method
    for (algorithm, impl), run in all_runs.items():
        assert run.info.status == "FINISHED" and run.info.run_name == f"{algorithm}/{impl}/40/s0"
        assert interface.EVAL_TOP1 in run.data.metrics and interface.EVAL_AUC in run.data.metrics
    for algorithm in set(METHODS) - set(OWN_ONLY_NOT):  # the same signals, own or TorchSSL
        assert _family_signals(all_runs[algorithm, "own"]) == _family_signals(all_runs[algorithm, "torchssl"]), algorithm
    airplane_threshold = interface.TRAIN_CLASS_THRESHOLD_PREFIX + "airplane"
    for algorithm in ("fixmatch", "pseudolabel", "uda", "flexmatch", "freematch"):  # thresholds
        metrics = all_runs[algorithm, "torchssl"].data.metrics
        assert interface.TRAIN_MASK_RATE in metrics and airplane_threshold in metrics
        assert any(name.startswith(interface.TRAIN_CLASS_MASK_RATE_PREFIX) for name in metrics)
    assert interface.TRAIN_MASK_RATE in all_runs["softmatch", "torchssl"].data.metrics  # its mean weight
    assert airplane_threshold not in all_runs["softmatch", "torchssl"].data.metrics  # no threshold
    for algorithm in ("supervised", "pimodel", "meanteacher", "mixmatch", "vat", "remixmatch"):
        assert not any(name.startswith(("train/class_", interface.TRAIN_MASK_RATE, interface.TRAIN_PSEUDO_LABEL_ACCURACY))
                       for name in all_runs[algorithm, "torchssl"].data.metrics), algorithm
    gap = all_runs["flexmatch", "torchssl"].data.tags["torchssl_resume_gap"]
    assert "selected_label" in gap and all_runs["fixmatch", "torchssl"].data.tags["torchssl_resume_gap"] == ""


@pytest.mark.slow
def test_every_own_method_records_its_own_defaults_and_signals(method_grid, tmp_path):
    output_dir, _ = method_grid
    all_runs = _child_runs(output_dir)
    runs = {algorithm: run for (algorithm, impl), run in all_runs.items() if impl == "own"}
    for algorithm, run in runs.items():
        assert run.data.params["algorithm"] == algorithm
        parent = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}").get_run(run.data.tags["mlflow.parentRunId"])
        assert parent.info.run_name == f"{algorithm} · labels=40 · smoke"
    # TorchSSL's defaults: μ = 1 and each method's λ, with its ramp-up
    assert runs["pimodel"].data.params["unsupervised_weight"] == "10.0"
    assert runs["meanteacher"].data.params["unsupervised_weight"] == "50.0"
    assert runs["pimodel"].data.params["unlabeled_ratio"] == "1"
    assert "unsupervised_warmup" not in runs["supervised"].data.params  # a field it never reads
    assert runs["mixmatch"].data.params["mixup_alpha"] == "0.5" and runs["uda"].data.params["threshold"] == "0.8"
    assert runs["flexmatch"].data.params["threshold_warmup"] == "True"
    assert runs["uda"].data.params["unlabeled_ratio"] == "2"  # FixMatch's μ, as the smoke preset scales it
    # TorchSSL runs with the same values under its names
    torchssl_mixmatch = all_runs["mixmatch", "torchssl"].data.params
    assert (torchssl_mixmatch["torchssl.alpha"], torchssl_mixmatch["torchssl.ulb_loss_ratio"]) == ("0.5", "100.0")
    airplane_threshold = interface.TRAIN_CLASS_THRESHOLD_PREFIX + "airplane"
    assert runs["uda"].data.metrics[airplane_threshold] == 0.8  # τ for every class
    assert 0.0 <= runs["flexmatch"].data.metrics[airplane_threshold] <= 0.95  # T(c) = M(β(c))·τ
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    sheet = json.loads(Path(client.download_artifacts(runs["meanteacher"].info.run_id, "method.json", str(tmp_path)))
                       .read_text())
    assert sheet["algorithm"].startswith("Mean Teacher") and sheet["files"][0].startswith("implementations/own/meanteacher.py")


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_file_a_method_sheet_names_exists(algorithm):
    """Own's files in this repository, TorchSSL's in its pinned checkout."""
    roots = {"own": Path(__file__).resolve().parents[1], "torchssl": torchssl_checkout()}
    for impl, root in roots.items():
        if impl == "own" and algorithm in OWN_ONLY_NOT:
            continue
        sheet = implementation(impl).method_sheet(for_algorithm(TrainConfig(preset="smoke"), algorithm))
        named = [path.strip() for entry in sheet["files"] for path in entry.split(" (")[0].split(", ")]
        assert named and all((root / path).is_file() for path in named), (impl, named)
        fixmatch = implementation("torchssl").method_sheet(for_algorithm(TrainConfig(), "fixmatch"))
        assert set(sheet["traits"]) == set(fixmatch["traits"])


def test_a_method_an_implementation_does_not_have_is_refused_in_one_sentence(tmp_path):
    ran = bench("run", "--algorithm", "remixmatch", "--impl", "own", "--labels", "40", "--preset", "smoke",
                "--data-dir", str(SUBSET_DIR), "--output-dir", str(tmp_path / "runs"))
    assert ran.returncode == 2 and "own has no remixmatch" in ran.stderr.lower()
    unknown = bench("run", "--algorithm", "mixmatch2", "--labels", "40", "--data-dir", str(SUBSET_DIR),
                    "--output-dir", str(tmp_path / "runs"))
    assert unknown.returncode == 2 and "Unknown algorithm 'mixmatch2' in --algorithm" in unknown.stderr
    assert "Traceback" not in ran.stderr + unknown.stderr


@pytest.mark.slow
def test_the_report_of_several_methods_compares_them_beside_their_published_numbers(method_grid):
    output_dir, _ = method_grid
    made = bench("report", "--output-dir", str(output_dir), "--out", str(output_dir / "report"))
    assert made.returncode == 0, made.stdout + made.stderr
    text = (output_dir / "report" / "report.md").read_text()
    overview = text.split("## The methods compared", 1)[1].split("\n## ", 1)[0]
    compared, rest = overview.split("How the methods differ", 1)
    differences, ledger = rest.split("Where each method's code differs from TorchSSL's", 1)
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line
            for line in compared.splitlines() if line.startswith("| ")}
    traits = {line.split(" | ")[0].strip("| "): line for line in differences.splitlines() if line.startswith("| ")}
    assert {(algorithm, "torchssl") for algorithm in METHODS} <= set(rows)
    # TorchSSL's README at the pinned commit, 40 labels: Π-model 25.66 ± 1.76, Pseudo-Label 25.39 ± 0.26,
    # Mean Teacher 29.91 ± 1.6, UDA 89.38 ± 3.75, FlexMatch 95.03 ± 0.06, MixMatch 63.81 ± 6.48, ReMixMatch 90.12 ±
    # 1.03, VAT 25.34 ± 2.12; none for the supervised baseline, FreeMatch and SoftMatch
    assert rows["pimodel", "own"].rstrip(" |").endswith("25.66 ± 1.76") and "25.39 ± 0.26" in rows["pseudolabel", "own"]
    assert "29.91 ± 1.60" in rows["meanteacher", "torchssl"] and rows["supervised", "own"].rstrip(" |").endswith("–")
    assert "89.38 ± 3.75" in rows["uda", "own"] and "95.03 ± 0.06" in rows["flexmatch", "torchssl"]
    assert "63.81 ± 6.48" in rows["mixmatch", "own"] and "90.12 ± 1.03" in rows["remixmatch", "torchssl"]
    assert "25.34 ± 2.12" in rows["vat", "torchssl"] and rows["softmatch", "torchssl"].rstrip(" |").endswith("–")
    assert set(METHODS) <= set(traits)
    assert "two independent weak views (student, teacher)" in traits["meanteacher"]
    assert "confidence ≥ τ" in traits["pseudolabel"] and "unlabeled images are not used" in traits["supervised"]
    assert "MixUp" in traits["mixmatch"] and "sharpened with temperature T" in traits["uda"]
    assert "latest confident pseudo-label of every unlabeled image" in traits["flexmatch"]
    assert "adversarial perturbation" in traits["vat"] and "self-adaptive" in traits["freematch"]
    # the ledger: own vs TorchSSL's code, and TorchSSL's defaults vs the paper, per method
    assert "detaches the second view" in ledger and "α = 0.75 and λ_u = 75" in ledger
    # what TorchSSL's checkpoints leave out, from the runs' records
    assert "TorchSSL's flexmatch: its save_model does not save the latest pseudo-label" in overview
    assert "writes nothing before iteration 1,000,000" in overview
    # one figure of every method's accuracy against the iteration
    assert "](figures/methods_top1_vs_iteration.png)" in overview
    figure = output_dir / "report" / "figures" / "methods_top1_vs_iteration.png"
    assert figure.stat().st_size > 10_000 and edges_drawn_on(figure) == []  # its legend of 20 lines fits
    for title in ("Π-model (Laine & Aila", "Mean Teacher (Tarvainen & Valpola", "Pseudo-Label (Lee",
                  "MixMatch (Berthelot", "UDA (Xie", "FlexMatch (Zhang", "ReMixMatch (Berthelot", "VAT (Miyato"):
        assert f"Method as implemented: {title}" in text
