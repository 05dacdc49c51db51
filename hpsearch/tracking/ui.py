"""``hpsearch ui``: the MLflow UI on the store a sweep wrote, and the address of the sweep's run.

An ``http(s)://`` store is already a server: only the address is printed. A local store (SQLite, a
``file:`` folder) gets ``mlflow server`` started on it, bound to 127.0.0.1 unless told otherwise,
its artifacts where hpsearch writes them (``mlartifacts/`` beside the database).

Example:
    >>> run_url("http://127.0.0.1:5000", "1", "abc")
    'http://127.0.0.1:5000/#/experiments/1/runs/abc'
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from hpsearch.tracking.analysis import find_parent
from hpsearch.tracking.uri import store_to_read
from hpsearch.vocab import sqlite_path


def run_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI's address of an experiment's runs, or of one run."""
    base = base.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "/runs")


def _sweep_address(uri: str, name: str | None, experiment: str | None) -> tuple[str, str | None] | None:
    """(experiment id, parent run id) of sweep ``name`` in the store, or of the newest sweep; None
    when the store holds none. A named sweep that is not there is one line (ValueError)."""
    from mlflow import MlflowClient  # MLflow (~2 s): only when the store is read

    client = MlflowClient(tracking_uri=uri)
    if name is not None:
        parent = find_parent(client, name, experiment)
        return parent.info.experiment_id, parent.info.run_id
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    ids = [e.experiment_id for e in exps if e is not None]
    runs = client.search_runs(ids, "tags.`hpsearch.role` = 'sweep'", max_results=1,
                              order_by=["attributes.start_time DESC"]) if ids else []
    return (runs[0].info.experiment_id, runs[0].info.run_id) if runs else None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve(tracking_uri: str | None, name: str | None, experiment: str | None, host: str, port: int,
          say: Callable[[str], None]) -> int:
    """Start the MLflow UI on a local store and wait until it is stopped (Ctrl-C); for a server,
    print its address. Returns the exit status. Bad input (no such store, a busy port, a sweep
    the store does not hold) raises ValueError (one line) before anything starts."""
    import requests  # the UI's health check only

    uri = store_to_read(tracking_uri, "ui")
    if not 0 < port < 65536:
        raise ValueError(f"port: must be a TCP port 1-65535, got {port}")
    where = _sweep_address(uri, name, experiment)
    if uri.startswith(("http://", "https://")):
        say(f"MLflow UI: {run_url(uri, *where) if where else uri}")
        return 0
    if not _port_free(host, port):
        raise ValueError(f"port: {host}:{port} is in use (another MLflow UI?): pass --port {port + 1}")
    db = sqlite_path(uri)
    artifacts = (Path(db).parent if db else Path.cwd()) / "mlartifacts"
    base = f"http://{host}:{port}"
    log = tempfile.TemporaryFile(mode="w+")  # the server's own log: its last line says why it did not start
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--artifacts-destination",
         str(artifacts), "--host", host, "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
        # Its own process group: the server starts uvicorn and MLflow's job runners (7 huey
        # consumers, ~280 MB each), which outlive it when only it is stopped (seen: orphans left
        # running after Ctrl-C). The whole group is stopped below.
        start_new_session=True)
    try:
        while True:  # MLflow's server takes a few seconds to import and bind
            if server.poll() is not None:
                log.seek(0)
                lines = [line for line in log.read().splitlines() if line.strip()]
                raise ValueError(f"tracking_uri: the MLflow UI did not start on {uri} "
                                 f"({lines[-1].strip() if lines else f'exit status {server.returncode}'})")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        say(f"MLflow UI on {uri}: {run_url(base, *where) if where else base}   (Ctrl-C stops it)")
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)
        log.close()


def _stop_group(server: subprocess.Popen) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:  # the group has ended
            return
        try:
            server.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait  # the leader has ended: give the rest of its group the same time
        while time.monotonic() < deadline:
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
