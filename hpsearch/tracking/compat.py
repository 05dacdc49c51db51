"""Every use hpsearch makes of MLflow's internals, each behind one named function.

Each says what it relies on and the MLflow version it was checked against; the rest of hpsearch
uses these and MLflow's public API only. ``tests/test_compat.py`` has one canary test per function,
so an MLflow upgrade that renames one of them fails there, naming it.

Checked against MLflow 3.17.2 (``pyproject.toml`` pins ``mlflow`` below the next minor). Optuna
has no such touchpoint: hpsearch uses its public API only (the private attributes of Ray's
``OptunaSearch`` are Ray's, in ``hpsearch.ray.compat``).

No MLflow import at module level: MLflow is heavy (~2 s), and callers import it when they need it.
"""

from __future__ import annotations

from typing import Any

TESTED_MLFLOW = "3.17.2"


def fluent_tracking_uri() -> str | None:
    """The tracking URI MLflow's fluent API was given by ``mlflow.set_tracking_uri`` (None when
    never set: MLflow then resolves ``$MLFLOW_TRACKING_URI`` or its default at each call). Relies
    on ``mlflow.tracking._tracking_service.utils._tracking_uri``; ``mlflow.get_tracking_uri()``
    returns the resolved URI, which cannot tell "never set" apart."""
    import mlflow.tracking._tracking_service.utils as utils  # MLflow internals: only when called (MLflow is ~2 s)

    return utils._tracking_uri


def sqlalchemy_engine(client) -> Any | None:
    """The SQLAlchemy engine of an ``MlflowClient`` on a database store (None for a server or a
    file store). Relies on ``MlflowClient._tracking_client.store.engine``."""
    return getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "engine", None)


def warm_requirements_map() -> bool:
    """Build MLflow's map of installed packages to their modules now (``mlflow.pytorch.log_model``'s
    first call otherwise does, ~0.8 s, to check a model's requirements; MLflow caches it per
    process). Relies on ``mlflow.utils.requirements_utils._init_packages_to_modules_map``; False if
    this MLflow has none."""
    from mlflow.utils import requirements_utils  # MLflow internals: only when called (MLflow is ~2 s)

    warm = getattr(requirements_utils, "_init_packages_to_modules_map", None)
    if warm is None:
        return False
    warm()
    return True
