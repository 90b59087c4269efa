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
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from implementations.torchssl.algorithms import TORCHSSL_ALGORITHMS  # noqa: E402
from implementations.torchssl.hooks import install_hooks  # noqa: E402
from implementations.torchssl.observer import (  # noqa: E402
    EXIT_FAILED,
    EXIT_NON_FINITE,
    NonFiniteTraining,
    RunObserver,
)

TORCHSSL_TOP_LEVEL_MODULES = ("models", "datasets", "utils", "train_utils", "custom_writer")


class Channel:
    """JSON lines to the parent process."""

    def __init__(self, fd: int):
        self.stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, kind: str, **fields) -> None:
        self.stream.write(json.dumps({"type": kind, **fields}) + "\n")


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
    observer = RunObserver(spec, channel, arrays["train_labels"], algorithm)
    script = importlib.import_module(algorithm.script)  # TorchSSL's <script>.py

    install_hooks(observer, arrays)
    args = argparse.Namespace(**spec["torchssl_args"])
    if algorithm.needs_process_group:
        group_file = os.path.join(args.save_dir, "process_group")
        torch.distributed.init_process_group("gloo", init_method=f"file://{group_file}", world_size=1, rank=0)
    script.main_worker(args.gpu, 1, args)

    metrics, counts = observer.last_evaluation
    channel.send("result", iterations=observer.iterations_done, start_iteration=observer.start_iteration,
                 final_metrics=metrics, confusion=counts.tolist(),
                 torchssl_return={key: float(value) for key, value in (observer.train_return or {}).items()})


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
