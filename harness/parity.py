"""`bench parity`: own, configured as TorchSSL has it, against TorchSSL's own code, step by step.

Both start from the same initial weights (own's, copied into TorchSSL's WRN) and train K iterations on
the same fixed, already augmented batches; TorchSSL runs unmodified in a process of its own. After every
step, the logits, the three losses, the mask, the pseudo-labels, every parameter's gradient, the
parameters, the EMA parameters, the batch-norm statistics and the learning rate are compared; the initial
weights of each implementation's own initialisation are compared in distribution. Beyond the stated fp32
tolerance the check fails (exit 1).

`--own-default FIELD` leaves one ledger switch at own's default, to see what that difference does.
`bench parity --list` prints the difference ledger (implementations/ledger.py).
"""

from __future__ import annotations

import math
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import click

from implementations.common import sentence
from implementations.interface import TrainConfig

# fp32 tolerance, relative to each tensor's largest magnitude: same operations in another order (NCHW vs
# channels_last convolutions, torch's lerp vs TorchSSL's EMA formula) differ by a few float32 roundings,
# which K steps of SGD carry forward; an algorithmic difference moves values by percent.
RELATIVE_TOLERANCE = 1e-4
INITIALISATION_CONFIDENCE = 0.999  # two-sided variance-ratio F test per tensor
EVAL_IMAGES_PER_CLASS = 3  # TorchSSL evaluates after its first iteration and at the end; not compared


@dataclass(frozen=True)
class ParityOptions:
    labels: int = 40
    steps: int = 10
    seed: int = 0
    data_dir: Path = Path("data")
    download: bool = False
    labeled_batch_size: int = 8
    unlabeled_ratio: int = 2
    own_defaults: tuple[str, ...] = ()  # ledger fields left at own's default
    changes: tuple[tuple[str, object], ...] = ()  # other TrainConfig fields changed (TorchSSL too, where it reads them)


@dataclass
class Comparison:
    quantity: str
    max_absolute: float = 0.0
    max_relative: float = 0.0
    worst: str = ""  # where the largest relative difference is
    disagreements: int | None = None  # for exact quantities (mask, pseudo-labels): how many differ
    total: int = 0
    problems: list[str] = field(default_factory=list)  # structural mismatches

    @property
    def passed(self) -> bool:
        if self.problems:
            return False
        if self.disagreements is not None:
            return self.disagreements == 0
        return self.max_relative <= RELATIVE_TOLERANCE


def parity_config(options: ParityOptions) -> TrainConfig:
    """The paper preset with TorchSSL's choices (own-as-torchssl), a small batch and K iterations, on the CPU."""
    from harness.presets import PRESETS
    from implementations import implementation
    from implementations.ledger import LEDGER

    switchable = {entry.field for entry in LEDGER if entry.field}
    unknown = sorted(set(options.own_defaults) - switchable)
    if unknown:
        raise click.UsageError(f"--own-default {unknown[0]} is not a ledger switch; choose from "
                               f"{', '.join(sorted(switchable))}.")
    config = implementation("own-as-torchssl").configure(PRESETS["paper"]).replace(
        iterations=options.steps, labeled_batch_size=options.labeled_batch_size,
        unlabeled_ratio=options.unlabeled_ratio, seed=options.seed, device="cpu", compile=False,
        # TorchSSL's memory format: channels_last convolutions round differently, and the weight gradients
        # of an untrained WRN are sums with so much cancellation that fp32 rounding alone moves them by about
        # 1 % (against float64); the same kernels on both sides leave only the differences of the method.
        channels_last=False)
    defaults = TrainConfig()
    return config.replace(**{name: getattr(defaults, name) for name in options.own_defaults}, **dict(options.changes))


