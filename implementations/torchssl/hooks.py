"""The wrappers around TorchSSL's functions that the child installs before `main_worker` starts (child.py's
docstring lists them); TorchSSL's own code is not changed, and each wrapper reports to the RunObserver."""

import functools
import importlib
import os
import sys

import numpy as np
import torch

from implementations.common import all_finite
from implementations.torchssl.observer import NonFiniteTraining, RunObserver


def install_hooks(observer: RunObserver, arrays: dict[str, np.ndarray]) -> None:
    """Wrap TorchSSL's functions (see the module docstring); TorchSSL's own code is not changed."""
    torchssl_module = importlib.import_module(observer.algorithm.module)  # e.g. models.fixmatch.fixmatch
    torchssl_class = getattr(torchssl_module, observer.algorithm.class_name)
    serve_our_arrays(arrays, observer.expected_labeled if observer.algorithm.given_labeled_split_only else None)
    check_split(observer)
    wrap_train(observer, torchssl_class)
    wrap_evaluate(observer, torchssl_class)
    wrap_save_model(observer, torchssl_class)
    load_checkpoints_on_the_cpu(torchssl_class)
    observe_predictions(observer, torchssl_module)
    mark_iterations(observer)
    silence_curves()


def check_split(observer: RunObserver) -> None:
    """TorchSSL loads our labeled indices instead of drawing its own; the ones it returns must be ours."""
    import datasets.data_utils as data_utils

    original_sample = data_utils.sample_labeled_data

    @functools.wraps(original_sample)
    def checked_sample_labeled_data(*args, **kwargs):
        result = original_sample(*args, **kwargs)
        used = np.asarray(result[2], dtype=np.int64)
        if not np.array_equal(used, observer.expected_labeled):
            raise RuntimeError(f"TorchSSL took {len(used)} labeled indices that are not our split")
        return result

    data_utils.sample_labeled_data = checked_sample_labeled_data


def wrap_train(observer: RunObserver, torchssl_class) -> None:
    original_train = torchssl_class.train

    @functools.wraps(original_train)
    def train(self, args, **logger):  # some algorithms' train takes a logger, some not
        observer.attach(self, args)
        observer.train_return = original_train(self, args, **logger)
        return observer.train_return

    torchssl_class.train = train


def wrap_evaluate(observer: RunObserver, torchssl_class) -> None:
    """Evaluation is not training time; sklearn's refusal of NaN scores means the weights diverged."""
    original_evaluate = torchssl_class.evaluate

    @functools.wraps(original_evaluate)
    def evaluate(self, eval_loader=None, args=None):
        with observer.paused():
            try:
                result = original_evaluate(self, eval_loader=eval_loader, args=args)
            except ValueError as error:
                if "NaN" not in str(error) and "infinity" not in str(error):
                    raise
                raise NonFiniteTraining(f"TorchSSL's training loss became NaN or infinite at iteration "
                                        f"{observer.iterations_done}: the EMA model's outputs are no longer finite; "
                                        "the run is stopped") from None
        observer.on_evaluation(result)
        return result

    torchssl_class.evaluate = evaluate


def wrap_save_model(observer: RunObserver, torchssl_class) -> None:
    """No NaN weights saved; written under a temporary name and renamed, so a kill never leaves a torn file."""
    original_save = torchssl_class.save_model

    @functools.wraps(original_save)
    def save_model(self, save_name, save_path):
        if not all_finite(self.model.parameters()):
            raise NonFiniteTraining(f"TorchSSL's training loss became NaN or infinite at iteration "
                                    f"{observer.iterations_done}: its update left NaN or infinite weights; the run is "
                                    "stopped before they are saved")
        with observer.paused():
            original_save(self, save_name + ".partial", save_path)
            partial = os.path.join(save_path, save_name + ".partial")
            if not os.path.exists(partial):
                return  # the algorithm saves nothing yet (algorithms.py: NO_CHECKPOINT_BEFORE)
            with open(partial, "rb") as file:
                os.fsync(file.fileno())  # on disk before it replaces the previous one
            os.replace(partial, os.path.join(save_path, save_name))
        if save_name == observer.checkpoint_name and observer.trained_here:  # the one it resumes from: durable now
            observer.checkpointed()

    torchssl_class.save_model = save_model


