"""The process that runs a TorchSSL algorithm for the adapter: `python -m implementations.torchssl.child <spec.json>`.

TorchSSL's code runs unmodified from the pinned checkout; this module only wraps it from outside,
before `main_worker` starts (the spec is written by adapter.py):

- no GPU: `torch.cuda` is replaced by CPU stand-ins (cuda_on_cpu.py); with a GPU nothing is patched;
- data: `SSL_Dataset.get_data` returns our image arrays instead of calling torchvision's CIFAR10 with
  download=True; TorchSSL then splits them itself, loading our labeled indices from
  `{save_dir}/{save_name}/sampled_label_idx.npy`, and the adapter checks that the indices it
  returns are ours;
- `main_worker` is called directly, one non-distributed process (`main()` would delete the folder
  holding the split);
- numbers: `EMA.update`, called once at the end of every iteration of every TorchSSL loop, marks the
  iteration boundary; there the loop's variables (the losses, and a threshold method's mask and
  pseudo-labels: algorithms.py) are read, and a non-finite loss stops the run at once, the window is
  logged, a checkpoint is written every `checkpoint_interval` iterations (or `checkpoint_minutes` after
  the last one) with TorchSSL's own `save_model`, and the child exits if its parent is gone. Each
  `evaluate` result with the count confusion matrix of the same predictions, and `train`'s return (its
  final evaluation, which `main_worker` discards) go to the parent as JSON lines on a pipe, under our
  names (metrics.py);
- checkpoints are written to a temporary name and renamed, so a kill never leaves a torn one; each
  durable `latest_model.pth` is reported ("checkpoint"), so the adapter can tell the sink;
- `TBLog.update`, TorchSSL's curve writer, does nothing: our metrics replace its curves;
- the data stream ends after K iterations in total (see "Resume" in adapter.py).

Nothing is written into the checkout: bytecode is off, the working directory and TorchSSL's save_dir
are our work dir.
"""

import sys

sys.dont_write_bytecode = True  # before any import: no __pycache__ inside the TorchSSL checkout

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from implementations.common import all_finite  # noqa: E402
from implementations.torchssl.algorithms import TORCHSSL_ALGORITHMS, TorchSSLAlgorithm  # noqa: E402
from implementations.torchssl.metrics import TrainingWindow, eval_metrics  # noqa: E402

EXIT_FAILED, EXIT_NON_FINITE = 1, 3
PROGRESS_SECONDS = 2.0
TORCHSSL_TOP_LEVEL_MODULES = ("models", "datasets", "utils", "train_utils", "custom_writer")


class NonFiniteTraining(RuntimeError):
    pass


class Channel:
    """JSON lines to the parent process."""

    def __init__(self, fd: int):
        self.stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, kind: str, **fields) -> None:
        self.stream.write(json.dumps({"type": kind, **fields}) + "\n")


class TimedBatches:
    """A TorchSSL DataLoader, iterated with the time spent waiting for each batch noted, and ended after `limit` batches."""

    def __init__(self, loader, limit: int, on_batch):
        self.loader = loader
        self.limit = limit
        self.on_batch = on_batch

    def __iter__(self):
        started = time.perf_counter()
        iterator = iter(self.loader)
        for _ in range(self.limit):
            batch = next(iterator, None)
            if batch is None:
                return
            self.on_batch(batch, time.perf_counter() - started)
            yield batch
            started = time.perf_counter()

    def __len__(self) -> int:
        return min(self.limit, len(self.loader))


