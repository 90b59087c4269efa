"""Everything a run records in MLflow, and where the MLflow store is: the only writer to MLflow.

In rooms: store.py (where the store is, retries while it is locked), runs.py (experiment, parent and child runs),
sink.py (the metrics sink and its journal), provenance.py (split, code version, environment, method sheet).
Everything the harness uses is importable from here (`from harness import tracking`).

The layout (read back by harness/report):
- one experiment (default interface.DEFAULT_EXPERIMENT); embedded store `sqlite:///<output_dir>/mlflow.db`
  with artifacts under `<output_dir>/artifacts`; `MLFLOW_TRACKING_URI` or `--tracking-uri` overrides;
- one PARENT run per (algorithm, label count, preset): name "fixmatch · labels=40 · smoke", tags
  `ssl_bench.role=parent`, `algorithm`, `labels`, `preset`;
- one CHILD run per (algorithm, impl, labels, seed) under its parent: name "fixmatch/own/40/s0", tags
  `ssl_bench.role=child`, `impl`, `algorithm`, `labels`, `seed`, `split_digest`, `preset`, `run_key`, `data_identity`,
  `data_official`, `git_commit`, `git_dirty` (+ `torchssl_commit`, `torchssl_tree_clean`); params = the
  resolved TrainConfig fields the implementation reads + `labels` (a TorchSSL run adds `torchssl.*`, its
  arguments, and `torchssl_fixed.*`, its fixed choices); metrics under the interface.py names with step =
  iteration, sent when a checkpoint covers them (`MlflowMetricsSink`); artifacts
  `confusion_matrix/step_<iteration:08d>.json`, `confusion_matrix/final.png`, `split/labeled_indices.npy`,
  `split/split.json`, `environment.json`, `method.json` (the method sheet); the split as a dataset input whose
  digest is the split digest.
"""

from harness.tracking.store import (  # noqa: F401
    ARTIFACTS_FOLDER, LOCKED_STORE_WAIT_SECONDS, STORE_FILE, STORE_LOCK, LockRetryingClient, TrackingError,
    TrackingStore, check_reachable, chunks, create_embedded_store, resolve_store, retry_while_locked, sqlite_path,
    store_lock
)
from harness.tracking.runs import (  # noqa: F401
    CHILD, CHILD_RUNS_FILTER, ERROR_TAG, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, PARENT, PARENT_RUN_ID_TAG,
    ROLE_TAG, child_run_name, clear_error, create_child_run, end_run_with_error, find_child_run,
    find_or_create_parent_run, get_or_create_experiment, log_params, log_params_once, log_tags,
    mark_as_model_training, parent_run_name, record_error, safe_folder_name, search_runs_by_tags
)
from harness.tracking.sink import (  # noqa: F401
    MetricsJournal, MlflowMetricsSink, SinkListener, confusion_matrix_artifact, highest_logged_steps,
    log_confusion_matrix_figure, log_metrics_at
)
from harness.tracking.provenance import (  # noqa: F401
    DATASET_DIGEST_LENGTH, ENVIRONMENT_PACKAGES, METHOD_SHEET_ARTIFACT, SYSTEM_METRICS_SAMPLES_PER_LOG,
    SYSTEM_METRICS_SAMPLING_SECONDS, configure_system_metrics, dataset_digest, environment_info, git_info,
    log_environment, log_method_sheet, log_split
)
