"""Where the MLflow store is, whether it can be reached, and every call to it retried while another writer
holds a SQLite store."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import random
import shutil
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import click
from mlflow.tracking import MlflowClient

from implementations.common import first_line

STORE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "artifacts"


class TrackingError(click.ClickException):
    """The tracking store cannot be used; the message is one sentence for the user (every command prints it
    as its error and exits 1)."""


# --- where the store is ---------------------------------------------------------------------------------


# A SQLite store takes one writer at a time; with several runners and workers on one store, a writer may find
# it locked. Each call is retried, with growing pauses, for at most this long.
LOCKED_STORE_WAIT_SECONDS = 120.0


# Errors another writer causes that the same call gets past when repeated: a locked SQLite file, and two runs
# logging the same split at once (both see no dataset row, both insert it; repeated, the call finds it).
_TRANSIENT_ERRORS = ("database is locked", "UNIQUE constraint failed: datasets.")


def _is_locked(error: BaseException) -> bool:
    while error is not None:
        if any(text in str(error) for text in _TRANSIENT_ERRORS):
            return True
        error = error.__cause__ or error.__context__
    return False


def retry_while_locked(action: Callable[[], object]) -> object:
    """`action()`, repeated while the SQLite store is locked by another process, for a bounded time."""
    deadline = time.monotonic() + LOCKED_STORE_WAIT_SECONDS
    pause = 0.05
    while True:
        try:
            return action()
        except Exception as error:
            if not _is_locked(error):
                raise
            if time.monotonic() > deadline:
                raise TrackingError(
                    f"The MLflow store stayed locked by another process for {LOCKED_STORE_WAIT_SECONDS:.0f} s "
                    f"({first_line(error)}); run fewer `bench run` at once on it, or serve it with `mlflow server` "
                    "and pass --tracking-uri.") from None
            time.sleep(pause * random.uniform(1.0, 2.0))
            pause = min(2 * pause, 2.0)


class LockRetryingClient:
    """An MlflowClient whose every call is retried while a SQLite store is locked (`retry_while_locked`)."""

    def __init__(self, tracking_uri: str):
        self._client = MlflowClient(tracking_uri=tracking_uri)

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args, **kwargs):
            return retry_while_locked(lambda: attribute(*args, **kwargs))

        return call


@dataclass(frozen=True)
class TrackingStore:
    tracking_uri: str
    artifact_root: str | None  # artifact location of experiments we create; None: the store decides
    embedded: bool  # the sqlite database under the output dir (no server involved)

    def client(self) -> LockRetryingClient:
        return LockRetryingClient(self.tracking_uri)

    @property
    def is_server(self) -> bool:
        return urllib.parse.urlparse(self.tracking_uri).scheme in ("http", "https")


# MLflow's tracking stores: a folder (no scheme, or file:), a database through SQLAlchemy (sqlite and the
# servers it speaks to, with or without a +driver), an MLflow server, Databricks.
KNOWN_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def resolve_store(output_dir: Path | str, tracking_uri: str | None = None) -> TrackingStore:
    """`tracking_uri`, else `MLFLOW_TRACKING_URI`, else the embedded sqlite store under `output_dir`."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri:
        _check_scheme(uri, "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI")
        return TrackingStore(tracking_uri=uri, artifact_root=None, embedded=False)
    output_dir = Path(output_dir).resolve()
    return TrackingStore(
        tracking_uri=f"sqlite:///{output_dir / STORE_FILE}",
        artifact_root=(output_dir / ARTIFACTS_FOLDER).as_uri(),
        embedded=True,
    )


def _check_scheme(uri: str, given_by: str) -> None:
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme.split("+")[0] in KNOWN_SCHEMES or len(scheme) == 1:  # one letter: a Windows drive
        return
    close = difflib.get_close_matches(scheme, KNOWN_SCHEMES[1:], n=1)
    raise TrackingError(f"{given_by} {uri} has a scheme MLflow has no store for ({scheme}://"
                        + (f"; did you mean {close[0]}://?" if close else "")
                        + "); use a folder path, sqlite:///path/to/mlflow.db, http(s)://host:port of an MLflow "
                          "server, or a database URL (postgresql://, mysql://, mssql://).")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite:/// URI; None for any other store."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def _damage(database: Path) -> str | None:
    """What SQLite finds wrong with the file (a truncated copy, another file in its place); None when it is sound."""
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True,
                                                timeout=LOCKED_STORE_WAIT_SECONDS)) as connection:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as error:
        return None if _is_locked(error) else str(error)
    return None if problems == ["ok"] else problems[0]


