"""The own training loop on real CIFAR-10 images: resume, baseline, failure, both augmentation paths."""

import functools
import re
from pathlib import Path

import pytest
import torch

from harness.data import load_cifar10
from harness.splits import draw_split
from implementations import interface
from implementations.interface import CheckpointError, NonFiniteLossError, RunInputs, TrainConfig, for_algorithm
from implementations.own.methods import OWN_ALGORITHMS
from implementations.own.trainer import (CHECKPOINT_NAME, Evaluator, OwnTrainer, Progress, autocast_dtype)
from tests.fixtures_data import SUBSET_DIR

TINY = TrainConfig(
    preset="test", iterations=8, labeled_batch_size=4, unlabeled_ratio=2, depth=10, widen_factor=1,
    eval_interval=4, log_interval=2, checkpoint_interval=4, eval_batch_size=512,
    precision="bf16",  # the GPU default, covered here on CPU
)


@functools.cache
def subset():
    return load_cifar10(SUBSET_DIR)


def run_inputs(config: TrainConfig, work_dir) -> RunInputs:
    data = subset()
    split = draw_split(data.train_labels, 40, config.seed, data.num_classes, data.identity)
    return RunInputs(config, data, split.labeled_indices, split.digest, work_dir)


class RecordingSink:
    """Keeps what the trainer reports; `crash_after` raises at that step, like a killed process."""

    def __init__(self, crash_after: int | None = None):
        self.metrics: dict[str, dict[int, float]] = {}
        self.confusion_steps: list[int] = []
        self.checkpoints: list[int] = []
        self.crash_after = crash_after

    def log_metrics(self, metrics, step):
        if self.crash_after is not None and step > self.crash_after:
            raise KeyboardInterrupt("simulated interruption")
        for key, value in metrics.items():
            self.metrics.setdefault(key, {})[step] = value

    def log_confusion_matrix(self, matrix, step):
        self.confusion_steps.append(step)

    def checkpointed(self, iteration):
        self.checkpoints.append(iteration)

    def progress(self, iteration):
        pass


def final_weights(work_dir) -> dict[str, torch.Tensor]:
    training = torch.load(work_dir / CHECKPOINT_NAME, weights_only=False)["training"]
    return {**training["model"], **{"ema." + k: v for k, v in training["ema"].items()}}


# FlexMatch with a low τ and without the warm-up: images are confidently pseudo-labelled from the first iterations
# on and its thresholds depend on them at once, so a resume that lost its per-image state would train differently.
RESUME_CHANGES = {"flexmatch": {"threshold": 0.3, "threshold_warmup": False}}


@pytest.mark.parametrize("algorithm", OWN_ALGORITHMS)
def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, algorithm):
    # Mean Teacher's teacher (the EMA), every λ ramp-up, MixMatch's MixUp draws and FlexMatch's state included
    config = for_algorithm(TINY, algorithm).replace(**RESUME_CHANGES.get(algorithm, {}))
    uninterrupted = RecordingSink()
    OwnTrainer().train(run_inputs(config, tmp_path / "a"), uninterrupted)

    with pytest.raises(KeyboardInterrupt):  # interrupted after the checkpoint at iteration 4
        OwnTrainer().train(run_inputs(config, tmp_path / "b"), RecordingSink(crash_after=5))
    resumed = RecordingSink()
    result = OwnTrainer().train(run_inputs(config, tmp_path / "b"), resumed)

    assert result.iterations == 8
    assert min(resumed.metrics[interface.TRAIN_TOTAL_LOSS]) == 6  # continued after iteration 4, not from 0
    expected, actual = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert resumed.metrics[interface.EVAL_TOP1][8] == uninterrupted.metrics[interface.EVAL_TOP1][8]
    assert resumed.metrics[interface.TRAIN_TOTAL_LOSS][8] == uninterrupted.metrics[interface.TRAIN_TOTAL_LOSS][8]
    if algorithm == "flexmatch":  # there was a state to restore: images with a confident pseudo-label
        saved = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=False)["training"]["method_state"]
        assert (saved.latest_pseudo_labels >= 0).any()


