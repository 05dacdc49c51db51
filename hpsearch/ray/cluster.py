"""The Ray cluster a sweep runs on: joining it or starting one here, and checking, before anything
is written or launched, that it answers and that a trial fits on one of its nodes.

Ray itself waits: for an address where no cluster answers it retries for minutes, and a trial
asking for more than any node has stays pending for ever. A sweep checks both first and fails
with one line instead.

Example:
    >>> largest_node([{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}])
    {'CPU': 8.0, 'GPU': 1.0}
    >>> check_fits(cpus=1, gpus=1, nodes=[{"Alive": True, "Resources": {"CPU": 2.0}}])
    Traceback (most recent call last):
    ...
    ValueError: gpus_per_trial: no node has a GPU (cluster: 1 node, 2 CPUs, 0 GPUs), got 1
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

from hpsearch.ray import compat
from hpsearch.text import first_line, fmt

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 5.0  # a Ray head that exists answers a TCP connect in well under a second


def quiet_ray() -> None:
    """Our progress bar replaces Ray's console output. Ray's new output engine prints an
    experiment box even at verbosity 0, the legacy one is silent there; and per-epoch checkpoints
    make Ray warn about its (intended) experiment snapshots once a second."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def job_runtime_env(user: Mapping[str, Any] | None, module_folder: str | None, workers_per_trial: int = 1,
                    joining: bool = True) -> dict:
    """The runtime environment a sweep's Ray job gets: the user's (``runtime_env``); when
    ``joining`` a cluster, the space module's folder as ``working_dir`` unless the user names one
    (so a ``TRAIN`` importing a sibling module works on every node); and, for trials on groups of
    workers, ``repair_cleaner`` as the workers' setup hook.

    A Ray started here needs no shipping: its workers share this disk, and each trial puts the
    module's folder on its path (``TrialSpec.code_folder``). A working_dir would cost each new
    worker ~0.8 s here and take the driver's folder off the workers' path, as Ray does then.

    Example:
        >>> job_runtime_env({"env_vars": {"A": "1"}}, "/src/spaces")
        {'env_vars': {'A': '1'}, 'working_dir': '/src/spaces'}
    """
    env = dict(user or {})
    if joining and module_folder and "working_dir" not in env:
        env["working_dir"] = module_folder
    if workers_per_trial > 1:
        if env.get("worker_process_setup_hook"):
            raise ValueError("runtime_env: worker_process_setup_hook is hpsearch's own with workers_per_trial > 1 "
                             "(it frees stopped trials' workers); set yours in TRAIN instead, "
                             f"got {env['worker_process_setup_hook']!r}")
        env["worker_process_setup_hook"] = repair_cleaner
    return env


def connect(address: str | None, workers_per_trial: int = 1, runtime_env: Mapping[str, Any] | None = None,
            user_env: bool = False, log_to_driver: bool = False) -> dict[str, float]:
    """Join ``address`` (``auto``, ``ray://host:port``, ``host:port``; else ``$RAY_ADDRESS``) or
    start Ray on this machine, with ``runtime_env`` (``job_runtime_env``) for its job. A Ray
    already started in this process (a notebook's, a test session's) keeps the setup it was started
    with; ``user_env``: the caller asked for a runtime environment of their own, which such a Ray
    cannot take (one line). ``log_to_driver``: the trials' output streams to this console, each
    line prefixed by its process (as Ray does); otherwise it stays in files (each trial's own in
    its MLflow run).

    Returns the cluster's resources. An already connected Ray (a notebook, a test session) is reused.
    With no address, a Ray of our own is started even when another is running here: left to
    itself, ``ray.init()`` joins the latest cluster started on the machine (perhaps another
    sweep's, which ends with it) and then refuses ``num_cpus``.
    """
    import ray  # Ray: only where Ray runs, so `import hpsearch` stays light

    if not ray.is_initialized():
        # No dashboard (seconds of start-up).
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=log_to_driver, logging_level=logging.ERROR)
        if runtime_env:
            kwargs["runtime_env"] = dict(runtime_env)
        name = "address" if address else "RAY_ADDRESS"
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_answers(address, name)
            if address.startswith("ray://"):
                _init_client(address, kwargs)
            else:
                ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)
    else:
        if user_env:
            raise ValueError("runtime_env: Ray is already started in this process and keeps the runtime environment "
                             "it was started with; pass it to ray.init(runtime_env=...) instead, got "
                             f"{dict(runtime_env or {})!r}")
        if workers_per_trial > 1:
            check_groups_freed(workers_per_trial)
    return dict(ray.cluster_resources())


CLIENT_TRIES = 3  # connections to a Ray client proxy whose per-connection server failed to start