class Bridge:
    """What the wrappers share: the running iteration's tensors, the log window, the last evaluation."""

    def __init__(self, spec: dict, channel: Channel, train_labels: np.ndarray, algorithm: TorchSSLAlgorithm):
        self.channel = channel
        self.algorithm = algorithm
        self.log_interval = int(spec["log_interval"])
        self.checkpoint_interval = int(spec["checkpoint_interval"])
        self.checkpoint_name = spec["checkpoint_name"]  # the one it resumes from
        self.checkpoint_seconds = 60 * float(spec["checkpoint_minutes"])
        self.last_checkpoint_time = time.monotonic()
        self.next_progress_at = 0.0  # the iteration just trained goes to the parent every PROGRESS_SECONDS
        self.class_names = tuple(spec["class_names"])
        self.expected_labeled = np.load(spec["labeled_indices"])
        self.parent_pid = int(spec["parent_pid"])
        self.train_labels = torch.as_tensor(train_labels, dtype=torch.int64)
        self.torchssl_model = None  # the instance of the algorithm's class, e.g. FixMatch
        self.args = None
        self.window: TrainingWindow | None = None
        self.start_iteration = 0
        self.iterations_done = 0
        self.trained_here = False
        self.data_wait = 0.0
        self.learning_rate = float("nan")  # the rate the running iteration's step uses
        self.iteration_started = time.perf_counter()
        self.paused_seconds = 0.0
        self._pause_depth = 0
        self.confusion_counts: np.ndarray | None = None
        self.scores: tuple[list, list] | None = None  # (true labels, softmax outputs) of the running evaluation
        self.last_evaluation: tuple[dict, np.ndarray] | None = None
        self.last_sent_evaluation_step: int | None = None
        self.train_return: dict | None = None

    @contextlib.contextmanager
    def paused(self):
        """Evaluation and checkpointing do not count as training time."""
        self._pause_depth += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._pause_depth -= 1
            if self._pause_depth == 0:
                self.paused_seconds += time.perf_counter() - started

    def attach(self, torchssl_model, args) -> None:
        """The algorithm's `train` starts: its state (resumed or not) is final now."""
        self.torchssl_model, self.args = torchssl_model, args
        # TorchSSL's checkpoint at the end of training says K+1 (it saves `it + 1` after the loop has
        # counted to K): a finished run resumed again has trained K.
        self.start_iteration = self.iterations_done = min(int(torchssl_model.it), int(args.num_train_iter))
        device = next(torchssl_model.model.parameters()).device
        self.window = TrainingWindow(self.class_names, device)
        self.train_labels = self.train_labels.to(device)
        remaining = max(0, int(args.num_train_iter) - self.start_iteration)
        loaders = dict(torchssl_model.loader_dict)
        trained_on = len(loaders["train_lb"].dataset)
        if self.algorithm.given_labeled_split_only and trained_on != len(self.expected_labeled):
            raise RuntimeError(f"TorchSSL trains on {trained_on} labeled images, not on our {len(self.expected_labeled)}")
        for name in ("train_lb", "train_ulb"):  # fullysupervised has no unlabeled loader
            if name in loaders:
                loaders[name] = TimedBatches(loaders[name], remaining, self._batch_waited)
        torchssl_model.loader_dict = loaders
        self.learning_rate = torchssl_model.optimizer.param_groups[0]["lr"]
        self.channel.send("started", start_iteration=self.start_iteration)
        self.iteration_started = time.perf_counter()
        self.paused_seconds = 0.0

    def _batch_waited(self, batch, waited: float) -> None:
        self.data_wait += waited

    def end_iteration(self, loop: dict) -> None:
        """After TorchSSL's optimizer, scheduler and EMA steps of one iteration; `loop` holds its loop's variables."""
        torchssl_model = self.torchssl_model
        self.iterations_done = int(torchssl_model.it) + 1
        self.trained_here = True
        signals = self.algorithm.signals(loop, self.args)
        if not torch.isfinite(signals.total_loss.detach()):  # TorchSSL synchronises every iteration anyway
            raise NonFiniteTraining(f"TorchSSL's training loss became NaN or infinite at iteration "
                                    f"{self.iterations_done}; the run is stopped")
        true_labels = None
        if signals.unlabeled_indices is not None:
            true_labels = self.train_labels[signals.unlabeled_indices.to(self.train_labels.device)]
        self.window.add(signals, true_labels, self.learning_rate, self.data_wait,
                        time.perf_counter() - self.iteration_started - self.paused_seconds)
        self.data_wait = 0.0
        self.learning_rate = torchssl_model.optimizer.param_groups[0]["lr"]  # after the scheduler's step: the next one's
        done = self.iterations_done
        if time.monotonic() >= self.next_progress_at:
            self.channel.send("progress", step=done)
            self.next_progress_at = time.monotonic() + PROGRESS_SECONDS
        if done % self.log_interval == 0 or done == self.args.num_train_iter:
            self.channel.send("metrics", step=done, metrics=self.window.summarise())
        if done % self.checkpoint_interval == 0 or time.monotonic() - self.last_checkpoint_time > self.checkpoint_seconds:
            self.last_checkpoint_time = time.monotonic()  # also when the algorithm saves nothing yet
            torchssl_model.save_model(self.checkpoint_name, os.path.join(self.args.save_dir, self.args.save_name))
        if os.getppid() != self.parent_pid:
            os._exit(EXIT_FAILED)  # the adapter is gone (killed): nobody reads our numbers any more
        self.iteration_started = time.perf_counter()
        self.paused_seconds = 0.0

    def checkpointed(self) -> None:
        self.channel.send("checkpoint", step=self.iterations_done)

    def on_evaluation(self, torchssl_eval: dict) -> None:
        counts, self.confusion_counts = self.confusion_counts, None
        scores, self.scores = self.scores, None
        metrics = eval_metrics(torchssl_eval, counts, self.class_names, scores)
        self.last_evaluation = (metrics, counts)
        step = self.iterations_done
        # Before the first iteration of this process it is TorchSSL's check of a loaded checkpoint (already
        # logged when that step ran); the final evaluation repeats the last in-loop one when K is on the schedule.
        if not self.trained_here or step == self.last_sent_evaluation_step:
            return
        self.last_sent_evaluation_step = step
        self.channel.send("evaluation", step=step, metrics=metrics, confusion=counts.tolist())