def _interrupted_then_resumed(config: TrainConfig, work_dir: Path) -> RecordingSink:
    with pytest.raises(KeyboardInterrupt):  # interrupted after the checkpoint at iteration 4
        OwnTrainer().train(run_inputs(config, work_dir), RecordingSink(crash_after=5))
    resumed = RecordingSink()
    OwnTrainer().train(run_inputs(config, work_dir), resumed)
    return resumed


@pytest.mark.parametrize("algorithm", ["fixmatch", "flexmatch"])
def test_a_checkpoint_loaded_where_a_map_location_naming_the_training_device_moves_tensors_resumes_bit_identically(
        tmp_path, monkeypatch, algorithm):
    # On a GPU, torch.load(map_location=<the training device>) moves every tensor there, the random-stream states
    # (CPU byte tensors) too, and set_rng_state refuses them. The CPU build has no GPU: here a map_location naming a
    # device (the training device) moves every tensor to the meta device instead, off the CPU all the same.
    original_load = torch.load

    def load_moving_to_the_named_device(path, *args, map_location=None, **kwargs):
        if isinstance(map_location, torch.device):
            map_location = "meta"
        return original_load(path, *args, map_location=map_location, **kwargs)

    monkeypatch.setattr(torch, "load", load_moving_to_the_named_device)
    config = for_algorithm(TINY, algorithm).replace(**RESUME_CHANGES.get(algorithm, {}))
    uninterrupted = RecordingSink()
    OwnTrainer().train(run_inputs(config, tmp_path / "a"), uninterrupted)
    resumed = _interrupted_then_resumed(config, tmp_path / "b")

    assert min(resumed.metrics[interface.TRAIN_TOTAL_LOSS]) == 6  # continued after iteration 4
    expected, actual = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert resumed.metrics[interface.TRAIN_TOTAL_LOSS][8] == uninterrupted.metrics[interface.TRAIN_TOTAL_LOSS][8]