def _init_client(address: str, kwargs: dict[str, Any]) -> None:
    """``ray.init`` through Ray's client, tried again (a new connection, a new server on the head)
    where the head's proxy failed to start this connection's server, as a busy head now and then
    does; Ray does not retry that itself."""
    import ray  # Ray: only where Ray runs, so `import hpsearch` stays light

    for attempt in range(1, CLIENT_TRIES + 1):
        try:
            ray.init(address=address, **kwargs)
            return
        except ConnectionAbortedError as exc:
            if attempt == CLIENT_TRIES or not compat.client_server_start_failed(exc):
                raise
            log.warning("address: the Ray client server on %s failed to start this connection's server "
                        "(try %d of %d); connecting again", address, attempt, CLIENT_TRIES)
            time.sleep(attempt)


def check_groups_freed(workers_per_trial: int) -> None:
    """A Ray started before hpsearch (a notebook's) must free the worker groups of stopped trials:
    it needs the dashboard (Ray Train's cleaner asks its State API) or ``repair_cleaner`` as its
    workers' setup hook. Without either, the first stopped trial's workers would hold their CPUs
    for good and the sweep would hang; one line instead."""
    import ray  # Ray: only where Ray runs, so `import hpsearch` stays light

    dashboard = compat.has_dashboard()
    if dashboard is None:  # a Ray client connection (ray://) cannot tell: the cluster's own setup decides
        return
    try:
        hook = ray.get_runtime_context().runtime_env.get("worker_process_setup_hook") or ""
    except Exception:  # noqa: BLE001 - no runtime env to read: as above
        return
    if "repair_cleaner" not in str(hook) and not dashboard:
        raise ValueError("workers_per_trial: the Ray already started in this process has no dashboard and not "
                         "hpsearch's setup hook, so it would never free a stopped trial's workers; start it with "
                         "ray.init(runtime_env={'worker_process_setup_hook': hpsearch.ray.cluster.repair_cleaner}), "
                         f"or let hpsearch start Ray, got {workers_per_trial}")


def check_answers(address: str, name: str = "address") -> None:
    """Fail in seconds, with one line, where no Ray cluster answers at ``address``."""
    target = address
    if address == "auto":
        try:  # the cluster this machine belongs to, as Ray finds it (its address file)
            target = compat.bootstrap_address("auto")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{name}: no Ray cluster found on this machine for 'auto' ({first_line(exc)})") from None
        except ImportError:  # a Ray without that helper: let ray.init find it
            return
    host_port = target.split("://", 1)[1] if "://" in target else target
    host, sep, port = host_port.rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{name}: must be auto, host:port or ray://host:port, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ANSWER_TIMEOUT_S):
            pass
    except OSError as exc:
        why = type(exc).__name__ if not isinstance(exc, socket.timeout) else f"no answer in {ANSWER_TIMEOUT_S:g} s"
        raise ValueError(f"{name}: no Ray cluster answers at {host}:{port} ({why}), got {address!r}") from None
    check_token(target, name, address)


def check_token(target: str, name: str, address: str) -> None:
    """The cluster at ``target`` answers as a Ray cluster and takes this process's token, if it asks
    for one (Ray's token authentication, on by default since 2.52); one line otherwise, in
    milliseconds, where ``ray.init`` would retry for 20-30 s and end in a traceback. A token the
    cluster takes is then sent: Ray itself sends one to an explicit address only in token mode."""
    kind = "client server (ray://)" if target.startswith("ray://") else "GCS (host:port)"
    status = compat.cluster_auth(target, None)
    if status == "wrong-port":
        other = "host:port for the head's GCS port" if target.startswith("ray://") else \
            "ray://host:port for the head's client server port"
        raise ValueError(f"{name}: the port answers, but not as a Ray {kind}; use {other}, got {address!r}")
    if status != "unauthenticated":
        return  # open, or not answering gRPC as expected: ray.init says the rest
    token = compat.local_auth_token()
    if token is None:
        raise ValueError(f"{name}: the Ray cluster requires an authentication token and none was found (set "
                         "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the head's ~/.ray/auth_token; `ray "
                         f"get-auth-token` on the head prints it), got {address!r}")
    if compat.cluster_auth(target, token) == "unauthenticated":
        raise ValueError(f"{name}: the Ray cluster refused this process's authentication token (from "
                         f"{_token_source()}): it is not the cluster's, got {address!r}")
    compat.enable_token_auth()


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"