def load_checkpoints_on_the_cpu(torchssl_class) -> None:
    """TorchSSL's `load_model` calls `torch.load(path)`, which puts each tensor back on the device it was saved
    from: a checkpoint of a GPU run could not be resumed on a CPU, nor on a machine whose GPU 0 is busy elsewhere.
    Read on the CPU, its `load_state_dict` calls copy each part onto the device the model is already on (TorchSSL
    moves the model before it loads)."""
    original_load_model = torchssl_class.load_model

    @functools.wraps(original_load_model)
    def load_model(self, load_path):
        original_torch_load = torch.load
        torch.load = functools.partial(original_torch_load, map_location="cpu")
        try:
            return original_load_model(self, load_path)
        finally:
            torch.load = original_torch_load

    torchssl_class.load_model = load_model


def observe_predictions(observer: RunObserver, torchssl_module) -> None:
    """The evaluation's predictions, from the sklearn calls `evaluate` makes in the algorithm's module: the count
    confusion matrix (TorchSSL only prints a normalised one) and the scores its top-5 accuracy is computed on."""
    import sklearn.metrics

    original_confusion_matrix = torchssl_module.confusion_matrix

    @functools.wraps(original_confusion_matrix)
    def confusion_matrix(y_true, y_pred, *args, **kwargs):
        observer.confusion_counts = sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(len(observer.class_names)))
        return original_confusion_matrix(y_true, y_pred, *args, **kwargs)

    torchssl_module.confusion_matrix = confusion_matrix

    original_top_k = torchssl_module.top_k_accuracy_score

    @functools.wraps(original_top_k)
    def top_k_accuracy_score(y_true, y_score, *args, **kwargs):
        observer.scores = (y_true, y_score)
        return original_top_k(y_true, y_score, *args, **kwargs)

    torchssl_module.top_k_accuracy_score = top_k_accuracy_score


def mark_iterations(observer: RunObserver) -> None:
    """`EMA.update` ends every iteration of every TorchSSL loop; its caller's frame is that loop."""
    import train_utils

    original_update = train_utils.EMA.update

    @functools.wraps(original_update)
    def update(self):
        original_update(self)
        observer.end_iteration(sys._getframe(1).f_locals)

    train_utils.EMA.update = update


def silence_curves() -> None:
    """TorchSSL's curve writer (TensorBoard, or matplotlib PNGs redrawn at every evaluation: seconds each) is
    replaced by our metrics; its log.txt still records every evaluation line."""
    import train_utils

    train_utils.TBLog.update = lambda self, tb_dict, it, suffix=None, mode="train": None


def serve_our_arrays(arrays: dict[str, np.ndarray], labeled_only: np.ndarray | None = None) -> None:
    """TorchSSL's `SSL_Dataset.get_data` returns our image arrays instead of downloading CIFAR-10; with
    `labeled_only`, the training set is those images (our labeled split) alone."""
    import datasets.ssl_dataset as ssl_dataset

    def get_data(self, svhn_extra=True):
        if self.name.lower() != "cifar10":
            raise RuntimeError(f"the adapter provides CIFAR-10 only, TorchSSL asked for {self.name}")
        if self.train and labeled_only is not None:
            return arrays["train_images"][labeled_only], arrays["train_labels"][labeled_only].tolist()
        if self.train:
            return arrays["train_images"], arrays["train_labels"].tolist()
        return arrays["test_images"], arrays["test_labels"].tolist()

    ssl_dataset.SSL_Dataset.get_data = get_data