def test_a_checkpoint_that_does_not_fit_the_run_is_one_sentence_naming_the_file_and_what_to_do(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        OwnTrainer().train(run_inputs(TINY, tmp_path), RecordingSink(crash_after=5))
    wider = TINY.replace(widen_factor=2)  # its weights have other shapes than the checkpoint's
    with pytest.raises(CheckpointError) as refused:
        OwnTrainer().train(run_inputs(wider, tmp_path), RecordingSink())
    message = str(refused.value)
    assert message.startswith(f"The checkpoint {tmp_path / CHECKPOINT_NAME} cannot be read (")
    assert f"delete the folder {tmp_path} and run the same `bench run` again" in message
    assert "\n" not in message


def test_reports_training_signals_and_evaluations_at_their_intervals(tmp_path):
    sink = RecordingSink()
    result = OwnTrainer().train(run_inputs(TINY, tmp_path), sink)
    for key in (interface.TRAIN_SUPERVISED_LOSS, interface.TRAIN_UNSUPERVISED_LOSS, interface.TRAIN_TOTAL_LOSS,
                interface.TRAIN_MASK_RATE, interface.TRAIN_LR, interface.TRAIN_ITERATIONS_PER_SECOND,
                interface.TRAIN_DATA_WAIT_SECONDS):
        assert sorted(sink.metrics[key]) == [2, 4, 6, 8], key
    for key in (interface.EVAL_TOP1, interface.EVAL_TOP5, interface.EVAL_PRECISION, interface.EVAL_RECALL, interface.EVAL_F1,
                interface.EVAL_AUC, interface.EVAL_LOSS, interface.EVAL_CLASS_ACCURACY_PREFIX + "airplane"):
        assert sorted(sink.metrics[key]) == [4, 8], key
    assert sink.confusion_steps == [4, 8]
    assert result.confusion_matrix.sum() == len(subset().test_labels)
    assert result.final_metrics[interface.EVAL_TOP1] == sink.metrics[interface.EVAL_TOP1][8]
    assert result.best_top1 == max(sink.metrics[interface.EVAL_TOP1].values())
    assert 0.0 <= sink.metrics[interface.TRAIN_MASK_RATE][8] <= 1.0
    assert set(sink.metrics[interface.TRAIN_CLASS_THRESHOLD_PREFIX + "airplane"].values()) == {0.95}  # τ for every class


def test_supervised_baseline_trains_through_the_same_loop_without_unlabeled_batch(tmp_path):
    sink = RecordingSink()
    result = OwnTrainer().train(run_inputs(TINY.replace(algorithm="supervised"), tmp_path), sink)
    assert result.iterations == 8
    assert set(sink.metrics[interface.TRAIN_UNSUPERVISED_LOSS].values()) == {0.0}
    assert interface.TRAIN_MASK_RATE not in sink.metrics
    assert interface.TRAIN_PSEUDO_LABEL_ACCURACY not in sink.metrics
    assert not any(name.startswith("train/class_") for name in sink.metrics)


def test_per_image_pil_augmentation_path_trains_and_is_deterministic(tmp_path):
    config = TINY.replace(augmentation="pil", iterations=4, precision="fp32")
    first, second = RecordingSink(), RecordingSink()
    OwnTrainer().train(run_inputs(config, tmp_path / "a"), first)
    OwnTrainer().train(run_inputs(config, tmp_path / "b"), second)
    assert first.metrics[interface.TRAIN_TOTAL_LOSS] == second.metrics[interface.TRAIN_TOTAL_LOSS]
    assert first.metrics[interface.EVAL_TOP1] == second.metrics[interface.EVAL_TOP1]


def test_a_diverging_loss_stops_the_run_at_its_iteration_before_anything_of_it_is_logged_or_checkpointed(tmp_path):
    config = TINY.replace(learning_rate=1e12, precision="fp32", log_interval=1, eval_interval=1, checkpoint_interval=1)
    sink = RecordingSink()
    with pytest.raises(NonFiniteLossError, match=r"NaN or infinite at iteration (\d+)") as raised:
        OwnTrainer().train(run_inputs(config, tmp_path), sink)
    bad = int(re.search(r"iteration (\d+)", str(raised.value)).group(1))
    logged = [step for history in sink.metrics.values() for step in history]
    assert bad >= 1 and all(step < bad for step in logged)
    assert all(step < bad for step in sink.confusion_steps)
    written = [iteration for iteration in sink.checkpoints if iteration > 0]  # 0: the start, no file
    assert all(iteration < bad for iteration in written)
    if written:  # the last good one is kept
        saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
        assert saved["progress"].iteration == written[-1] < bad


def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_matrix_units(tmp_path):
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if "amx_bf16" in Path("/proc/cpuinfo").read_text().split() else None  # the CPU's flags
    assert autocast_dtype("auto", cpu) is expected
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp32", cpu) is None
    run = OwnTrainer().train(run_inputs(TINY.replace(precision="auto", iterations=2, device="cpu"), tmp_path),
                             RecordingSink())
    assert run.extra["autocast_dtype"] == ("bfloat16" if expected else "float32")


class FlagRecordingModel(torch.nn.Module):
    """Predicts class 0 for every image and records the TF32 switches in force when it is called."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[bool, bool]] = set()

    def forward(self, images):
        self.seen.add((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.int64), 10).float()


def test_evaluation_runs_with_tf32_off_and_restores_the_training_settings_after(tmp_path):
    defaults = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 on while training
    try:
        model, progress, sink = FlagRecordingModel(), Progress(), RecordingSink()
        Evaluator(run_inputs(TINY, tmp_path), torch.device("cpu")).evaluate(model, progress, sink)
        after = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = defaults
    assert model.seen == {(False, False)}
    assert after == (True, True)
    assert sink.metrics[interface.EVAL_TOP1][0] == pytest.approx(0.1, abs=0.02)  # class 0 of ten, evaluated for real


def test_every_run_records_the_tf32_settings_of_its_training_and_its_evaluation(tmp_path):
    result = OwnTrainer().train(run_inputs(TINY.replace(iterations=2, device="cpu"), tmp_path), RecordingSink())
    assert result.extra["tf32_training"] == result.extra["tf32_evaluation"] == "none (not a CUDA device)"  # a CPU run
