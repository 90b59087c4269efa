"""TorchSSL's arguments for a run.

Built as TorchSSL's own command line builds them, from the checkout: the argparse
defaults of its <script>.py, then its config for the label count on top
(config/<script>/<script>_cifar10_<N>_0.yaml; the 40-label file with `num_labels` replaced when
there is none for N). Every TrainConfig field with a TorchSSL counterpart replaces its value
(`SHARED_ARGUMENTS`, and the method's own fields under the names algorithms.py gives); the rest
(`ENVIRONMENT_ARGS`) places its files in our work dir and runs one non-distributed process. With the paper
preset the hyper-parameters are exactly the config's. Not mapped, and recorded as such: TorchSSL's
RandAugment always applies 3 operations (ours: `randaugment_ops`, 2 in the paper), it trains in fp32
(`amp: False`; `precision`, `channels_last`, `compile` and `augmentation` are own-implementation knobs), and
its optimizer always uses Nesterov.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Mapping

import yaml

from implementations.interface import (
    ALGORITHMS,
    METHOD_FIELDS,
    ROLE_RUN,
    TrainConfig,
    config_fields,
)
from implementations.torchssl import checkout as torchssl_checkout
from implementations.torchssl.algorithms import TORCHSSL_ALGORITHMS

REFERENCE_CONFIG = "config/{script}/{script}_cifar10_{num_labels}_0.yaml"
FALLBACK_CONFIG_LABELS = 40

# TrainConfig field -> TorchSSL argument of the same meaning and unit, in every algorithm's script.
SHARED_ARGUMENTS = {
    "iterations": "num_train_iter",
    "labeled_batch_size": "batch_size",
    "learning_rate": "lr",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "ema_decay": "ema_m",
    "depth": "depth",
    "widen_factor": "widen_factor",
    "eval_interval": "num_eval_iter",
    "eval_batch_size": "eval_batch_size",
    "seed": "seed",
}
# Every TrainConfig field the adapter reads: the hyper-parameters above, and what it needs to log, checkpoint
# and refuse what TorchSSL cannot run (unsupported_reason). The other fields are own's alone.
CONFIG_FIELDS = frozenset(SHARED_ARGUMENTS) | METHOD_FIELDS | config_fields(ROLE_RUN) | {"algorithm", "nesterov"}
# Arguments that say where and how TorchSSL runs, not what it learns.
ENVIRONMENT_ARGS = ("save_dir", "save_name", "resume", "load_path", "overwrite", "use_tensorboard", "data_dir",
                    "num_workers", "gpu", "world_size", "rank", "multiprocessing_distributed", "distributed",
                    "dist_url", "dist_backend")
PER_EXECUTION_ARGS = ("resume", "load_path")


def torchssl_hyperparameters(config: TrainConfig) -> dict[str, object]:
    """Our hyper-parameters under TorchSSL's argument names: the shared ones, and those of the method."""
    algorithm = TORCHSSL_ALGORITHMS[config.algorithm]
    names = {**SHARED_ARGUMENTS, **{ours: algorithm.argument_name(ours) for ours in ALGORITHMS[config.algorithm].reads}}
    return {theirs: getattr(config, ours) for ours, theirs in names.items()}


def unsupported_reason(config: TrainConfig, num_labels: int, num_classes: int = 10) -> str | None:
    """Why TorchSSL cannot run this configuration faithfully, or None."""
    if not config.nesterov:
        return "TorchSSL always uses Nesterov momentum, so nesterov=False cannot run with --impl torchssl."
    if num_labels == num_classes == 10:
        return ("TorchSSL replaces a 10-label CIFAR-10 split by its own fixed index table, so it cannot train on "
                "our split with --labels 10; use another label count for --impl torchssl.")
    return None


def reference_config_path(checkout: Path, script: str, num_labels: int) -> Path:
    """TorchSSL's config of the script for this label count, or the 40-label one when it has none."""
    path = Path(checkout) / REFERENCE_CONFIG.format(script=script, num_labels=num_labels)
    if path.exists():
        return path
    return Path(checkout) / REFERENCE_CONFIG.format(script=script, num_labels=FALLBACK_CONFIG_LABELS)


def read_reference_config(checkout: Path, script: str, num_labels: int) -> dict[str, object]:
    """TorchSSL's arguments as its own command line builds them: the argparse defaults of <script>.py,
    then the config file for this label count on top (its `over_write_args_from_file`)."""
    path = reference_config_path(checkout, script, num_labels)
    try:
        from_file = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise torchssl_checkout.VendorError(f"TorchSSL's config {path} cannot be read ({error}).") from None
    return {**read_argument_defaults(checkout, script), **from_file, "num_labels": num_labels}


def read_argument_defaults(checkout: Path, script: str) -> dict[str, object]:
    """The defaults of every `parser.add_argument` in TorchSSL's <script>.py, read from its source
    (the config files leave some arguments, e.g. `clip`, to these defaults)."""
    path = Path(checkout) / f"{script}.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as error:
        raise torchssl_checkout.VendorError(f"TorchSSL's {path} cannot be read ({error}).") from None
    defaults: dict[str, object] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"):
            continue
        flags = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        dest = ([flag for flag in flags if flag.startswith("--")] or flags)[0].lstrip("-").replace("-", "_")
        if "dest" in keywords:
            dest = ast.literal_eval(keywords["dest"])
        if "default" in keywords:
            defaults[dest] = _constant_expression(keywords["default"])
        else:
            action = ast.literal_eval(keywords["action"]) if "action" in keywords else None
            defaults[dest] = {"store_true": False, "store_false": True}.get(action)
    return defaults


def _constant_expression(node: ast.expr) -> object:
    """A literal, or arithmetic on literals such as `2 ** 20`."""
    for inner in ast.walk(node):
        if not isinstance(inner, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)):
            raise ValueError(f"not a constant expression: {ast.unparse(node)}")
    return eval(compile(ast.Expression(node), "<torchssl default>", "eval"), {"__builtins__": {}})


def build_torchssl_args(reference: Mapping[str, object], config: TrainConfig, *, num_labels: int, num_classes: int,
                        save_dir: Path, save_name: str, gpu: int, num_workers: int,
                        load_path: Path | None) -> dict[str, object]:
    """TorchSSL's argument namespace: its reference config, our hyper-parameters, our environment."""
    args = dict(reference)
    args.update(torchssl_hyperparameters(config))
    args.update(
        num_labels=num_labels, num_classes=num_classes, dataset="cifar10",
        alg=TORCHSSL_ALGORITHMS[config.algorithm].script, epoch=1,
        save_dir=str(save_dir), save_name=save_name, data_dir=str(Path(save_dir) / "data"),
        resume=load_path is not None, load_path=str(load_path) if load_path is not None else None,
        overwrite=True, use_tensorboard=False, num_workers=num_workers,
        gpu=gpu, world_size=1, rank=0, multiprocessing_distributed=False, distributed=False,
    )
    return args
