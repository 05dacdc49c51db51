"""A sweep through Ray's client (``ray://host:port``): its driver runs as a task on the cluster's
head node; this process shows the progress relayed from there and turns Ctrl-C into the task's
cancellation. ``hpsearch.engine`` dispatches here and gives the task's function.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

from hpsearch.progress import Progress
from hpsearch.ray.cluster import check_answers, connect, job_runtime_env, quiet_ray
from hpsearch.record import PreparedSweep
from hpsearch.search.schedulers import plan_budget
from hpsearch.storage import Location
from hpsearch.vocab import VERSION, sqlite_path

log = logging.getLogger(__name__)


def client_address(address: str | None) -> str | None:
    """The Ray client address a sweep joins (``address`` or ``$RAY_ADDRESS``), if it is one."""
    found = address or os.environ.get("RAY_ADDRESS") or ""
    return found if found.startswith("ray://") else None


def check_client_limits(prep: PreparedSweep) -> None:
    """What a driver on the cluster cannot reach: this machine's SQLite store (one line). Storage on
    a local path is the cluster head's disk there: said in one line on the log."""
    uri = prep.settings.tracking_uri
    if uri and sqlite_path(uri) is not None:
        raise ValueError("tracking_uri: with ray:// the sweep's driver runs on the cluster, which cannot write this "
                         f"machine's SQLite store; use an MLflow server the cluster reaches (http://...), got {uri!r}")
    if Location.open(prep.settings.storage, probe=False).is_local:
        log.warning("storage: with ray:// results go to %s on the cluster's head node (a bucket URI is readable "
                    "from anywhere)", prep.settings.storage)


def on_cluster(drive: Callable[..., Any], what: str, prep: PreparedSweep, address: str, callbacks: Sequence[Any],
               progress: bool, show_trial_output: bool = False):
    """A sweep through the Ray client: its driver (Tune's run, the MLflow writer, the stopper) runs
    as a task on the cluster's head node, where Ray's client mode runs Tune's driver anyway;
    this process shows its progress (relayed through a queue) and turns Ctrl-C into a
    cancellation of that task, which ends the sweep there as a Ctrl-C ends a local one (resumable).

    ``drive(what, prep, callbacks, relay, version)`` is that task (``hpsearch.engine._drive``: run
    or resume there as a local driver); returns its ``SweepResult``.

    Why a task of hpsearch's own: in client mode ``Tuner.fit`` runs Tune's driver remotely, so
    hpsearch's driver callbacks (progress, MLflow, the interrupt watch) would run there detached,
    and a restored Tuner's configs would stay on the remote side, out of reach
    (``compat.restored_configs``). Run whole on the head, the driver is the same code as a local
    one. The head needs hpsearch installed (the cluster's image), the same version.
    """
    check_answers(address)  # no cluster (or a refused token) first, as for a local driver
    check_client_limits(prep)
    quiet_ray()
    import ray  # Ray: only where Ray runs
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    s = prep.settings
    env = job_runtime_env(s.runtime_env, prep.code_folder, s.workers_per_trial, joining=True)
    connect(address, s.workers_per_trial, env, user_env=bool(s.runtime_env), log_to_driver=show_trial_output)
    head = next(n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"])
    relay = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    task = ray.remote(drive).options(num_cpus=0, max_retries=0,
                                      scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
    ref = task.remote(what, prep, list(callbacks), relay, VERSION)
    plan = plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor)
    cancelled = False
    with Progress(s, plan.total_epochs, enabled=progress) as bar:
        while True:
            try:
                done, _ = ray.wait([ref], timeout=0.5)
                try:
                    while True:
                        bar.restore(relay.get_nowait())
                except Empty:
                    pass
                if done:
                    break
            except KeyboardInterrupt:
                if cancelled:  # a second Ctrl-C: leave now; the task ends with this client's session
                    raise
                cancelled = True
                ray.cancel(ref)  # Ray raises KeyboardInterrupt in the task, as Ctrl-C does in a local driver
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        raise KeyboardInterrupt from None  # ended as after a second Ctrl-C: resumable
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, (ValueError, KeyboardInterrupt)):
            raise exc.cause from None
        raise
