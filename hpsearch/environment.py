"""The environment variables hpsearch reads, checked like the options they stand for, and where a
sweep's results go by default.

Example:
    >>> import os; os.environ.pop("HPSEARCH_STORAGE", None) and None
    >>> default_storage().endswith("ray_results")
    True
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def default_storage() -> str:
    """``$HPSEARCH_STORAGE`` (a folder, or a URI such as s3://bucket/prefix), else ~/ray_results."""
    where = os.environ.get("HPSEARCH_STORAGE", "~/ray_results")
    return where if "://" in where else str(Path(where).expanduser())


def cache_folder() -> Path:
    """Where hpsearch keeps what it can make again: generated datasets, locks
    ($HPSEARCH_CACHE, default ~/.cache/hpsearch)."""
    return Path(os.environ.get("HPSEARCH_CACHE", "~/.cache/hpsearch")).expanduser()


def drain_seconds() -> float:
    """How long the end of a sweep waits for an unreachable MLflow before keeping writes on disk
    ($HPSEARCH_MLFLOW_DRAIN_S, default 120)."""
    text = os.environ.get("HPSEARCH_MLFLOW_DRAIN_S", "120")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValueError(f"HPSEARCH_MLFLOW_DRAIN_S: must be a number of seconds >= 0, got {text!r}")
    return seconds


def check_environment() -> None:
    """The environment variables hpsearch reads, checked like the options they stand for: one
    line naming the variable, the rule and the value. ($MLFLOW_TRACKING_URI is checked with the
    tracking store, $RAY_ADDRESS when the cluster is joined.)"""
    env = os.environ
    drain_seconds()
    if "HPSEARCH_STORAGE" in env and not env["HPSEARCH_STORAGE"].strip():
        raise ValueError("HPSEARCH_STORAGE: must be a folder for Ray's results, got ''")
    for folder in filter(None, env.get("HPSEARCH_SPACES", "").split(os.pathsep)):
        if not Path(folder).expanduser().is_dir():
            raise ValueError(f"HPSEARCH_SPACES: each entry must be a folder of space modules, got {folder!r}")
    cache = env.get("HPSEARCH_CACHE")
    if cache is not None:
        try:
            Path(cache).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"HPSEARCH_CACHE: must be a folder hpsearch can create ({exc.strerror}), got {cache!r}") from None