def check_reachable(store: TrackingStore, timeout_seconds: float = 5.0) -> None:
    """Fail fast, in one sentence, when the store cannot be reached or is damaged (MLflow's own client would
    retry an unreachable server for minutes, and meet a damaged file deep in a query)."""
    database = sqlite_path(store.tracking_uri)
    if database is not None:
        if not database.exists():
            return  # the runner creates it under the store lock, once the whole grid has been checked
        problem = _damage(database)
        if problem is not None:
            raise TrackingError(f"The MLflow store {database} is damaged ({problem}): restore it from a backup, or "
                                "move it aside and pass --tracking-uri (or --output-dir) to use another store.")
        try:
            # wait while another runner is still creating it
            with store_lock(database.parent) if store.embedded else contextlib.nullcontext():
                store.client().search_experiments(max_results=1)  # opening it completes a half-made store
        except Exception as error:
            raise TrackingError(f"The MLflow store {database} cannot be opened ({first_line(error)}); restore it from "
                                "a backup, or move it aside and pass --tracking-uri (or --output-dir) to use another "
                                "store.") from None
        return
    if store.is_server:
        import requests

        url = store.tracking_uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
        try:
            response = requests.get(url, params={"max_results": 1}, timeout=timeout_seconds)
        except requests.RequestException as error:
            reason = type(error).__name__ if not str(error) else first_line(error)
            raise TrackingError(f"The MLflow tracking server at {store.tracking_uri} is not reachable ({reason}).") from None
        if response.status_code in (401, 403):
            raise TrackingError(f"The MLflow tracking server at {store.tracking_uri} refused access "
                                f"(HTTP {response.status_code}); set MLFLOW_TRACKING_TOKEN or "
                                "MLFLOW_TRACKING_USERNAME/PASSWORD.")
        if response.status_code != 200:
            raise TrackingError(f"{store.tracking_uri} does not answer as an MLflow tracking server "
                                f"(HTTP {response.status_code} from {url}).")
        return
    try:
        store.client().search_experiments(max_results=1)
    except Exception as error:  # any store backend may fail in its own way
        raise TrackingError(f"The MLflow tracking store {store.tracking_uri} cannot be opened ({first_line(error)}).") from None


def create_embedded_store(store: TrackingStore) -> None:
    """The embedded store's database, copied from an empty one this MLflow version made (kept in the user's cache):
    MLflow's own creation runs every schema migration, seconds per store. The copy's Default experiment keeps its
    artifacts beside the others', under the output dir. Call it under the store lock; nothing when it exists."""
    import mlflow

    database = sqlite_path(store.tracking_uri)
    if database is None or database.exists():
        return
    template = _cache_folder() / f"empty-mlflow-{mlflow.__version__}.db"
    try:
        if not template.exists():
            _make_template(template)
        partial = database.with_name(f".{database.name}.partial")
        shutil.copyfile(template, partial)
        with contextlib.closing(sqlite3.connect(partial)) as connection, connection:
            connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                               (f"{store.artifact_root}/0",))
        os.replace(partial, database)
    except Exception:  # no cache to write, no copy, MLflow refusing the template: it creates the store when opened
        database.with_name(f".{database.name}.partial").unlink(missing_ok=True)


def _make_template(template: Path) -> None:
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f".{template.name}.{os.getpid()}.partial")
    MlflowClient(f"sqlite:///{partial}").search_experiments(max_results=1)  # creates it, every migration run
    os.replace(partial, template)  # whole or absent, whichever process of several gets here first


def _cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssl-bench"


STORE_LOCK = "store.lock"


@contextlib.contextmanager
def store_lock(output_dir: Path):
    """Exclusive among the `bench run` processes of this output dir: for creating the embedded store, and for
    finding or creating runs, so that each exists once."""
    import fcntl

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / STORE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def chunks(items: list, size: int) -> Iterable[list]:
    """`items` in lists of at most `size`: MLflow takes a bounded number of entries per batch call."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
