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

import copy
import json
import types
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


def bound_http(client, max_retries: int, timeout: float) -> bool:
    """Make this ``MlflowClient``'s calls to a tracking server give up after ``max_retries`` retries
    of at most ``timeout`` seconds each, for this client only. MLflow reads
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``_TIMEOUT`` from the environment for every client of
    the process, and its ``RestStore`` passes neither to ``http_request``; so the store's own
    ``RestStore._call_endpoint`` (its choice of endpoint and method) is run with its global
    ``call_endpoint`` replaced by one that passes them. Relies on ``client._tracking_client.store``
    being a ``mlflow.store.tracking.rest_store.RestStore`` whose ``_call_endpoint`` calls
    ``call_endpoint(host_creds, endpoint, method, json_body, response_proto, ...)``, and on
    ``mlflow.utils.rest_utils.http_request(max_retries=, timeout=)`` and ``verify_rest_response``, and
    on the tracking client's ``store`` being a property of its class (this client's class is
    replaced by a subclass whose ``store`` is a patched copy).
    Artifact uploads (``log_text``, ``log_artifacts``) go through MLflow's artifact repository,
    which keeps MLflow's settings. False, and nothing changed, for a client of another store."""
    from mlflow.store.tracking import rest_store  # MLflow internals: only when called (MLflow is ~2 s)
    from mlflow.utils import rest_utils
    from mlflow.utils.proto_json_utils import parse_dict

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not isinstance(store, rest_store.RestStore):
        return False

    def call_endpoint(host_creds, endpoint, method, json_body, response_proto, extra_headers=None,
                      retry_timeout_seconds=None, expected_status: int = 200):
        body = json.loads(json_body) if json_body is not None else None
        response = rest_utils.http_request(
            host_creds, endpoint, method, max_retries=max_retries, timeout=timeout, extra_headers=extra_headers,
            **({"params": body} if method == "GET" else {"json": body}))
        response = rest_utils.verify_rest_response(response, endpoint, expected_status=expected_status)
        if response.status_code == 204:
            return response_proto
        parse_dict(json.loads(response.text), response_proto)
        return response_proto

    original = rest_store.RestStore._call_endpoint
    routed = types.FunctionType(original.__code__, {**rest_store.__dict__, "call_endpoint": call_endpoint},
                                original.__name__, original.__defaults__, original.__closure__)
    # MLflow shares one store object among every client of a URI (``_get_store`` is cached, and the
    # tracking client's ``store`` property looks it up on each call): this client gets a copy of
    # its own, so the fluent API and the user's clients keep MLflow's settings.
    own = copy.copy(store)
    own._call_endpoint = types.MethodType(routed, own)
    tracking = client._tracking_client
    tracking.__class__ = type(f"Bounded{type(tracking).__name__}", (type(tracking),), {"store": property(lambda _: own)})
    return True


def no_run_links(client) -> bool:
    """Stop this ``MlflowClient`` printing "View run ... at: URL" on stdout (and reading the run back
    for it) each time it ends a run on a tracking server; ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``
    would stop it for every client of the process. Relies on ``client._tracking_client._log_url(run_id)``,
    which ``set_terminated`` calls. False if this MLflow has none."""
    tracking = getattr(client, "_tracking_client", None)
    if not callable(getattr(tracking, "_log_url", None)):
        return False
    tracking._log_url = lambda run_id: None
    return True
