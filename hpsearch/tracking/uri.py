"""Which MLflow store a sweep writes to, and whether it can be used, checked before any trial runs.

Example:
    >>> resolve_tracking_uri(False) is None, resolve_tracking_uri("http://127.0.0.1:5000")
    (True, 'http://127.0.0.1:5000')
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hpsearch.vocab import sqlite_path

log = logging.getLogger("hpsearch")

# Where hpsearch kept its embedded store before it followed MLflow's default (December 2026).
OLD_EMBEDDED = Path("mlflow") / "mlflow.db"


def default_tracking_uri() -> str:
    """The store MLflow itself would use here, so ``mlflow ui`` in the same folder shows the sweep.

    MLflow's own resolution (``mlflow.get_tracking_uri``): what ``mlflow.set_tracking_uri`` set in
    this process, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns`` if it holds a file store's
    experiments, else SQLite at ``./mlflow.db``. Importing MLflow costs ~2 s, so where this process
    has not imported it yet (nothing can have set it), the same steps are taken here (a canary
    test compares the two). A store at the old place, ``mlflow/mlflow.db``, is used when there is
    none at the new one, with one line saying so, rather than left behind.

    Example:
        >>> import os; os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:5000"
        >>> default_tracking_uri()
        'http://127.0.0.1:5000'
        >>> del os.environ["MLFLOW_TRACKING_URI"]
    """
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if "mlflow" in sys.modules:
        import mlflow  # already imported: free here

        if mlflow.is_tracking_uri_set():
            return mlflow.get_tracking_uri()
    if explicit:
        return explicit
    cwd = Path.cwd()
    if _has_file_store(cwd / "mlruns"):
        return (cwd / "mlruns").as_uri()
    new, old = cwd / "mlflow.db", cwd / OLD_EMBEDDED
    if not new.exists() and old.is_file():
        log.warning("MLflow: using the store at %s, where earlier hpsearch versions kept it (the default is now "
                    "./mlflow.db, where mlflow ui looks: move the file there, or set MLFLOW_TRACKING_URI)", old)
        return "sqlite:///" + str(old)
    return "sqlite:///" + str(new)


def _has_file_store(folder: Path) -> bool:
    """Whether ``folder`` holds a file store's experiments (a numbered folder with meta.yaml): the
    test MLflow makes before defaulting to ``./mlruns`` rather than ``./mlflow.db``."""
    try:
        return any(e.is_dir() and e.name.isdigit() and (Path(e.path) / "meta.yaml").exists()
                   for e in os.scandir(folder))
    except OSError:
        return False


def resolve_tracking_uri(uri: str | bool | None) -> str | None:
    """False turns tracking off; None means MLflow's own default (``default_tracking_uri``).

    Example:
        >>> resolve_tracking_uri(False) is None
        True
    """
    if uri is False:
        return None
    if uri is None or uri is True:
        return default_tracking_uri()
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"tracking_uri: give a URI such as http://127.0.0.1:5000 or sqlite:///path, got {uri!r}")
    return uri


# The stores MLflow's tracking client opens (its store registry's schemes; a SQLAlchemy URI may
# name a driver after a '+', as in postgresql+psycopg2://).
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def tracking_uri_name(value: str | bool | None) -> str:
    """What to call the tracking URI in a message: the variable it came from, or the option."""
    return "MLFLOW_TRACKING_URI" if value in (None, True) and os.environ.get("MLFLOW_TRACKING_URI") else "tracking_uri"


def check_reachable(uri: str, name: str = "tracking_uri") -> None:
    """Fail with one line, before any trial runs, when the tracking store cannot be used. ``name``:
    where the URI came from (the option, or ``$MLFLOW_TRACKING_URI``)."""
    path = sqlite_path(uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else uri.split(":", 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise ValueError(f"{name}: not a tracking store MLflow opens (a URI starting with "
                         f"{', '.join(s + '://' for s in TRACKING_SCHEMES[:5])} or file://), got {uri!r}")
    if uri.startswith(("http://", "https://")):
        import requests  # only for an http(s) store

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=5)
        except requests.RequestException as exc:
            raise ValueError(f"{name}: cannot reach the MLflow server at {uri} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ValueError(f"{name}: {uri}/health answered HTTP {response.status_code}, not an MLflow server")
    elif path is not None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{name}: cannot create {str(Path(path).parent)!r} for the SQLite store ({exc.strerror})") from None
    elif scheme == "sqlite":
        raise ValueError(f"{name}: a SQLite store is sqlite:/// and a path (sqlite:////abs/path.db), got {uri!r}")


def store_to_read(tracking_uri: str | None, reader: str) -> str:
    """The MLflow store a command reads a finished sweep from (``reader`` names the command in the
    message); one line if it is off, an absent SQLite file, or unreachable."""
    if tracking_uri == "off":
        raise ValueError(f"tracking_uri: {reader} reads a sweep back from MLflow, so it needs a store, got 'off'")
    uri = resolve_tracking_uri(tracking_uri)
    if sqlite_path(uri) is not None and not Path(sqlite_path(uri)).exists():
        raise ValueError(f"tracking_uri: no MLflow store at {sqlite_path(uri)}")
    check_reachable(uri, tracking_uri_name(tracking_uri))
    return uri