def install_hooks(bridge: Bridge, arrays: dict[str, np.ndarray]) -> None:
    """Wrap TorchSSL's functions (see the module docstring); TorchSSL's own code is not changed."""
    torchssl_module = importlib.import_module(bridge.algorithm.module)  # e.g. models.fixmatch.fixmatch
    torchssl_class = getattr(torchssl_module, bridge.algorithm.class_name)
    serve_our_arrays(arrays, bridge.expected_labeled if bridge.algorithm.given_labeled_split_only else None)
    check_split(bridge)
    wrap_train(bridge, torchssl_class)
    wrap_evaluate(bridge, torchssl_class)
    wrap_save_model(bridge, torchssl_class)
    load_checkpoints_on_the_cpu(torchssl_class)
    observe_predictions(bridge, torchssl_module)
    mark_iterations(bridge)
    silence_curves()


def check_split(bridge: Bridge) -> None:
    """TorchSSL loads our labeled indices instead of drawing its own; the ones it returns must be ours."""
    import datasets.data_utils as data_utils

    original_sample = data_utils.sample_labeled_data

    @functools.wraps(original_sample)
    def checked_sample_labeled_data(*args, **kwargs):
        result = original_sample(*args, **kwargs)
        used = np.asarray(result[2], dtype=np.int64)
        if not np.array_equal(used, bridge.expected_labeled):
            raise RuntimeError(f"TorchSSL took {len(used)} labeled indices that are not our split")
        return result

    data_utils.sample_labeled_data = checked_sample_labeled_data


def wrap_train(bridge: Bridge, torchssl_class) -> None:
    original_train = torchssl_class.train

    @functools.wraps(original_train)
    def train(self, args, **logger):  # some algorithms' train takes a logger, some not
        bridge.attach(self, args)
        bridge.train_return = original_train(self, args, **logger)
        return bridge.train_return

    torchssl_class.train = train


def wrap_evaluate(bridge: Bridge, torchssl_class) -> None:
    """Evaluation is not training time; sklearn's refusal of NaN scores means the weights diverged."""
    original_evaluate = torchssl_class.evaluate

    @functools.wraps(original_evaluate)
    def evaluate(self, eval_loader=None, args=None):
        with bridge.paused():
            try:
                result = original_evaluate(self, eval_loader=eval_loader, args=args)
            except ValueError as error:
                if "NaN" not in str(error) and "infinity" not in str(error):
                    raise
                raise NonFiniteTraining(f"TorchSSL's training loss became NaN or infinite at iteration "
                                        f"{bridge.iterations_done}: the EMA model's outputs are no longer finite; "
                                        "the run is stopped") from None
        bridge.on_evaluation(result)
        return result

    torchssl_class.evaluate = evaluate


def wrap_save_model(bridge: Bridge, torchssl_class) -> None:
    """No NaN weights saved; written under a temporary name and renamed, so a kill never leaves a torn file."""
    original_save = torchssl_class.save_model

    @functools.wraps(original_save)
    def save_model(self, save_name, save_path):
        if not all_finite(self.model.parameters()):
            raise NonFiniteTraining(f"TorchSSL's training loss became NaN or infinite at iteration "
                                    f"{bridge.iterations_done}: its update left NaN or infinite weights; the run is "
                                    "stopped before they are saved")
        with bridge.paused():
            original_save(self, save_name + ".partial", save_path)
            partial = os.path.join(save_path, save_name + ".partial")
            if not os.path.exists(partial):
                return  # the algorithm saves nothing yet (algorithms.py: NO_CHECKPOINT_BEFORE)
            with open(partial, "rb") as file:
                os.fsync(file.fileno())  # on disk before it replaces the previous one
            os.replace(partial, os.path.join(save_path, save_name))
        if save_name == bridge.checkpoint_name and bridge.trained_here:  # the one it resumes from: durable now
            bridge.checkpointed()

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


