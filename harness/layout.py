"""Where a grid keeps its files under the output dir: the splits, a folder per run key (its run lock and worker
record) and a work dir per MLflow run in it (spec, checkpoint, worker.log, journal)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness import tracking
from harness.plan import GridPlan
from harness.worker import WORKER_FILE, hold_run_lock


SPLITS_FOLDER = "splits"


def split_path(output_dir: Path, split) -> Path:
    return output_dir / SPLITS_FOLDER / f"labels{split.num_labels}-seed{split.seed}-{split.digest[:12]}"


def run_folder(output_dir: Path, experiment: str, key: str) -> Path:
    """Everything of one run key: its lock, and a work dir per MLflow run."""
    return output_dir / tracking.safe_folder_name(experiment) / key


def work_dir(output_dir: Path, experiment: str, key: str, run_id: str) -> Path:
    return run_folder(output_dir, experiment, key) / run_id


def read_worker_file(folder: Path) -> dict:
    try:
        return json.loads((folder / WORKER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_splits(plan: GridPlan) -> None:
    from harness.splits import LabelSplit, SplitError

    for split in {run.split.digest: run.split for run in plan.runs}.values():
        path = split_path(plan.output_dir, split)
        try:
            if LabelSplit.load(path).digest == split.digest:
                continue
        except SplitError:  # missing, torn or changed: the plan's split is the truth, written again
            pass
        split.save(path)


def worker_holds(run_folder_path: Path) -> bool:
    probe = hold_run_lock(run_folder_path)
    if probe is None:
        return True
    probe.close()
    return False

