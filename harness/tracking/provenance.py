"""What a run's numbers depend on besides its config: its split, the code version, the environment, the method
sheet; and MLflow's system metrics."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Mapping

import numpy as np
from mlflow.tracking import MlflowClient

from harness.tracking.runs import log_tags

# System metrics (CPU/RAM/disk/network, GPU when present): sampled every 10 s, logged as the
# mean of 6 samples, so a week-long run adds ~10k points per metric rather than one per second.
SYSTEM_METRICS_SAMPLING_SECONDS = 10
SYSTEM_METRICS_SAMPLES_PER_LOG = 6

ENVIRONMENT_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "pillow": "Pillow", "numpy": "numpy",
                        "mlflow": "mlflow"}




# --- the split ------------------------------------------------------------------------------------------


# MLflow refuses dataset digests longer than 36 characters: the dataset input carries the first 36 hex
# digits of the split digest (144 bits), and the full digest as its `split_digest` input tag.
DATASET_DIGEST_LENGTH = 36


def dataset_digest(split_digest: str) -> str:
    return split_digest[:DATASET_DIGEST_LENGTH]


def log_split(client: MlflowClient, run_id: str, split, split_path: Path | str) -> None:
    """The split's files as `split/labeled_indices.npy` + `split/split.json`, and the split as the run's
    "train" dataset input whose digest is the split digest (its first 36 hex digits, MLflow's limit).
    Logged once per run (skipped on resume)."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    run = client.get_run(run_id)
    if any(dataset_input.dataset.digest == dataset_digest(split.digest) for dataset_input in run.inputs.dataset_inputs):
        return
    stem = Path(split_path)
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(stem.with_name(stem.name + ".npy"), Path(folder) / "labeled_indices.npy")
        shutil.copyfile(stem.with_name(stem.name + ".json"), Path(folder) / "split.json")
        client.log_artifacts(run_id, folder, "split")
    with warnings.catch_warnings():  # MLflow registers its local-file source twice and warns about it
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(
            np.asarray(split.labeled_indices), source=str(stem.with_name(stem.name + ".npy").resolve()),
            name=f"{split.dataset_identity} labeled split, {split.num_labels} labels, seed {split.seed}",
            digest=dataset_digest(split.digest),
        )
    input_tags = [InputTag(MLFLOW_DATASET_CONTEXT, "train"), InputTag("split_digest", split.digest)]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=input_tags)])


# --- code version and environment -----------------------------------------------------------------------


def git_info(path: Path | str | None = None) -> dict[str, str]:
    """`git_commit` and `git_dirty` of the repository holding `path` (default: this project's source);
    "unknown" for both when it is not a git checkout (e.g. installed from a wheel) or git is absent."""
    path = Path(path) if path is not None else Path(__file__).resolve().parents[1]
    try:
        import git

        repository = git.Repo(path, search_parent_directories=True)
        return {"git_commit": repository.head.commit.hexsha,
                "git_dirty": str(repository.is_dirty(untracked_files=False)).lower()}
    except Exception:  # ImportError without a git binary, InvalidGitRepositoryError, ValueError without commits
        return {"git_commit": "unknown", "git_dirty": "unknown"}


def environment_info(device: str = "auto") -> dict[str, object]:
    """Versions of what computes the numbers, and the hardware they were computed on."""
    import torch

    cuda = torch.cuda.is_available()
    resolved_device = ("cuda" if cuda else "cpu") if device == "auto" else device
    info: dict[str, object] = {"python": platform.python_version()}
    for key, distribution in ENVIRONMENT_PACKAGES.items():
        try:
            info[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            info[key] = "absent"
    info.update({
        "platform": platform.platform(),
        "device": resolved_device,
        "device_name": torch.cuda.get_device_name(0) if resolved_device.startswith("cuda") else _cpu_name(),
        "cpu_count": os.cpu_count() or 0,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cuda": torch.version.cuda or "none",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),  # the GPU the launcher gave it
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES") or "none",  # the malloc settings of the run process
    })
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log_environment(client: MlflowClient, run_id: str, info: Mapping[str, object]) -> None:
    """`environment.json` plus one `env.<name>` tag per entry (tags, not params: a resumed run may
    continue on another machine, and the latest attempt's environment is what the tags show)."""
    client.log_text(run_id, json.dumps(dict(info), indent=2), "environment.json")
    log_tags(client, run_id, {f"env.{key}": value for key, value in info.items()})


METHOD_SHEET_ARTIFACT = "method.json"


def log_method_sheet(client: MlflowClient, run_id: str, sheet: Mapping[str, object]) -> None:
    """The method as the run's implementation runs it (implementations/method_sheet.py), for the report."""
    client.log_dict(run_id, dict(sheet), METHOD_SHEET_ARTIFACT)


def configure_system_metrics() -> None:
    """MLflow's system metrics at a rate that does not flood the store (see the constants above);
    environment variables set by the user win."""
    import mlflow

    if "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" not in os.environ:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_SAMPLING_SECONDS)
    if "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING" not in os.environ:
        mlflow.set_system_metrics_samples_before_logging(SYSTEM_METRICS_SAMPLES_PER_LOG)
