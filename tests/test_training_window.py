"""The one training-signal window that own's loop and TorchSSL's child both log through, and its clock."""

import time

import pytest
import torch

from implementations import interface
from implementations.cadence import CheckpointSchedule, TrainingClock, log_due
from implementations.interface import NonFiniteLossError
from implementations.training_window import TrainingWindow

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class FixedClock(TrainingClock):
    """A clock that says `seconds` of training have passed, whatever the time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.fixed = seconds

    def seconds(self) -> float:
        return self.fixed


def _losses(supervised: float, unsupervised: float, total: float) -> tuple[torch.Tensor, ...]:
    return torch.tensor(supervised), torch.tensor(unsupervised), torch.tensor(total)


def test_the_window_averages_the_per_iteration_signals_and_starts_afresh():
    window = TrainingWindow(CLASS_NAMES, "cpu", FixedClock(2.0))
    # Iteration 1: 2 of 4 unlabeled images above τ = 0.9, one of them pseudo-labelled right.
    window.add(1, *_losses(2.0, 0.5, 2.5), kept=torch.tensor([1, 1, 0, 0]), pseudo_labels=torch.tensor([3, 4, 3, 6]),
               true_labels=torch.tensor([3, 0, 5, 6]), class_thresholds=torch.full((10,), 0.9))
    window.data_wait_seconds += 0.1
    # Iteration 2: all 4 kept and right; FlexMatch-like thresholds 0.5 for every class.
    window.add(2, *_losses(1.0, 0.25, 1.5), kept=torch.tensor([1, 1, 1, 1]), pseudo_labels=torch.tensor([1, 1, 1, 3]),
               true_labels=torch.tensor([1, 1, 1, 3]), class_thresholds=torch.full((10,), 0.5))
    window.data_wait_seconds += 0.3
    summary = window.summarise(learning_rate=0.02)
    assert summary == pytest.approx({
        interface.TRAIN_SUPERVISED_LOSS: 1.5, interface.TRAIN_UNSUPERVISED_LOSS: 0.375, interface.TRAIN_TOTAL_LOSS: 2.0,
        interface.TRAIN_MASK_RATE: 6 / 8, interface.TRAIN_PSEUDO_LABEL_ACCURACY: 5 / 6,
        interface.TRAIN_LR: 0.02, interface.TRAIN_ITERATIONS_PER_SECOND: 1.0, interface.TRAIN_DATA_WAIT_SECONDS: 0.2,
        # every class's threshold averaged over the two iterations: (0.9 + 0.5) / 2
        **{interface.TRAIN_CLASS_THRESHOLD_PREFIX + name: 0.7 for name in CLASS_NAMES},
        # pseudo-labelled automobile (1): 3 times, 3 kept; cat (3): 3 times, 2 kept; deer (4): 1 of 1; frog (6): 0 of 1
        interface.TRAIN_CLASS_MASK_RATE_PREFIX + "automobile": 1.0, interface.TRAIN_CLASS_MASK_RATE_PREFIX + "cat": 2 / 3,
        interface.TRAIN_CLASS_MASK_RATE_PREFIX + "deer": 1.0, interface.TRAIN_CLASS_MASK_RATE_PREFIX + "frog": 0.0,
    })
    assert window.iterations == 0 and window.sums.sum() == 0 and window.class_sums.sum() == 0  # afresh


def test_a_method_without_pseudo_labels_logs_its_losses_only():
    window = TrainingWindow(CLASS_NAMES, "cpu")
    window.add(1, *_losses(2.0, 0.5, 27.0))
    assert set(window.summarise(0.03)) == {
        interface.TRAIN_SUPERVISED_LOSS, interface.TRAIN_UNSUPERVISED_LOSS, interface.TRAIN_TOTAL_LOSS,
        interface.TRAIN_LR, interface.TRAIN_ITERATIONS_PER_SECOND, interface.TRAIN_DATA_WAIT_SECONDS}


def test_the_first_non_finite_iteration_is_remembered_until_checked():
    window = TrainingWindow(CLASS_NAMES, "cpu")
    window.add(1, *_losses(1.0, 0.0, 1.0))
    window.add(2, *_losses(1.0, 0.0, float("nan")))
    window.add(3, *_losses(1.0, 0.0, float("inf")))
    with pytest.raises(NonFiniteLossError, match="at iteration 2;"):
        window.raise_if_non_finite()


def test_a_window_restored_mid_window_logs_the_same_means():
    first, resumed = TrainingWindow(CLASS_NAMES, "cpu", FixedClock(1.0)), TrainingWindow(CLASS_NAMES, "cpu", FixedClock(1.0))
    first.add(1, *_losses(3.0, 1.0, 4.0), kept=torch.tensor([1.0, 0.0]), pseudo_labels=torch.tensor([2, 2]),
              true_labels=torch.tensor([2, 1]), class_thresholds=torch.full((10,), 0.95))
    resumed.load_state_dict(first.state_dict())
    for window in (first, resumed):
        window.add(2, *_losses(1.0, 1.0, 2.0), kept=torch.tensor([1.0, 1.0]), pseudo_labels=torch.tensor([5, 2]),
                   true_labels=torch.tensor([5, 2]), class_thresholds=torch.full((10,), 0.95))
    assert resumed.summarise(0.01) == first.summarise(0.01)


def test_paused_time_is_not_training_time_and_nested_pauses_count_once():
    clock = TrainingClock()
    with clock.paused():
        with clock.paused():
            time.sleep(0.2)
        time.sleep(0.1)
    assert clock.seconds() < 0.05


def test_logs_come_at_the_interval_and_the_last_iteration_and_checkpoints_also_after_their_minutes():
    assert [i for i in range(1, 11) if log_due(i, 4, 10)] == [4, 8, 10]
    schedule = CheckpointSchedule(interval=5, minutes=0.001)  # 60 ms
    assert not schedule.due(3) and schedule.due(5) and schedule.due(3, final=True)
    time.sleep(0.1)
    assert schedule.due(3)
    schedule.written()
    assert not schedule.due(3)
