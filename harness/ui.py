"""`bench ui`: the MLflow UI on the store `bench run` writes to.

For the embedded store (sqlite under the output dir) or any database URI, this starts `mlflow server`
on it, bound to 127.0.0.1 by default, prints the URL once the server answers, and stops the server
(its whole process group) on Ctrl-C. A tracking URI that already is a server (http/https) has its
own UI: its address is printed and nothing is started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import click

from harness import tracking
from implementations.interface import DEFAULT_EXPERIMENT

SECONDS_TO_START = 120
SECONDS_TO_STOP = 15


def serve_ui(output_dir: Path | str, tracking_uri: str | None = None, host: str = "127.0.0.1",
             port: int = 5000) -> int:
    store = tracking.resolve_store(output_dir, tracking_uri)
    if store.is_server:
        tracking.check_reachable(store)
        click.echo(f"{store.tracking_uri} is an MLflow server with its own UI: open {store.tracking_uri}")
        return 0
    if store.embedded and not Path(output_dir, tracking.STORE_FILE).exists():
        raise click.ClickException(f"There is no MLflow store at {Path(output_dir) / tracking.STORE_FILE}; "
                                   "run `bench run` first or pass the --output-dir it used.")
    tracking.check_reachable(store)  # a damaged file: our sentence, not the server's traceback
    if not 0 < port < 65536:
        raise click.UsageError(f"--port {port} is not a port number (1-65535).")
    _check_port_free(host, port)

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.tracking_uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    if store.artifact_root:
        # Experiments we create carry their own artifact location; this only covers ones made in the UI.
        command += ["--default-artifact-root", store.artifact_root, "--no-serve-artifacts"]
    environment = dict(os.environ)
    # The UI needs no background job runner (a dozen worker processes on a 2-core laptop); the user's
    # own setting wins.
    environment.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # The server's own chatter goes to stderr: stdout carries only the URL and "stopped".
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=2, start_new_session=True,
                              env=environment)
    url = f"http://{_url_host(host)}:{port}"
    try:
        if not _wait_until_up(server, url):
            _stop(server)
            raise click.ClickException(f"The MLflow server did not start on {url} (exit code {server.poll()}).")
        link = _runs_view(store.client(), url)
        click.echo(f"MLflow UI: {link}  (store {store.tracking_uri}; Ctrl-C stops it)")
        sys.stdout.flush()
        # Ctrl-C and SIGTERM both stop it; SIGINT explicitly too, since a process started in the background
        # (a script, a test runner) inherits it ignored.
        previous = {number: signal.signal(number, signal.default_int_handler)
                    for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            return_code = server.wait()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        raise click.ClickException(f"The MLflow server stopped by itself (exit code {return_code}).")
    except KeyboardInterrupt:
        _stop(server)
        click.echo("MLflow UI stopped.")
        return 0


def _runs_view(client, url: str) -> str:
    """The experiment's training runs, every child run listed (not folded under its parent), in impl, labels,
    seed order."""
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    if experiment is None:
        return url
    tracking.mark_as_model_training(client, experiment)  # a store made before `bench run` marked it
    query = urllib.parse.urlencode({"searchFilter": tracking.CHILD_RUNS_FILTER, "orderByKey": "tags.`run_key`",
                                    "orderByAsc": "true"}, quote_via=urllib.parse.quote)
    return f"{url}/#/experiments/{experiment.experiment_id}/runs?{query}"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise click.ClickException(f"Cannot listen on {host}:{port} ({error.strerror}); pass another --port.") from None


def _wait_until_up(server: subprocess.Popen, url: str) -> bool:
    import requests

    deadline = time.monotonic() + SECONDS_TO_START
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (mlflow starts uvicorn and friends), SIGKILL to whatever
    of it is still alive after SECONDS_TO_STOP."""
    _signal_group(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + SECONDS_TO_STOP
    while time.monotonic() < deadline:
        server.poll()  # reap the leader, so that the group empties
        if not _signal_group(server.pid, 0):
            return
        time.sleep(0.1)
    _signal_group(server.pid, signal.SIGKILL)
    server.wait()


def _signal_group(group: int, signal_number: int) -> bool:
    """False when no process of the group is left."""
    try:
        os.killpg(group, signal_number)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies left in the group on some systems
        return False
