"""TorchSSL's side of `bench parity`: `python -m implementations.torchssl.parity_child <spec.json>`.

TorchSSL's `main_worker` builds its WRN, FixMatch, optimizer (with its weight-decay grouping) and cosine
schedule from the pinned checkout, unmodified, on the CPU (cuda_on_cpu.py) and on our arrays; then its own
`FixMatch.train` runs K iterations, with three things changed from outside when `train` starts:
the weights are replaced by the initial weights own starts from (TorchSSL's own initialisation is kept
for the comparison of initial distributions), and its data loaders by the fixed, already augmented
batches own trains on, and a small fixed evaluation batch.

Recorded at every iteration, as TorchSSL's code computes them: the logits and the supervised loss (its
`ce_loss`), the unsupervised loss, mask and pseudo-labels (its `consistency_loss`), the total loss it
backpropagates, the learning rate of the step, and, when its `EMA.update` ends the iteration, every
parameter's gradient and value, the EMA parameters and the batch-norm buffers. Written with torch.save to
the spec's `output`.
"""

import sys

sys.dont_write_bytecode = True  # before any import: no __pycache__ inside the TorchSSL checkout

import argparse  # noqa: E402
import functools  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from implementations.torchssl.child import make_torchssl_importable, read_spec  # noqa: E402
from implementations.torchssl.hooks import serve_our_arrays  # noqa: E402


def _clone(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().clone().contiguous()


class StepRecorder:
    def __init__(self):
        self.steps: list[dict] = []
        self.current: dict = {}
        self.fresh_initialisation: list[torch.Tensor] = []
        self.state_names: list[str] = []
        self.fixmatch = None  # TorchSSL's FixMatch object, once its train() starts
        self.error: str | None = None  # why TorchSSL did not train


def install_hooks(spec: dict, recorder: StepRecorder) -> None:
    """Wrap TorchSSL's FixMatch from outside (see the module docstring); its code is not changed."""
    import models.fixmatch.fixmatch as fixmatch_model
    import train_utils

    serve_own_weights_and_batches(spec, recorder, fixmatch_model.FixMatch)
    record_losses(recorder, fixmatch_model)
    record_total_loss(recorder)
    record_iteration_end(recorder, train_utils.EMA)


def serve_own_weights_and_batches(spec: dict, recorder: StepRecorder, fixmatch_class) -> None:
    """When `train` starts: own's initial weights replace TorchSSL's, own's batches its loaders."""
    original_train = fixmatch_class.train

    @functools.wraps(original_train)
    def train(self, *args, **kwargs):
        recorder.fixmatch = self
        state = self.model.state_dict()
        recorder.state_names = list(state)
        recorder.fresh_initialisation = [_clone(tensor) for tensor in state.values()]
        initial = torch.load(spec["initial_weights"])
        inputs = torch.load(spec["inputs"])
        steps = inputs["steps"]
        if len(initial) != len(state) or any(a.shape != b.shape for a, b in zip(initial, state.values())):
            recorder.error = (f"own's initial weights ({len(initial)} tensors) do not fit TorchSSL's WRN "
                              f"({len(state)} tensors) tensor for tensor, so TorchSSL did not train")
            steps = []  # its loop then ends at once; main_worker still saves and returns normally
        else:
            self.model.load_state_dict(dict(zip(state, initial)))
        self.loader_dict = {
            "train_lb": [(None, step["labeled_images"], step["labels"]) for step in steps],
            "train_ulb": [(None, step["weak_images"], step["strong_images"]) for step in steps],
            "eval": [(None, inputs["eval_images"], inputs["eval_labels"])],
        }
        return original_train(self, *args, **kwargs)

    fixmatch_class.train = train


def record_losses(recorder: StepRecorder, fixmatch_model) -> None:
    """The logits and losses as TorchSSL's `ce_loss` and `consistency_loss` compute them."""
    original_ce_loss = fixmatch_model.ce_loss  # in this module only the supervised loss uses it

    @functools.wraps(original_ce_loss)
    def ce_loss(logits, *args, **kwargs):
        loss = original_ce_loss(logits, *args, **kwargs)
        recorder.current.update(labeled_logits=_clone(logits), supervised_loss=_clone(loss))
        return loss

    fixmatch_model.ce_loss = ce_loss

    original_consistency_loss = fixmatch_model.consistency_loss

    @functools.wraps(original_consistency_loss)
    def consistency_loss(strong_logits, weak_logits, *args, **kwargs):
        result = original_consistency_loss(strong_logits, weak_logits, *args, **kwargs)
        unsupervised_loss, _mask_mean, kept, pseudo_labels = result
        recorder.current.update(weak_logits=_clone(weak_logits), strong_logits=_clone(strong_logits),
                                unsupervised_loss=_clone(unsupervised_loss), mask=kept.detach().float(),
                                pseudo_labels=_clone(pseudo_labels),
                                learning_rate=recorder.fixmatch.optimizer.param_groups[0]["lr"])  # before the step
        return result

    fixmatch_model.consistency_loss = consistency_loss


def record_total_loss(recorder: StepRecorder) -> None:
    original_backward = torch.Tensor.backward

    @functools.wraps(original_backward)
    def backward(self, *args, **kwargs):
        recorder.current["total_loss"] = _clone(self)  # the loss TorchSSL's train loop computed and backpropagates
        return original_backward(self, *args, **kwargs)

    torch.Tensor.backward = backward


def record_iteration_end(recorder: StepRecorder, ema_class) -> None:
    """At `EMA.update`, the end of an iteration: gradients, weights, EMA weights and buffers."""
    original_update = ema_class.update

    @functools.wraps(original_update)
    def update(self):
        # Called after the optimizer and scheduler steps; TorchSSL zeroes the gradients after it.
        original_update(self)
        model = self.model
        step = recorder.current
        step["logits"] = torch.cat([step.pop("labeled_logits"), step.pop("weak_logits"), step.pop("strong_logits")])
        step["gradients"] = [_clone(parameter.grad) for parameter in model.parameters()]
        step["parameters"] = [_clone(parameter) for parameter in model.parameters()]
        step["ema_parameters"] = [_clone(self.shadow[name]) for name, _ in model.named_parameters()]
        step["buffers"] = [_clone(buffer) for buffer in model.buffers()]
        recorder.steps.append(step)
        recorder.current = {}

    ema_class.update = update


def main(argv: list[str]) -> int:
    spec = read_spec(argv, "implementations.torchssl.parity_child")
    if spec is None:
        return 2
    make_torchssl_importable(spec["checkout"], emulate_cuda=True, script="fixmatch")
    import fixmatch as torchssl_fixmatch  # TorchSSL's fixmatch.py

    serve_our_arrays({name: np.load(path) for name, path in spec["arrays"].items()})
    recorder = StepRecorder()
    install_hooks(spec, recorder)
    args = argparse.Namespace(**spec["torchssl_args"])
    torchssl_fixmatch.main_worker(args.gpu, 1, args)
    torch.save({"state_names": recorder.state_names, "fresh_initialisation": recorder.fresh_initialisation,
                "steps": recorder.steps, "error": recorder.error}, spec["output"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
