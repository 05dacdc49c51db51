"""The MLflow store itself: opening it (a new SQLite store safely, in WAL mode), what a parameter
may hold, and logging the best model, which only MLflow's fluent API can do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
from typing import Any

from filelock import FileLock

from hpsearch.environment import cache_folder
from hpsearch.tracking import compat
from hpsearch.vocab import sqlite_path

log = logging.getLogger(__name__)


def param_value(value: Any) -> str:
    """A parameter as MLflow holds it: text, at most 6000 characters (MLflow's limit)."""
    text = json.dumps(value) if not isinstance(value, str) else value
    return text[:6000]


# A blocked write to a tracking server must end in seconds, not MLflow's default ~4 minutes of
# retries, so the writer can keep the rest in order (it retries the head write itself, with backoff).
HTTP_RETRIES = 2
HTTP_TIMEOUT_S = 15.0


def open_client(uri: str):
    """An ``MlflowClient`` for ``uri``; a new SQLite store is created under a lock, in WAL mode.

    A server's client gives up a call after ``HTTP_RETRIES`` retries of ``HTTP_TIMEOUT_S`` each and
    prints no "View run" line per trial; both are set on this client only (``compat.bound_http``,
    ``compat.no_run_links``), never through the process's environment, which other MLflow users
    in the same process (a notebook) rely on. A value of ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` or
    ``_TIMEOUT`` set by the user still wins."""
    from mlflow import MlflowClient  # MLflow (~2 s): only when the store is used

    path = sqlite_path(uri)
    if path is None:
        client = MlflowClient(tracking_uri=uri)
        compat.bound_http(client, int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)),
                          float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)))
        compat.no_run_links(client)
        return client

    # MLflow creates and migrates a SQLite store's tables when a client first opens it; two
    # sweeps starting together on a new store race there ("table ... already exists").
    # The lock lives in hpsearch's cache, not beside the store: no mlflow.db.lock left in the
    # user's folder (SQLite itself needs the store on a local disk, so one machine's lock suffices).
    lock = cache_folder() / "store-locks" / (hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock), timeout=300):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
        _write_ahead_log(path)
    _sync_at_checkpoints(client)
    return client


def _sync_at_checkpoints(client) -> None:
    """Let this process's SQLite connections skip the disk flush (fsync) on every commit.

    In WAL mode, ``synchronous=NORMAL`` flushes at checkpoints instead: a commit stays atomic and
    the store consistent, and survives the process being killed; only a power loss or OS crash
    can undo the last commits. Here the flush was most of the tracking's cost: ~7 ms a commit,
    three commits per trial. The setting belongs to a connection, not the file, so it is made on
    each new connection of the store's SQLAlchemy engine (MLflow keeps them in a pool).
    """
    import sqlalchemy  # MLflow's SQL store only

    engine = compat.sqlalchemy_engine(client)
    if engine is None or engine.dialect.name != "sqlite":
        return
    if not sqlalchemy.event.contains(engine, "connect", _synchronous_normal):
        sqlalchemy.event.listen(engine, "connect", _synchronous_normal)
        engine.dispose()  # pooled connections made before the listener are closed, made again with it


def _synchronous_normal(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _write_ahead_log(path: str) -> None:
    """Put a SQLite store in WAL mode (it stays so: the mode is kept in the file).

    Each write then takes about 60% of the time it takes with the default rollback journal (here
    create_run 5.5 ms against 8.6 ms, log_batch 3.9 against 6.7, set_terminated 2.9 against 5.0),
    and the MLflow UI reading the store no longer blocks the sweep writing it ("database is
    locked"). WAL needs the file on a local disk, as SQLite itself does for safe locking.
    """

    try:
        with sqlite3.connect(path, timeout=30) as con:
            con.execute("PRAGMA journal_mode=WAL")
        con.close()
    except sqlite3.Error as exc:  # a store we can still write in its present mode
        log.debug("SQLite store %s left in its journal mode: %s", path, exc)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def log_model(uri: str, run_id: str, model, input_example, register: str | None = None) -> tuple[str, str | None]:
    """Log the best trial's model on the parent run; ``mlflow.pytorch.load_model`` gives it back.
    With ``register``, also a new version of that registered model. Returns the model's URI and
    the version (None when not registered)."""
    import mlflow.pytorch  # MLflow (~2 s): only when the store is used
    import torch

    import mlflow  # heavy (MLflow, torch): only when the best model is logged

    # log_model works only through the fluent API's active run, and set_tracking_uri also
    # writes MLFLOW_TRACKING_URI into the environment; put both back exactly as they were so a
    # caller's later runs and load_model calls are not redirected.
    old_global, old_env = compat.fluent_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    # The fluent run's end prints a "View run" line on a server; only for this call.
    old_quiet = os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                # pickle: loads back as the same nn.Module (torch.export would give a graph) in
                # 0.1 s rather than 2.4 s here.
                model, name="best_model", input_example=input_example, serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"], registered_model_name=register,
            )
    finally:
        mlflow.set_tracking_uri(old_global)
        for name, old in (("MLFLOW_TRACKING_URI", old_env), ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", old_quiet)):
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
    version = getattr(info, "registered_model_version", None)
    return info.model_uri, None if version is None else str(version)