def largest_node(nodes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The most CPUs and the most GPUs any one live node has (a trial runs on one node)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    out = {"CPU": max((r.get("CPU", 0.0) for r in alive), default=0.0)}
    gpus = max((r.get("GPU", 0.0) for r in alive), default=0.0)
    return {**out, "GPU": gpus} if gpus else out


def worker_slots(cpus: float, gpus: float, nodes: Sequence[dict[str, Any]]) -> int:
    """How many workers holding ``cpus`` and ``gpus`` each the live nodes can hold at once.

    Example:
        >>> worker_slots(1, 0, [{"Resources": {"CPU": 2.0}}, {"Resources": {"CPU": 3.0}}])
        5
    """
    total = 0
    for r in (n.get("Resources", {}) for n in nodes if n.get("Alive", True)):
        fits = [r.get("CPU", 0.0) / cpus if cpus else math.inf, r.get("GPU", 0.0) / gpus if gpus else math.inf]
        total += int(min(fits) + 1e-9)
    return total


def check_fits(cpus: float, gpus: float, nodes: Sequence[dict[str, Any]], workers: int = 1) -> None:
    """One line naming the option, the rule and the value when no node could ever hold a trial (a
    worker of one, with ``workers`` above 1), or the cluster could never hold a trial's workers."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    total_cpus = sum(r.get("CPU", 0.0) for r in alive)
    total_gpus = sum(r.get("GPU", 0.0) for r in alive)
    cluster = (f"cluster: {len(alive)} node{'s' if len(alive) != 1 else ''}, {fmt(total_cpus)} CPUs, "
               f"{fmt(total_gpus)} GPU{'s' if total_gpus != 1 else ''}")
    big = largest_node(nodes)
    if gpus > 0 and big.get("GPU", 0.0) == 0:
        raise ValueError(f"gpus_per_trial: no node has a GPU ({cluster}), got {fmt(gpus)}")
    if gpus > big.get("GPU", 0.0):
        raise ValueError(f"gpus_per_trial: no node has {fmt(gpus)} GPUs (the largest has {fmt(big['GPU'])}; "
                         f"{cluster}), got {fmt(gpus)}")
    if cpus > big["CPU"]:
        raise ValueError(f"cpus_per_trial: no node has {fmt(cpus)} CPUs (the largest has {fmt(big['CPU'])}; "
                         f"{cluster}), got {fmt(cpus)}")
    slots = worker_slots(cpus, gpus, nodes)
    if workers > slots:
        each = f"{fmt(cpus)} CPU" + (f" and {fmt(gpus)} GPU" if gpus else "")
        raise ValueError(f"workers_per_trial: the cluster can hold at most {slots} workers of {each} each "
                         f"({cluster}), got {workers}")


def trials_at_once(concurrency: int | None, groups_at_once: int | None) -> int | None:
    """Trials at once: the ``concurrency`` option; for multi-worker trials (``groups_at_once``: how
    many worker groups the cluster holds), at most that many, so that no trial is started only to
    wait for its workers (its controller retries every 60 s, and the searcher and the scheduler
    count it as running).

    Example:
        >>> trials_at_once(None, 2), trials_at_once(4, 2), trials_at_once(1, 2), trials_at_once(3, None)
        (2, 2, 1, 3)
    """
    if groups_at_once is None:
        return concurrency
    return min(concurrency or groups_at_once, groups_at_once)


def wait_until_fits(cpus: float, gpus: float, wait_s: float | None, poll_s: float = 2.0, workers: int = 1) -> int:
    """Check that a trial fits on a live node of the connected cluster (with ``workers`` above 1:
    that the cluster holds its workers). With ``wait_s`` (an autoscaling cluster, whose nodes come
    on demand), keep looking that long before failing. Returns how many trials fit at once."""
    import ray  # Ray: only where Ray runs, so `import hpsearch` stays light

    deadline = time.monotonic() + (wait_s or 0.0)
    while True:
        try:
            nodes = ray.nodes()
            check_fits(cpus, gpus, nodes, workers)
            return worker_slots(cpus, gpus, nodes) // workers
        except ValueError as exc:
            if time.monotonic() >= deadline:
                if wait_s:
                    raise ValueError(f"{exc} (after waiting {fmt(wait_s)} s for the cluster to grow)") from None
                raise
            log.info("waiting for a node that fits a trial: %s", exc)
        time.sleep(poll_s)


# -- Ray Train's placement-group cleaner without the dashboard ---------------------------------

def repair_cleaner() -> None:
    """A ``worker_process_setup_hook`` (see ``connect``). When Tune stops a trial its actor
    ends, and with it Ray Train's controller; Train then relies on a detached cleaner actor to free
    the worker group's placement group, which asks the State API whether the controller is still
    alive. The State API is served by the Ray dashboard, which hpsearch does not start (seconds of
    start-up, a CPU's worth of processes on small machines): every query fails, the cleaner retries
    for ever and the group's CPUs are never freed, so the next trial waits for good. Here, when the
    State API cannot answer, the actor's state is read from the GCS's actor table (what the State
    API reads it from)."""
    compat.replace_get_actor(_with_gcs_fallback)


def _with_gcs_fallback(original):
    """``ray.util.state.get_actor`` that reads the GCS's actor table where the State API cannot answer."""
    from ray.util.state.exception import RayStateApiException  # Ray internals: only when called (Ray is heavy)

    def get_actor(id: str, address: str | None = None, timeout: int = 30, _explain: bool = False):
        try:
            return original(id, address=address, timeout=timeout, _explain=_explain)
        # No dashboard: the State API fails; with another Ray on the same machine its address lookup
        # ("auto") cannot choose and raises ConnectionError. The GCS table is this process's own cluster's.
        except (RayStateApiException, ConnectionError):
            state = compat.gcs_actor_state(id)
            return None if state is None else SimpleNamespace(state=state, actor_id=id)

    return get_actor