def observe_predictions(bridge: Bridge, torchssl_module) -> None:
    """The evaluation's predictions, from the sklearn calls `evaluate` makes in the algorithm's module: the count
    confusion matrix (TorchSSL only prints a normalised one) and the scores its top-5 accuracy is computed on."""
    import sklearn.metrics

    original_confusion_matrix = torchssl_module.confusion_matrix

    @functools.wraps(original_confusion_matrix)
    def confusion_matrix(y_true, y_pred, *args, **kwargs):
        bridge.confusion_counts = sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(len(bridge.class_names)))
        return original_confusion_matrix(y_true, y_pred, *args, **kwargs)

    torchssl_module.confusion_matrix = confusion_matrix

    original_top_k = torchssl_module.top_k_accuracy_score

    @functools.wraps(original_top_k)
    def top_k_accuracy_score(y_true, y_score, *args, **kwargs):
        bridge.scores = (y_true, y_score)
        return original_top_k(y_true, y_score, *args, **kwargs)

    torchssl_module.top_k_accuracy_score = top_k_accuracy_score


def mark_iterations(bridge: Bridge) -> None:
    """`EMA.update` ends every iteration of every TorchSSL loop; its caller's frame is that loop."""
    import train_utils

    original_update = train_utils.EMA.update

    @functools.wraps(original_update)
    def update(self):
        original_update(self)
        bridge.end_iteration(sys._getframe(1).f_locals)

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


def _tensorboard_stand_in() -> None:
    """TorchSSL imports SummaryWriter at module level but, with use_tensorboard=False, never builds one."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        module = types.ModuleType("torch.utils.tensorboard")

        class SummaryWriter:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("tensorboard is not installed; the adapter runs TorchSSL with use_tensorboard=False")

        module.SummaryWriter = SummaryWriter
        sys.modules["torch.utils.tensorboard"] = module


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the adapter's process dies (e.g. SIGKILL)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the per-iteration parent check ends it


def make_torchssl_importable(checkout: str, emulate_cuda: bool, script: str) -> None:
    """CPU stand-ins for CUDA (when asked), torchvision's import, and the checkout first on sys.path."""
    if emulate_cuda:
        from implementations.torchssl.cuda_on_cpu import pretend_cuda_on_cpu

        pretend_cuda_on_cpu()
    import implementations.torchvision_compat  # noqa: F401  (before TorchSSL imports torchvision)

    _tensorboard_stand_in()
    clashes = [name for name in (*TORCHSSL_TOP_LEVEL_MODULES, script) if name in sys.modules]
    if clashes:
        raise RuntimeError(f"modules named {clashes} are already imported and would shadow TorchSSL's")
    sys.path.insert(0, checkout)


def run(spec: dict, channel: Channel) -> None:
    make_torchssl_importable(spec["checkout"], spec["emulate_cuda"], TORCHSSL_ALGORITHMS[spec["algorithm"]].script)
    arrays = {name: np.load(path) for name, path in spec["arrays"].items()}
    algorithm = TORCHSSL_ALGORITHMS[spec["algorithm"]]
    bridge = Bridge(spec, channel, arrays["train_labels"], algorithm)
    script = importlib.import_module(algorithm.script)  # TorchSSL's <script>.py

    install_hooks(bridge, arrays)
    args = argparse.Namespace(**spec["torchssl_args"])
    if algorithm.needs_process_group:
        group_file = os.path.join(args.save_dir, "process_group")
        torch.distributed.init_process_group("gloo", init_method=f"file://{group_file}", world_size=1, rank=0)
    script.main_worker(args.gpu, 1, args)

    metrics, counts = bridge.last_evaluation
    channel.send("result", iterations=bridge.iterations_done, start_iteration=bridge.start_iteration,
                 final_metrics=metrics, confusion=counts.tolist(),
                 torchssl_return={key: float(value) for key, value in (bridge.train_return or {}).items()})


def read_spec(argv: list[str], module: str) -> dict | None:
    """The JSON spec named on the command line, or None (usage printed) when there is not exactly one."""
    if len(argv) != 1:
        print(f"usage: python -m {module} <spec.json>", file=sys.stderr)
        return None
    with open(argv[0], encoding="utf-8") as file:
        return json.load(file)


def main(argv: list[str]) -> int:
    spec = read_spec(argv, "implementations.torchssl.child")
    if spec is None:
        return 2
    _die_with_parent()
    channel = Channel(int(spec["message_fd"]))
    try:
        run(spec, channel)
    except NonFiniteTraining as error:
        channel.send("error", message=str(error), non_finite=True)
        return EXIT_NON_FINITE
    except Exception as error:  # everything TorchSSL may raise: reported as one line, traceback to the log
        traceback.print_exc()
        channel.send("error", message=f"{type(error).__name__}: {error}".splitlines()[0], non_finite=False)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