def run_parity(options: ParityOptions) -> int:
    from implementations.torchssl import checkout as torchssl_checkout
    from harness.data import DataError, load_cifar10
    from harness.splits import SplitError, draw_split
    from implementations.own import parity as own_parity
    from implementations.torchssl import parity as torchssl_parity

    if options.steps < 1:
        raise click.UsageError(f"--steps must be at least 1, got {options.steps}.")
    config = parity_config(options)
    try:
        torchssl_checkout.verify_checkout()
    except torchssl_checkout.VendorError as error:
        raise click.ClickException(f"{sentence(error)} The parity check runs TorchSSL's own code.") from None
    try:
        data = load_cifar10(options.data_dir, options.download)
        split = draw_split(data.train_labels, options.labels, options.seed, data.num_classes, data.identity)
    except (DataError, SplitError) as error:
        raise click.ClickException(sentence(error)) from None

    batches = own_parity.fixed_batches(data, split.labeled_indices, config, options.steps)
    config = config.replace(threshold=own_parity.threshold_between_confidences(config, data.num_classes, batches[0]))
    own = own_parity.trace(config, data.num_classes, batches)
    with tempfile.TemporaryDirectory(prefix="bench-parity-") as work_dir:
        theirs = torchssl_parity.trace(config, data, split.labeled_indices,
                                       own_parity.torchssl_inputs(batches, data, EVAL_IMAGES_PER_CLASS, config.normalization),
                                       own["initialisation"], Path(work_dir))

    click.echo(_header(options, config, data))
    initialisation = compare_initialisation(own, theirs)
    click.echo(initialisation)
    comparisons = compare_steps(own, theirs)
    click.echo(format_table(comparisons))
    failed = [comparison.quantity for comparison in comparisons if not comparison.passed]
    if initialisation.startswith("initialisation: FAIL"):
        failed.insert(0, "initialisation")
    if failed:
        click.echo(f"FAIL: {', '.join(failed)} beyond the fp32 tolerance (relative {RELATIVE_TOLERANCE:g}; mask and "
                   "pseudo-labels exactly).")
        return 1
    click.echo(f"PASS: own-as-torchssl computes TorchSSL's FixMatch iteration: every difference within the fp32 "
               f"tolerance (relative {RELATIVE_TOLERANCE:g}; mask and pseudo-labels exactly).")
    return 0


def _header(options: ParityOptions, config: TrainConfig, data) -> str:
    from implementations.torchssl import checkout as torchssl_checkout

    kept = f"; left at own's default: {', '.join(options.own_defaults)}" if options.own_defaults else ""
    return (f"bench parity: own-as-torchssl against TorchSSL {torchssl_checkout.read_pin().commit[:7]}, "
            f"WRN-{config.depth}-{config.widen_factor}, {options.labels} labels, seed {options.seed}, "
            f"{options.steps} steps of {config.labeled_batch_size} + {config.unlabeled_batch_size} + "
            f"{config.unlabeled_batch_size} real CIFAR-10 images ({data.identity}), threshold "
            f"{config.threshold:.4f} (keeps about half of the first batch), CPU fp32{kept}.")


# ---- comparing -------------------------------------------------------------------------------------------


def compare_initialisation(own: dict, theirs: dict) -> str:
    """Each implementation's own initialisation, tensor by tensor: constant tensors equal, random ones with
    variances that a two-sided F test cannot tell apart."""
    from scipy import stats

    names = own["state_names"]
    if len(own["initialisation"]) != len(theirs["fresh_initialisation"]):
        extra = sorted(set(own["state_names"]) ^ set(theirs["state_names"]))
        return (f"initialisation: FAIL: the two networks have different tensors (own {len(names)}, TorchSSL "
                f"{len(theirs['state_names'])}; by name, e.g. {', '.join(extra[:3])})")
    problems = []
    for name, mine, reference in zip(names, own["initialisation"], theirs["fresh_initialisation"]):
        mine, reference = mine.double().flatten(), reference.double().flatten()
        if mine.shape != reference.shape:
            problems.append(f"{name}: shape {tuple(mine.shape)} vs {tuple(reference.shape)}")
        elif reference.numel() < 2 or reference.std() == 0 or mine.std() == 0:
            if not (mine == reference).all():
                problems.append(f"{name}: constant in one, not equal in the other")
        else:
            degrees = reference.numel() - 1
            ratio = float(mine.var() / reference.var())
            low, high = stats.f.ppf([(1 - INITIALISATION_CONFIDENCE) / 2, (1 + INITIALISATION_CONFIDENCE) / 2],
                                    degrees, degrees)
            if not low <= ratio <= high:
                problems.append(f"{name}: variance ratio {ratio:.3f} outside [{low:.3f}, {high:.3f}]")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        return f"initialisation: FAIL: {len(problems)} of {len(names)} tensors differ in distribution: {shown}"
    return (f"initialisation: own's and TorchSSL's own initialisations agree tensor by tensor ({len(names)} tensors: "
            f"constants equal, variances within the {100 * INITIALISATION_CONFIDENCE:g} % F interval); both then "
            "start from own's initial weights.")


SCALARS = ("supervised_loss", "unsupervised_loss", "total_loss", "learning_rate")
TENSOR_LISTS = {"gradients": "gradient of every parameter", "parameters": "parameters after the step",
                "ema_parameters": "EMA parameters", "buffers": "batch-norm running statistics"}


