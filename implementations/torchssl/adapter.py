"""TorchSSL's algorithms, unmodified at the pinned commit, behind our interface.

`TorchSSLImplementation.train` verifies the checkout (checkout.py), builds TorchSSL's arguments from
our resolved `TrainConfig`, hands it our split and our image arrays, and runs the algorithm's script in a
child process of its own (child.py: TorchSSL's top-level modules `models`, `datasets`, `utils` must not meet
ours). The child streams TorchSSL's numbers back as JSON lines on a pipe, under our metric names
(metrics.py); this process forwards them to the sink and returns the `RunResult`. What differs between
TorchSSL's algorithms (script, class, argument names, how its loop's variables map to our signals, what its
checkpoint leaves out) is one table, algorithms.py.

Arguments: arguments.py (TorchSSL's own command line, from the checkout, with our hyper-parameters).

Schedule. TorchSSL evaluates after the iteration whose 0-based index is a multiple of
`num_eval_iter` (= our `eval_interval`), i.e. after 1, E+1, 2E+1, ... iterations, switches to every
1000 iterations once past 0.8·K, and evaluates once more at the end; each evaluation is logged at
step = iterations trained when it ran. Training signals are averaged over our `log_interval`, and
TorchSSL's own `save_model` additionally checkpoints every `checkpoint_interval` iterations
(TorchSSL alone saves every 10,000).

Resume. A `latest_model.pth` in the work dir is resumed with TorchSSL's own `resume`/`load_path`:
it restores the weights, EMA, optimizer, scheduler and iteration, not the data order or the random
state, so a resumed TorchSSL run is not bit-identical to an uninterrupted one; some algorithms also keep
state their checkpoint leaves out (algorithms.py, `resume_gap`: recorded on the run, and in the report).
TorchSSL's samplers restart for all K iterations after a resume (and its loop bound would then allow K+1);
the adapter ends the data stream at K, so every run trains exactly K iterations.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from implementations.common import (
    first_line,
    sentence,
    with_project_on_path,
    write_text_atomically,
)
from implementations.interface import (
    EVAL_TOP1,
    CheckpointError,
    ImplementationNotReady,
    MetricsSink,
    NonFiniteLossError,
    RunInputs,
    RunResult,
    TrainConfig,
    fields_of_algorithm,
    resolve_device,
)
from implementations.ledger import TORCHSSL_FIXED
from implementations.torchssl import checkout as torchssl_checkout
from implementations.torchssl.algorithms import TORCHSSL_ALGORITHMS
from implementations.torchssl.arguments import (
    CONFIG_FIELDS,
    PER_EXECUTION_ARGS,
    build_torchssl_args,
    read_reference_config,
    unsupported_reason,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_NAME = "latest_model.pth"
SPLIT_FILE = "sampled_label_idx.npy"
EVALUATIONS_FILE = "evaluations.json"


class TorchSSLImplementation:
    """A TorchSSL algorithm (the reference), run in a child process on our split and images."""

    name = "torchssl"
    compared_with = ()  # the reference: the others are compared with it

    def __init__(self, checkout: torchssl_checkout.VendorInfo | None = None):
        # None: the pinned checkout, verified before training (bench run). A caller that verified a checkout
        # itself may hand it over (the GPU check, on a machine without gitpython).
        self.checkout = checkout

    def algorithms(self) -> tuple[str, ...]:
        return tuple(TORCHSSL_ALGORITHMS)

    def configure(self, config: TrainConfig) -> TrainConfig:
        return config

    def fields_read(self, algorithm: str) -> frozenset[str]:
        return CONFIG_FIELDS & fields_of_algorithm(algorithm)

    def refusal(self, config: TrainConfig, num_labels: int, num_classes: int) -> str | None:
        return unsupported_reason(config, num_labels, num_classes)

    def check_ready(self) -> None:
        try:
            torchssl_checkout.verify_checkout()
        except torchssl_checkout.VendorError as error:
            message = sentence(error)
            if torchssl_checkout.SYNC_COMMAND not in message:
                message = f"{message.rstrip('.')}; `{torchssl_checkout.SYNC_COMMAND}` fetches the pinned TorchSSL checkout."
            raise ImplementationNotReady(message) from None

    def provenance(self) -> dict[str, str]:
        """The TorchSSL commit a run executes, and whether its tree is unmodified, as the worker finds it."""
        checkout = self.checkout or torchssl_checkout.inspect_checkout()
        return {"torchssl_commit": checkout.commit, "torchssl_tree_clean": str(checkout.clean).lower()}

    def method_sheet(self, config: TrainConfig) -> dict:
        from implementations.method_sheet import torchssl_method_sheet

        return torchssl_method_sheet(config).as_json()

    def seconds_per_iteration(self, config: TrainConfig, data, labeled_indices) -> float:
        """Own's step, measured here: TorchSSL's step is slower, so for it this is a lower bound."""
        from implementations.own.trainer import seconds_per_iteration

        return seconds_per_iteration(config, data, labeled_indices)

    def train(self, run: RunInputs, sink: MetricsSink) -> RunResult:
        checkout = self.checkout or torchssl_checkout.verify_checkout()
        reason = self.refusal(run.config, len(run.labeled_indices), run.data.num_classes)
        if reason:
            raise ValueError(reason)
        device = resolve_device(run.config.device)
        device = "cuda:0" if device == "cuda" else device
        save_dir = Path(run.work_dir).resolve() / "torchssl"
        args = _prepare_save_folder(run, checkout, save_dir, device)
        stream = _ChildStream(save_dir / EVALUATIONS_FILE, sink)
        with _image_arrays(run, save_dir / "arrays") as arrays:
            stream.run(_child_spec(run, checkout, args, arrays, emulate_cuda=device == "cpu"), save_dir)
        after = torchssl_checkout.inspect_checkout(checkout.path) if self.checkout is None else checkout
        # provenance() recorded the checkout as the run started; a tree changed while it ran says so here
        changed = {} if after.clean and after.commit == checkout.commit else {"torchssl_tree_clean": "false"}
        return _run_result(stream, run.config, args, device, changed)


def _prepare_save_folder(run: RunInputs, checkout: torchssl_checkout.VendorInfo, save_dir: Path, device: str) -> dict:
    """TorchSSL's folder for the run, with our split in it, and its arguments: its own command line's, with ours on
    top, resuming from the checkpoint there when one is (refused in one sentence when it cannot be read)."""
    config, num_labels = run.config, len(run.labeled_indices)
    script = TORCHSSL_ALGORITHMS[config.algorithm].script
    save_path = save_dir / f"{script}_cifar10_{num_labels}_{config.seed}"
    save_path.mkdir(parents=True, exist_ok=True)
    checkpoint = save_path / CHECKPOINT_NAME
    if checkpoint.exists():
        _check_readable(checkpoint, Path(run.work_dir))
    reference = read_reference_config(checkout.path, script, num_labels)
    on_cpu = device == "cpu"
    args = build_torchssl_args(
        reference, config, num_labels=num_labels, num_classes=run.data.num_classes,
        save_dir=save_dir, save_name=save_path.name, gpu=0 if on_cpu else int(device.partition(":")[2] or 0),
        # 2 CPU cores train; loader workers would only compete with them. On a GPU, TorchSSL's own count.
        num_workers=0 if on_cpu else int(reference.get("num_workers", 1)),
        load_path=checkpoint if checkpoint.exists() else None,
    )
    # TorchSSL loads this file instead of drawing labels (its sample_labeled_data).
    np.save(save_path / SPLIT_FILE, np.asarray(run.labeled_indices, dtype=np.int64))
    return args


def _child_spec(run: RunInputs, checkout: torchssl_checkout.VendorInfo, args: dict, arrays: dict, emulate_cuda: bool) -> dict:
    config = run.config
    return {
        "checkout": str(checkout.path),
        "algorithm": config.algorithm,
        "torchssl_args": args,
        "arrays": arrays,
        "labeled_indices": str(Path(args["save_dir"]) / args["save_name"] / SPLIT_FILE),
        "class_names": list(run.data.class_names),
        "log_interval": config.log_interval,
        "checkpoint_interval": config.checkpoint_interval,
        "checkpoint_minutes": config.checkpoint_minutes,
        "checkpoint_name": CHECKPOINT_NAME,
        "emulate_cuda": emulate_cuda,
    }


def _run_result(stream: _ChildStream, config: TrainConfig, args: dict, device: str, changed: dict) -> RunResult:
    from implementations.tf32 import tf32_in_force

    result = stream.result
    algorithm = TORCHSSL_ALGORITHMS[config.algorithm]
    best_iteration, best_top1 = stream.best()
    return RunResult(
        iterations=int(result["iterations"]),
        final_metrics=dict(result["final_metrics"]),
        best_top1=best_top1,
        best_iteration=best_iteration,
        confusion_matrix=np.asarray(result["confusion"], dtype=np.int64),
        extra={
            **changed,
            "torchssl_cuda_emulated_on_cpu": str(device == "cpu").lower(),
            "torchssl_resumed_from": str(result["start_iteration"]),
            "torchssl_script": f"{algorithm.script}.py",
            # What its checkpoint leaves out ("" when nothing beyond the data order and random state).
            "torchssl_resume_gap": algorithm.resume_gap or "",
            # TorchSSL's own best (of its in-loop evaluations since the last start; `it` is 0-based).
            "torchssl_best_acc": result["torchssl_return"].get("eval/best_acc"),
            "torchssl_best_it": int(result["torchssl_return"].get("eval/best_it", -1)),
            "device": device,
            # TorchSSL trains and evaluates with PyTorch's defaults, which this process has too (tf32.py).
            "tf32_training": tf32_in_force(device), "tf32_evaluation": tf32_in_force(device),
            # The arguments it ran with become MLflow params, which never change within a run: whether
            # this execution resumed is a fact of the execution (torchssl_resumed_from), not an argument.
            **{f"torchssl.{key}": value for key, value in sorted(args.items()) if key not in PER_EXECUTION_ARGS},
            **{f"torchssl_fixed.{key}": value for key, value in TORCHSSL_FIXED.items()},
        },
    )


def _check_readable(checkpoint: Path, work_dir: Path) -> None:
    """TorchSSL's own load would fail deep inside its child process; a torn file is one sentence here."""
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if not {"model", "optimizer", "scheduler", "it", "ema_model"} <= set(saved):
            raise ValueError("it lacks some of TorchSSL's checkpoint entries")
    except Exception as error:
        reason = first_line(error)
        raise CheckpointError(f"The TorchSSL checkpoint {checkpoint} cannot be read ({reason}); delete the folder "
                              f"{work_dir} and run the same `bench run` again to restart this run from the beginning "
                              "in a new MLflow run.") from None


