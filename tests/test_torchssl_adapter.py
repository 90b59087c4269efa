"""The TorchSSL adapter: its arguments from our config, its numbers under our names, and a real run.

The mapping tests run everywhere. Those that read TorchSSL's own files, or run it, need the checkout
`bench vendor sync` makes and are skipped, with the reason, without it.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from implementations.torchssl import checkout as pinned_checkout
from harness.presets import PRESETS
from implementations import interface
from implementations.interface import ALGORITHMS, RunInputs, for_algorithm
from implementations.torchssl import adapter, arguments
from implementations.torchssl.algorithms import TORCHSSL_ALGORITHMS
from implementations.torchssl.metrics import (
    EVAL_NAMES,
    eval_metrics,
    mask_rate_from_torchssl_mask_ratio,
)
from tests.fixtures_data import SUBSET_DIR, torchssl_checkout

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OUR_METRIC_NAMES = {value for key, value in vars(interface).items() if key.startswith(("EVAL_", "TRAIN_"))
                    and isinstance(value, str) and not key.endswith("_PREFIX")}


def _checkout() -> Path:
    return torchssl_checkout()


class Interrupted(Exception):
    pass


class RecordingSink:
    def __init__(self, stop_after_step: int | None = None):
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.confusion: list[tuple[int, np.ndarray]] = []
        self.checkpoints: list[int] = []
        self.stop_after_step = stop_after_step

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))
        if self.stop_after_step is not None and step >= self.stop_after_step:
            raise Interrupted(f"the test stops the run at step {step}")

    def log_confusion_matrix(self, matrix, step):
        self.confusion.append((step, np.asarray(matrix)))

    def checkpointed(self, iteration):
        self.checkpoints.append(iteration)

    def progress(self, iteration):
        pass

    def steps_of(self, name: str) -> list[int]:
        return [step for step, metrics in self.metrics if name in metrics]


# --- arguments ----------------------------------------------------------------------------------

def test_our_hyper_parameters_take_torchssl_argument_names():
    assert arguments.torchssl_hyperparameters(PRESETS["smoke"]) == {
        "num_train_iter": 40, "batch_size": 8, "uratio": 2, "p_cutoff": 0.95, "ulb_loss_ratio": 1.0,
        "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4, "ema_m": 0.999, "depth": 10, "widen_factor": 1,
        "num_eval_iter": 20, "eval_batch_size": 512, "seed": 0,
    }


def test_torchssl_runs_as_one_non_distributed_process_writing_into_our_work_dir(tmp_path):
    args = arguments.build_torchssl_args(
        {"gpu": "None", "multiprocessing_distributed": True, "save_dir": "./saved_models", "T": 0.5},
        PRESETS["smoke"], num_labels=40, num_classes=10, save_dir=tmp_path / "torchssl",
        save_name="fixmatch_cifar10_40_0", gpu=0, num_workers=0, load_path=None)
    assert args["save_dir"] == str(tmp_path / "torchssl") and args["save_name"] == "fixmatch_cifar10_40_0"
    assert (args["gpu"], args["world_size"], args["rank"]) == (0, 1, 0)
    assert args["distributed"] is False and args["multiprocessing_distributed"] is False
    assert (args["resume"], args["load_path"], args["use_tensorboard"], args["num_workers"]) == (False, None, False, 0)
    assert args["T"] == 0.5  # TorchSSL's own value where we have no counterpart


def test_a_checkpoint_in_the_work_dir_becomes_torchssl_resume(tmp_path):
    checkpoint = tmp_path / "latest_model.pth"
    args = arguments.build_torchssl_args({}, PRESETS["smoke"], num_labels=40, num_classes=10, save_dir=tmp_path,
                                       save_name="x", gpu=0, num_workers=0, load_path=checkpoint)
    assert (args["resume"], args["load_path"]) == (True, str(checkpoint))


@pytest.mark.parametrize("change, num_labels, complaint", [
    ({"nesterov": False}, 40, "always uses Nesterov"),
    ({}, 10, "its own fixed index table"),
])
def test_configurations_torchssl_cannot_run_faithfully_are_named(change, num_labels, complaint):
    assert complaint in arguments.unsupported_reason(PRESETS["paper"].replace(**change), num_labels)


def test_the_paper_preset_is_a_runnable_torchssl_configuration():
    assert arguments.unsupported_reason(PRESETS["paper"], 40) is None


@pytest.mark.parametrize("num_labels", [40, 250, 4000])
def test_the_paper_preset_reproduces_torchssls_own_config_file_but_evaluates_every_1024_iterations(num_labels, tmp_path):
    checkout = _checkout()
    config_file = checkout / f"config/fixmatch/fixmatch_cifar10_{num_labels}_0.yaml"
    torchssl_config = yaml.safe_load(config_file.read_text())
    args = arguments.build_torchssl_args(
        arguments.read_reference_config(checkout, "fixmatch", num_labels), PRESETS["paper"], num_labels=num_labels,
        num_classes=10, save_dir=tmp_path, save_name="x", gpu=0, num_workers=0, load_path=None)
    hyper_parameters = {key: value for key, value in torchssl_config.items() if key not in arguments.ENVIRONMENT_ARGS}
    # The one change: evaluations every 1,024 iterations (the paper's 64 kimg) instead of TorchSSL's 5,000, so that
    # both implementations are reported over the same final window; evaluating trains nothing.
    assert hyper_parameters["num_eval_iter"] == 5000 and args["num_eval_iter"] == 1024
    assert {key: args[key] for key in hyper_parameters} == {**hyper_parameters, "num_eval_iter": 1024}
    # No argument TorchSSL does not know: its command line's defaults and its config name them all.
    known = set(arguments.read_argument_defaults(checkout, "fixmatch")) | set(torchssl_config) | {"distributed"}
    assert set(args) <= known


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_methods_defaults_are_torchssls_own_arguments_for_it(algorithm, tmp_path):
    """Each method's defaults (interface.ALGORITHMS) under the paper preset give exactly the arguments TorchSSL's
    own command line builds for it (its script's argparse defaults, its config on top), at 40, 250 and 4000 labels;
    only the evaluation interval is ours."""
    checkout = _checkout()
    script = TORCHSSL_ALGORITHMS[algorithm].script
    config = for_algorithm(PRESETS["paper"], algorithm)
    ours = arguments.torchssl_hyperparameters(config)
    for num_labels in (40, 250, 4000):
        reference = arguments.read_reference_config(checkout, script, num_labels)
        args = arguments.build_torchssl_args(reference, config, num_labels=num_labels, num_classes=10, save_dir=tmp_path,
                                           save_name="x", gpu=0, num_workers=0, load_path=None)
        assert set(ours) <= set(arguments.read_argument_defaults(checkout, script))  # names its script knows
        differing = {name: (args[name], reference[name]) for name in ours if args[name] != reference[name]}
        assert differing == {"num_eval_iter": (1024, reference["num_eval_iter"])}, (num_labels, differing)
        assert args["alg"] == script


def test_each_method_maps_the_fields_it_reads_and_no_other():
    mixmatch = arguments.torchssl_hyperparameters(for_algorithm(PRESETS["paper"], "mixmatch"))
    assert (mixmatch["T"], mixmatch["alpha"], mixmatch["ulb_loss_ratio"], mixmatch["ramp_up"]) == (0.5, 0.5, 100.0, 0.4)
    assert "p_cutoff" not in mixmatch
    vat = arguments.torchssl_hyperparameters(for_algorithm(PRESETS["paper"], "vat"))
    assert (vat["vat_weight"], vat["unsup_warmup_pos"]) == (0.3, 0.4) and "ulb_loss_ratio" not in vat
    supervised = arguments.torchssl_hyperparameters(for_algorithm(PRESETS["paper"], "supervised"))
    assert "uratio" not in supervised and "ulb_loss_ratio" not in supervised


def test_arguments_the_config_files_leave_out_come_from_torchssls_command_line_defaults():
    defaults = arguments.read_argument_defaults(_checkout(), "fixmatch")
    assert (defaults["clip"], defaults["num_train_iter"], defaults["multiprocessing_distributed"]) == (0, 2**20, True)
    assert defaults["resume"] is False  # a store_true flag


def test_a_label_count_without_a_config_file_uses_the_40_label_one(tmp_path):
    checkout = _checkout()
    assert arguments.reference_config_path(checkout, "fixmatch", 100).name == "fixmatch_cifar10_40_0.yaml"
    assert arguments.read_reference_config(checkout, "fixmatch", 100)["num_labels"] == 100


# --- metrics ------------------------------------------------------------------------------------

def test_torchssls_mask_ratio_is_the_complement_of_our_mask_rate():
    assert mask_rate_from_torchssl_mask_ratio(0.75) == 0.25
    assert mask_rate_from_torchssl_mask_ratio(1.0) == 0.0


def test_torchssls_evaluation_maps_to_our_names_with_per_class_accuracy_from_counts():
    torchssl_eval = {"eval/loss": torch.tensor(1.5), "eval/top-1-acc": 0.6, "eval/top-5-acc": 0.9,
                     "eval/precision": 0.55, "eval/recall": 0.58, "eval/F1": 0.56, "eval/AUC": np.float64(0.8),
                     "eval/best_acc": 0.7, "eval/best_it": 3}
    counts = np.zeros((10, 10), dtype=np.int64)
    counts[0, 0], counts[0, 1] = 3, 1  # airplane: 3 of 4 right
    counts[1, 1] = 2                   # automobile: 2 of 2; other classes have no test image
    metrics = eval_metrics(torchssl_eval, counts, CLASS_NAMES)
    assert metrics == {
        interface.EVAL_LOSS: 1.5, interface.EVAL_TOP1: 0.6, interface.EVAL_TOP5: 0.9, interface.EVAL_PRECISION: 0.55,
        interface.EVAL_RECALL: 0.58, interface.EVAL_F1: 0.56, interface.EVAL_AUC: 0.8,
        interface.EVAL_CLASS_ACCURACY_PREFIX + "airplane": 0.75, interface.EVAL_CLASS_ACCURACY_PREFIX + "automobile": 1.0,
    }
    assert set(EVAL_NAMES.values()) <= OUR_METRIC_NAMES


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine TorchSSL runs on the GPU, unpatched")
def test_cuda_calls_become_cpu_no_ops_in_the_process_that_asks_for_it():
    script = (
        "import torch, time\n"
        "from implementations.torchssl.cuda_on_cpu import pretend_cuda_on_cpu\n"
        "pretend_cuda_on_cpu()\n"
        "assert torch.cuda.is_available() and torch.cuda.device_count() == 1\n"
        "torch.cuda.set_device(0); torch.cuda.synchronize()\n"
        "x = torch.ones(2); m = torch.nn.Linear(2, 2)\n"
        "assert x.cuda(0) is x and m.cuda(0) is m and x.cuda().device.type == 'cpu'\n"
        "start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)\n"
        "start.record(); time.sleep(0.05); end.record()\n"
        "assert 40 < start.elapsed_time(end) < 1000\n"
        "assert not torch.cuda.amp.GradScaler().is_enabled()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert not torch.cuda.is_available()  # this process is untouched


# --- a real run ---------------------------------------------------------------------------------

def _smoke_run(tmp_path, **changes) -> RunInputs:
    from harness.data import load_cifar10
    from harness.splits import draw_split

    data = load_cifar10(SUBSET_DIR)
    split = draw_split(data.train_labels, 40, 0, data.num_classes, data.identity)
    return RunInputs(config=PRESETS["smoke"].replace(**changes), data=data, labeled_indices=split.labeled_indices,
                     split_digest=split.digest, work_dir=tmp_path / "work")


def _git_status_with_ignored(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--ignored", "--untracked-files=all"],
                          check=True, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_torchssl_trains_on_cpu_on_our_split_and_reports_under_our_names(tmp_path):
    checkout = _checkout()
    status_before = _git_status_with_ignored(checkout)
    run = _smoke_run(tmp_path)
    sink = RecordingSink()

    result = adapter.TorchSSLImplementation().train(run, sink)

    # TorchSSL evaluates after 1 and 21 iterations (its it % 20 == 0), and once more at the end.
    assert sink.steps_of(interface.EVAL_TOP1) == [1, 21, 40]
    assert [step for step, _ in sink.confusion] == [1, 21, 40]
    assert all(matrix.sum() == len(run.data.test_labels) for _, matrix in sink.confusion)
    assert sink.steps_of(interface.TRAIN_MASK_RATE) == [5, 10, 15, 20, 25, 30, 35, 40]
    logged = {name for _, metrics in sink.metrics for name in metrics}
    every_class = {prefix + name for prefix in (interface.EVAL_CLASS_ACCURACY_PREFIX, interface.TRAIN_CLASS_THRESHOLD_PREFIX)
                   for name in run.data.class_names}
    mask_rates = logged - OUR_METRIC_NAMES - every_class  # of the classes pseudo-labelled in a window
    assert every_class <= logged and mask_rates and all(
        name.removeprefix(interface.TRAIN_CLASS_MASK_RATE_PREFIX) in run.data.class_names for name in mask_rates)
    assert all(math.isfinite(value) for _, metrics in sink.metrics for value in metrics.values())

    used_split = np.load(run.work_dir / "torchssl" / "fixmatch_cifar10_40_0" / "sampled_label_idx.npy")
    np.testing.assert_array_equal(used_split, run.labeled_indices)
    assert result.iterations == 40
    assert result.final_metrics == sink.metrics[-1][1]
    assert np.array_equal(result.confusion_matrix, sink.confusion[-1][1])
    assert result.best_top1 == max(metrics[interface.EVAL_TOP1] for _, metrics in sink.metrics if interface.EVAL_TOP1 in metrics)
    # the checkout is recorded once, as the run starts (provenance); the tree stayed clean, so nothing more is said
    assert adapter.TorchSSLImplementation().provenance() == {"torchssl_commit": pinned_checkout.read_pin().commit,
                                                             "torchssl_tree_clean": "true"}
    assert "torchssl_commit" not in result.extra and "torchssl_tree_clean" not in result.extra
    assert (result.extra["torchssl.num_train_iter"], result.extra["torchssl.batch_size"]) == (40, 8)
    assert (run.work_dir / "torchssl" / "fixmatch_cifar10_40_0" / "latest_model.pth").exists()
    assert not (run.work_dir / "torchssl" / "arrays").exists()  # the image arrays handed over are removed
    assert _git_status_with_ignored(checkout) == status_before  # not even a __pycache__ inside the checkout


@pytest.mark.slow
def test_an_interrupted_torchssl_run_resumes_from_its_checkpoint_to_the_same_length(tmp_path):
    _checkout()
    run = _smoke_run(tmp_path, iterations=20, eval_interval=10, checkpoint_interval=10)
    with pytest.raises(Interrupted):
        adapter.TorchSSLImplementation().train(run, RecordingSink(stop_after_step=15))  # checkpoint written at 10

    sink = RecordingSink()
    result = adapter.TorchSSLImplementation().train(run, sink)

    assert result.extra["torchssl_resumed_from"] == "10"
    assert sink.steps_of(interface.TRAIN_TOTAL_LOSS) == [15, 20]
    assert sink.steps_of(interface.EVAL_TOP1) == [11, 20]
    assert result.iterations == 20