def compare_steps(own: dict, theirs: dict) -> list[Comparison]:
    names = own["state_names"]
    parameter_names = [name for name in names if not name.endswith(("running_mean", "running_var",
                                                                      "num_batches_tracked"))]
    buffer_names = [name for name in names if name not in parameter_names]
    comparisons = {"logits": Comparison("logits")}
    comparisons.update({name: Comparison(name.replace("_", " ")) for name in SCALARS})
    comparisons["mask"] = Comparison("mask (pseudo-label kept)", disagreements=0)
    comparisons["pseudo_labels"] = Comparison("pseudo-labels", disagreements=0)
    comparisons.update({key: Comparison(text) for key, text in TENSOR_LISTS.items()})
    if len(own["steps"]) != len(theirs["steps"]):
        reason = f" ({theirs['error']})" if theirs.get("error") else ""
        for comparison in comparisons.values():
            comparison.problems.append("not compared")
        comparisons["logits"].problems[0] = f"own ran {len(own['steps'])} steps, TorchSSL {len(theirs['steps'])}{reason}"
        return list(comparisons.values())
    for step, (mine, reference) in enumerate(zip(own["steps"], theirs["steps"]), start=1):
        _compare_tensor(comparisons["logits"], mine["logits"], reference["logits"], f"step {step}")
        for name in SCALARS:
            _compare_tensor(comparisons[name], _as_tensor(mine[name]), _as_tensor(reference[name]), f"step {step}")
        for name in ("mask", "pseudo_labels"):
            comparison = comparisons[name]
            differing = int((mine[name].long() != reference[name].long()).sum())
            comparison.disagreements += differing
            comparison.total += mine[name].numel()
            if differing and not comparison.worst:
                comparison.worst = f"first at step {step}"
        for key in TENSOR_LISTS:
            labels = buffer_names if key == "buffers" else parameter_names
            for name, a, b in zip(labels, mine[key], reference[key]):
                _compare_tensor(comparisons[key], a, b, f"step {step}, {name}")
    return list(comparisons.values())


def _as_tensor(value):
    import torch

    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)


def _compare_tensor(comparison: Comparison, mine, reference, where: str) -> None:
    if mine is None or reference is None:
        if (mine is None) != (reference is None):
            comparison.problems.append(f"{where}: {'own' if reference is None else 'TorchSSL'} has a gradient "
                                       "where the other has none")
        return
    if mine.shape != reference.shape:
        comparison.problems.append(f"{where}: shape {tuple(mine.shape)} vs {tuple(reference.shape)}")
        return
    mine, reference = mine.double(), reference.double()
    absolute = float((mine - reference).abs().max()) if mine.numel() else 0.0
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    relative = absolute / scale if scale > 0 else (0.0 if absolute == 0 else math.inf)
    comparison.max_absolute = max(comparison.max_absolute, absolute)
    if relative > comparison.max_relative or not comparison.worst:
        comparison.max_relative = max(comparison.max_relative, relative)
        comparison.worst = where


def format_table(comparisons: list[Comparison]) -> str:
    rows = [("quantity", "max |own − TorchSSL|", "max relative", "largest at", "result")]
    for comparison in comparisons:
        if comparison.problems:
            rows.append((comparison.quantity, "–", "–", comparison.problems[0], "FAIL"))
        elif comparison.disagreements is not None:
            rows.append((comparison.quantity, f"{comparison.disagreements} of {comparison.total} differ", "exact",
                         comparison.worst or "–", "ok" if comparison.passed else "FAIL"))
        else:
            rows.append((comparison.quantity, f"{comparison.max_absolute:.2e}", f"{comparison.max_relative:.2e}",
                         comparison.worst, "ok" if comparison.passed else "FAIL"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + (f"\nrelative: max |own − TorchSSL| over the tensor's largest |TorchSSL| value; "
                               f"tolerance {RELATIVE_TOLERANCE:g}.")


# ---- the ledger --------------------------------------------------------------------------------------------


def format_ledger(width: int = 100) -> str:
    from implementations.ledger import LEDGER

    lines = ["The difference ledger: own's default (the paper's choice) against TorchSSL's at the pinned commit.",
             "own-as-torchssl sets every switch below to TorchSSL's value; `bench parity` checks that configuration "
             "step by step.", ""]
    for number, entry in enumerate(LEDGER, start=1):
        status = "differs" if entry.differs else "same"
        accuracy = "can change accuracy" if entry.can_change_accuracy else "does not change accuracy"
        switch = (f"switch: {entry.field} = {entry.own_value!r} (own) → {entry.torchssl_value!r} (TorchSSL)"
                  if entry.field else "switch: none (not a training choice)" if entry.differs else "switch: none needed")
        lines.append(f"{number:2d}. [{entry.area}] {entry.topic} — {status}, {accuracy}")
        for label, text in (("paper", entry.paper), ("own", entry.own), ("TorchSSL", entry.torchssl), ("", switch)):
            prefix = f"      {label + ': ' if label else ''}"
            lines.extend(textwrap.wrap(text, width=width, initial_indent=prefix,
                                       subsequent_indent=" " * len(prefix)))
    return "\n".join(lines)