@contextlib.contextmanager
def _image_arrays(run: RunInputs, folder: Path):
    """Our exact arrays as .npy files for the child, removed afterwards (they are a copy of the data set)."""
    try:
        folder.mkdir(exist_ok=True)
        paths = {}
        for name in ("train_images", "train_labels", "test_images", "test_labels"):
            paths[name] = str(folder / f"{name}.npy")
            np.save(paths[name], getattr(run.data, name))
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _ChildStream:
    """Starts the child, forwards its messages to the sink, keeps the evaluations across resumes."""

    def __init__(self, evaluations_path: Path, sink: MetricsSink):
        self.evaluations_path = evaluations_path
        self.sink = sink
        self.evaluations: list[tuple[int, float]] = []  # (step, top-1) of every evaluation of this run
        if evaluations_path.exists():
            self.evaluations = [tuple(entry) for entry in json.loads(evaluations_path.read_text())]
        self.result: dict | None = None
        self.error: dict | None = None

    def run(self, spec: dict, save_dir: Path) -> None:
        read_end, write_end = os.pipe()
        spec = {**spec, "message_fd": write_end, "parent_pid": os.getpid()}
        spec_path = save_dir / "child_spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        env = {**with_project_on_path(os.environ), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        if spec["emulate_cuda"]:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run on a GPU machine must not see the GPU
        try:
            # TorchSSL's output goes where ours does (stderr: the worker log); its cwd is our work dir,
            # because it writes ./data_statistics there.
            process = subprocess.Popen([sys.executable, "-m", "implementations.torchssl.child", str(spec_path)],
                                       cwd=save_dir, env=env, pass_fds=(write_end,),
                                       stdin=subprocess.DEVNULL, stdout=2, stderr=2)
        finally:
            os.close(write_end)
        try:
            with os.fdopen(read_end, encoding="utf-8") as messages:
                for line in messages:
                    self._handle(json.loads(line))
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        log_hint = f"TorchSSL's output is in the worker log and in {save_dir}/<save_name>/log.txt"
        if self.error is not None:
            if self.error.get("non_finite"):
                raise NonFiniteLossError(self.error["message"])
            raise RuntimeError(f"TorchSSL failed: {self.error['message']} ({log_hint}).")
        if returncode != 0 or self.result is None:
            raise RuntimeError(f"TorchSSL's process ended with exit code {returncode} before reporting a result "
                               f"({log_hint}).")

    def _handle(self, message: dict) -> None:
        kind = message["type"]
        if kind == "metrics":
            self.sink.log_metrics(message["metrics"], step=message["step"])
        elif kind == "evaluation":
            step = int(message["step"])
            self.sink.log_metrics(message["metrics"], step=step)
            self.sink.log_confusion_matrix(np.asarray(message["confusion"], dtype=np.int64), step=step)
            self.evaluations = [entry for entry in self.evaluations if entry[0] != step]
            self.evaluations.append((step, float(message["metrics"][EVAL_TOP1])))
            self._save_evaluations()
        elif kind == "started":
            # What was logged after the checkpoint it resumes from belongs to the abandoned continuation.
            start = int(message["start_iteration"])
            self.evaluations = [entry for entry in self.evaluations if entry[0] <= start]
            self._save_evaluations()
            self.sink.checkpointed(start)
        elif kind == "checkpoint":
            self.sink.checkpointed(int(message["step"]))
        elif kind == "progress":
            self.sink.progress(int(message["step"]))
        elif kind == "result":
            self.result = message
        elif kind == "error":
            self.error = message

    def _save_evaluations(self) -> None:
        write_text_atomically(self.evaluations_path, json.dumps(sorted(self.evaluations)))

    def best(self) -> tuple[int, float]:
        """(step, top-1) of the best evaluation, the earliest on ties; (0, -1.0) before any."""
        if not self.evaluations:
            return 0, -1.0
        step, top1 = max(sorted(self.evaluations), key=lambda entry: entry[1])
        return int(step), float(top1)
