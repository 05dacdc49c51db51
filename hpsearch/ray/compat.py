"""Every use hpsearch makes of Ray's internals, each behind one named function.

Ray's public API does not reach everything a sweep needs (a trial's status after ``fit``, a
restored experiment's configs, a scheduler's decision state, Train's placement-group cleaner
without the dashboard...). Each such touchpoint is written here once, with what it relies on and
the Ray version it was checked against; the rest of hpsearch calls these functions and Ray's
public API only. ``tests/test_compat.py`` has one canary test per function: after a Ray upgrade,
a renamed internal fails there, with its name, instead of somewhere inside a sweep.

Checked against Ray 2.60.0 (``pyproject.toml`` pins ``ray[tune,client]`` below the next minor).

This module imports nothing of hpsearch and no Ray at module level (the trial side and
``import hpsearch`` use it), so every layer can call it.

Example:
    >>> sorted(RAY_KNOBS)[:2]
    ['RAY_AIR_NEW_OUTPUT', 'RAY_TRAIN_ENABLE_PREEMPTION_WATCHER']
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

TESTED_RAY = "2.60.0"

# Environment variables Ray reads that hpsearch sets (each where it is used); the canary checks
# that Ray's source still reads each one.
RAY_KNOBS = {
    "RAY_AIR_NEW_OUTPUT": "ray/tune/experimental/output.py: 0 keeps Tune's legacy, silent console output",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "ray/tune/execution/experiment_state.py",
    "TUNE_GLOBAL_CHECKPOINT_S": "ray/tune/execution/tune_controller.py: seconds between experiment snapshots",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "ray/train/v2/_internal/constants.py",
    "RAY_TRAIN_METRICS_ENABLED": "ray/train/v2/_internal/constants.py",
}


# -- the trial side ------------------------------------------------------------------------------

def in_tune_session() -> bool:
    """Whether this process runs a Tune trial's function (not a Ray Train worker, not a plain
    process). Relies on ``ray.tune.trainable.trainable_fn_utils._in_tune_session`` (Ray >= 2.40;
    ``ray.tune.get_context()`` answers outside a trial too, so it cannot tell)."""
    try:
        # Ray internals: only when called (Ray is heavy)
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session
    except ImportError:  # pragma: no cover - ray is a dependency, but keep user code importable
        return False
    return bool(_in_tune_session())


# Ray's storage modules (Tune's function trainables, Train v2's workers) log "Checkpoint successfully
# created at: ..." at INFO in the trial's process at every report with a checkpoint.
CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")


def quiet_checkpoint_notices() -> None:
    """Raise Ray's checkpoint notices (``CHECKPOINT_LOGGERS``) to WARNING in this trial process.
    Every trial reports a checkpoint each epoch, so every trial's output held that line and nothing
    of the user's: each became an artifact uploaded at the sweep's end (~50 ms a trial: 5 s of a
    98-trial sweep's end, measured), noise between what the user printed."""
    for name in CHECKPOINT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def worker_failures(exc: BaseException) -> Mapping[int, BaseException] | None:
    """Rank -> error of the workers that failed a Ray Train run, where Ray says (its
    ``WorkerGroupError.worker_failures``, on the error or its cause); None otherwise."""
    for candidate in (exc, getattr(exc, "__cause__", None)):
        failures = getattr(candidate, "worker_failures", None)
        if isinstance(failures, Mapping) and failures:
            return failures
    return None


# -- the cluster ---------------------------------------------------------------------------------

def bootstrap_address(address: str = "auto") -> str:
    """The GCS address ``auto`` stands for on this machine (Ray's address file), as ``ray.init``
    finds it. Relies on ``ray._private.services.canonicalize_bootstrap_address_or_die``; raises
    ConnectionError (or RuntimeError/ValueError) where no cluster runs here."""
    # Ray internals: only when called (Ray is heavy)
    from ray._private.services import canonicalize_bootstrap_address_or_die

    return canonicalize_bootstrap_address_or_die(address)


def cluster_auth(address: str, token: str | None, timeout: float = 5.0) -> str:
    """Whether the cluster at ``address`` (``host:port`` of its GCS, or ``ray://host:port`` of its
    client server) takes a request carrying ``token`` (None: none): ``ok``, ``unauthenticated``,
    ``wrong-port`` (the port answers, but not as that kind of server) or ``unreachable``. One
    cheap gRPC call (~10 ms), where ``ray.init`` without the token retries for 20-30 s.
    Relies on Ray's generated stubs ``NodeInfoGcsService.GetClusterId`` and
    ``RayletDriver.ClusterInfo`` (PING), and on the ``authorization: Bearer`` metadata Ray's
    token authentication reads."""
    import grpc  # gRPC and Ray's generated stubs (internals): only when a cluster is joined

    client = address.startswith("ray://")
    target = address.split("://", 1)[1] if client else address
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(target) as channel:
        try:
            if client:
                from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc  # Ray internals, as above

                request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
                ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(request, timeout=timeout, metadata=metadata)
            else:
                from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc  # Ray internals, as above

                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                    gcs_service_pb2.GetClusterIdRequest(), timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return "wrong-port"
            return "unreachable"
    return "ok"


def local_auth_token() -> str | None:
    """The token Ray would send, found as Ray's loader finds it: ``$RAY_AUTH_TOKEN``, else the file
    ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (``ray/_private/authentication``)."""
    text = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if text:
        return text
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def enable_token_auth() -> None:
    """Send the token when joining an explicit address: Ray turns token mode on by itself only for
    a cluster it finds (``auto``). Relies on
    ``ray._private.authentication.authentication_token_setup._enable_token_auth`` (sets
    ``RAY_AUTH_MODE=token`` and reloads Ray's cached config; the variable alone, set after Ray is
    imported, is not seen)."""
    # Ray internals: only when a cluster that asks for a token is joined
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    _enable_token_auth()


def has_dashboard() -> bool | None:
    """Whether the Ray this process is connected to serves its dashboard (and so the State API);
    None where the connection cannot tell (a ``ray://`` client). Relies on
    ``ray._private.worker.global_worker.node.address_info["webui_url"]``."""
    import ray  # Ray: only where Ray runs, so `import hpsearch` stays light

    try:
        info = ray._private.worker.global_worker.node.address_info
    except Exception:  # noqa: BLE001 - a client connection has no local node
        return None
    return bool(info.get("webui_url"))


def gcs_actor_state(actor_id: str) -> str | None:
    """An actor's state from the GCS's actor table (``ALIVE``, ``DEAD``...), without the dashboard;
    None if the GCS does not know it. Relies on ``ray._private.state.actors`` (what the State API
    reads from); Ray has no public reader of that table."""
    from ray._private.state import actors  # Ray internals: only when called (Ray is heavy)

    info = actors(actor_id=actor_id)
    return info.get("State") if info else None


def replace_get_actor(make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
    """Replace ``ray.util.state.get_actor`` in this process by ``make(original)``; False if it was
    already replaced (``make``'s result carries ``hpsearch_fallback = True``).

    Relies on Ray Train's placement-group cleaner asking whether its controller lives through
    ``ray.train.v2._internal.state.util.is_actor_alive``, which calls ``get_actor`` as imported
    from ``ray.util.state`` when that module loads: the replacement must come first (a worker's
    setup hook runs before any task), and is also put into that module if it is already loaded.
    """
    import ray.util.state as state  # Ray internals: only when called (Ray is heavy)

    if getattr(state.get_actor, "hpsearch_fallback", False):
        return False
    replacement = make(state.get_actor)
    replacement.hpsearch_fallback = True  # type: ignore[attr-defined]
    state.get_actor = replacement
    util = sys.modules.get("ray.train.v2._internal.state.util")
    if util is not None:
        util.get_actor = replacement
    return True


# -- Tune's driver -------------------------------------------------------------------------------

def restored_configs(tuner) -> tuple[Any, Any]:
    """The ``TuneConfig`` and ``RunConfig`` a restored ``Tuner`` will run with, to change in place
    (Ray restores the pickled ones: their callbacks come back empty, and a new start has its own
    deadline and cluster). Relies on ``Tuner._local_tuner`` (absent in Ray client mode) with its
    ``_tune_config`` and ``get_run_config()``; ``Tuner.restore`` takes no configs (Ray 2.60)."""
    local = getattr(tuner, "_local_tuner", None)
    if local is None:
        raise ValueError("address: resuming through a ray:// client connection is not supported by this Ray "
                         f"({TESTED_RAY}); resume on the cluster's head node")
    return local._tune_config, local.get_run_config()


# How long a snapshot waits for the copy of the one before (a hung store: the snapshot goes on).
SNAPSHOT_COPY_WAIT_S = 60.0


def consistent_snapshots() -> bool:
    """Make the experiment snapshots this process's Tune driver writes whole, whenever it is
    killed; False if already done here.

    Ray writes a snapshot into a staging folder, then copies that folder to storage in a
    background thread with ``pyarrow.fs.copy_files``. Two races cut a file off:

    - the next snapshot rewrites ``experiment_state-*.json`` in place (``open(..., "w")``) while the
      copy of the one before may still be reading it, and the copy takes what it finds: half a
      file, even into an object store;
    - the copy truncates each file in a local (or mounted) storage folder and writes it again, so a
      driver killed inside it leaves a cut-off file.

    ``Tuner.restore`` then fails to read the snapshot and starts the experiment over (Ray logs
    "Failed to restore the run state"). Here each snapshot first waits for the copy still in
    flight (a copy that failed is logged and the snapshot goes on), and a local folder gets each
    file under a hidden name beside it, renamed over the old one. Relies on
    ``TuneController.save_to_dir`` writing the snapshot, ``TuneController._storage.syncer`` (a
    ``_BackgroundSyncer`` whose ``wait`` ends the copy in flight) and
    ``_FilesystemSyncer._sync_up_command`` handing the syncer
    ``ray.train._internal.storage._upload_to_fs_path(local_path, fs, fs_path, exclude)``, looked up
    when each copy starts (the driver's syncer copies the snapshot and nothing else).
    """
    import ray.train._internal.storage as storage  # Ray internals: only when called (Ray is heavy)
    from ray.tune.execution.tune_controller import TuneController

    original_upload, original_save = storage._upload_to_fs_path, TuneController.save_to_dir
    if getattr(original_save, "hpsearch_consistent", False):
        return False

    def upload(local_path: str, fs, fs_path: str, exclude=None) -> None:
        if fs.type_name != "local" or exclude or not os.path.isdir(local_path):
            return original_upload(local_path, fs, fs_path, exclude)
        for root, _, files in os.walk(local_path):
            target = Path(fs_path, os.path.relpath(root, local_path))
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                part = target / f".{name}.{uuid.uuid4().hex[:8]}.part"
                try:
                    shutil.copyfile(os.path.join(root, name), part)
                    os.replace(part, target / name)
                finally:
                    part.unlink(missing_ok=True)  # nothing once renamed; what a failed copy left

    def save_to_dir(self) -> None:
        try:
            self._storage.syncer.wait(timeout=SNAPSHOT_COPY_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - as Ray's own wait after a snapshot: said, and the next copy tries again
            logging.getLogger("ray.tune").error("Saving the experiment state to storage failed: %s: %s",
                                                type(exc).__name__, exc)
        original_save(self)

    save_to_dir.hpsearch_consistent = True  # type: ignore[attr-defined]
    storage._upload_to_fs_path = upload
    TuneController.save_to_dir = save_to_dir
    return True


def missing_metric(exc: BaseException) -> bool:
    """Whether ``Tuner.fit`` failed because a trial reported a result without the sweep's metric:
    Ray's controller raises a ``ValueError`` from ``_validate_result_metrics`` (its text: "did not
    include the specified metric(s)"), which ``fit`` wraps in a ``TuneError`` holding that text."""
    return "did not include the specified metric" in str(exc)


def client_server_start_failed(exc: BaseException) -> bool:
    """Whether a ``ray://`` connection failed because the head's client proxy could not start the
    server it starts for each connection (Ray's proxier: "Starting Ray client server failed"),
    which ``ray.init`` raises as a ``ConnectionAbortedError`` holding that text. A busy head fails
    it now and then; a new connection gets a new server on another port."""
    return isinstance(exc, ConnectionAbortedError) and "Starting Ray client server failed" in str(exc)


def result_trials(grid) -> list:
    """The ``Trial`` objects a ``ResultGrid`` was built from: their status, error file and
    checkpoint, which the public ``Result`` lacks. Relies on ``ResultGrid._experiment_analysis``."""
    return list(grid._experiment_analysis.trials)


def set_trial_status(controller, trial, status: str) -> None:
    """Set a trial's status as Tune's controller does (its bookkeeping of paused and pending trials
    included). Relies on ``TuneController._set_trial_status``."""
    controller._set_trial_status(trial, status)


def trial_started(trial) -> bool:
    """Whether Tune ever ran the trial: it notes the time it first set it RUNNING in
    ``Trial.run_metadata.start_time``."""
    return getattr(getattr(trial, "run_metadata", None), "start_time", None) is not None


# The attributes that hold a scheduler's decisions (the rest is its configuration, rebuilt from
# the sweep's settings, and HyperBand's lambdas, which do not pickle).
SCHEDULER_STATE = {
    "AsyncHyperBandScheduler": ("_brackets", "_trial_info", "_counter", "_num_stopped"),
    "HyperBandScheduler": ("_hyperbands", "_trial_info", "_state", "_num_stopped"),
}


def scheduler_state(scheduler, kind: str) -> dict[str, Any]:
    """The decision state of one of Ray's ASHA (``kind`` AsyncHyperBandScheduler) or HyperBand
    schedulers: the private attributes in ``SCHEDULER_STATE``."""
    return {key: scheduler.__dict__[key] for key in SCHEDULER_STATE[kind]}


def set_scheduler_state(scheduler, state: Mapping[str, Any]) -> None:
    """Put back what ``scheduler_state`` took."""
    scheduler.__dict__.update(state)


def stub_trial(config: dict[str, Any], trial_id: str):
    """A ``Trial`` the schedulers and searchers accept without an experiment behind it (the
    simulator's): ``Trial(..., stub=True)``, status PENDING."""
    from ray.tune.experiment import Trial  # Ray internals: only when called (Ray is heavy)

    trial = Trial("simulated", config=dict(config), trial_id=trial_id, stub=True)
    trial.status = Trial.PENDING
    return trial


def set_last_result(trial, result: dict[str, Any]) -> None:
    """What ``Trial.update_last_result`` keeps that the schedulers read (``trial.last_result``):
    ``Trial.run_metadata.last_result``."""
    trial.run_metadata.last_result = result


def default_callbacks(callbacks: list) -> list:
    """The callbacks Tune runs for ``callbacks``: Ray adds its default loggers unless one of that
    class is there (which is how hpsearch's no-op loggers switch them off). Relies on
    ``ray.tune.utils.callback._create_default_callbacks``; used by the canary test."""
    from ray.tune.utils.callback import _create_default_callbacks  # Ray internals: only when called (Ray is heavy)

    return _create_default_callbacks(list(callbacks))


def restore_logger_file(logger, file_name: str, trial) -> None:
    """Ray's restore of a logger's file from a trial's storage over its local copy
    (``LoggerCallback._restore_from_remote``, which ``JsonLoggerCallback.log_trial_start`` calls for
    a trial with a checkpoint); ``hpsearch.ray.callbacks.ResultJson`` overrides that method and
    calls this where there is no local copy."""
    from ray.tune.logger.logger import LoggerCallback  # Ray internals: only when called (Ray is heavy)

    LoggerCallback._restore_from_remote(logger, file_name, trial)


# -- Ray's OptunaSearch --------------------------------------------------------------------------

def optuna_trial(searcher, trial_id: str):
    """The Optuna trial ``OptunaSearch`` asked for a Tune trial, or None (``_ot_trials``)."""
    return searcher._ot_trials.get(trial_id)


def optuna_study(searcher):
    """The Optuna study behind an ``OptunaSearch`` (``_ot_study``)."""
    return searcher._ot_study


def optuna_told(searcher) -> set:
    """The Tune trial ids ``OptunaSearch`` has told Optuna about (``_completed_trials``); add to it
    after telling one yourself."""
    return searcher._completed_trials
