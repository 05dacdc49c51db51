"""Trials that span several workers: the user's ``train(config)`` under PyTorch DDP on Ray Train.

A trial with ``workers_per_trial`` above 1 is still one Ray Tune trial: one scheduler decision,
one record, one MLflow child run. Inside it, ``run_group`` starts Ray Train's ``TorchTrainer``
(Ray's documented Train V2 inside Tune pattern): N worker processes, gloo on CPUs, NCCL on GPUs,
each calling ``train(config)`` with ``hpsearch.session.group`` set. Every rank reports each epoch
(Ray Train's report is a barrier); only rank 0's metrics, and rank 0's checkpoint, come back
(``Forward``, in Train's controller) to the trial, which reports them to Tune with the checkpoint
copied into the trial's own storage. So Tune keeps the checkpoint as for any trial: a paused
(HyperBand), retried or resumed trial starts its new worker group from it, and the best model is
read from it. When Tune stops the trial, its actor ends and the worker group with it.

Why the trial reports instead of Ray's ``TuneReportCallback``: that one forwards metrics and a
``checkpoint_path`` only, so Tune would hold no checkpoint, and pause, retry, resume and the best
model would each need a second, Train-level path.

The trial's own actor holds no CPU (``trial_resources``): its workers do the work, and a trial
holding a CPU its workers wait for is the deadlock ``shared/notes/ddp-facts.md`` records.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from ray.train import UserCallback  # the trial side imports this module only for multi-worker trials

import hpsearch.trial.session as session
from hpsearch.ray.compat import worker_failures
from hpsearch.storage import as_location
from hpsearch.text import first_line
from hpsearch.trial.session import Group, TrialFailed, checkpoint_policy
from hpsearch.trial.spec import TrialSpec

GROUPS_DIR = ".groups"  # under the sweep's folder: each running group's Ray Train storage, removed as it ends
_END = "__hpsearch-group-end__"
# What a multi-worker trial's own actor reserves: memory only (Ray needs a non-empty bundle). Its
# workers hold the CPUs and GPUs.
TRIAL_ACTOR_MEMORY = 64 * 1024 * 1024


# Ray Train features a trial's group does not use, each an actor or callbacks started per group:
# the preemption watcher (an actor polling for node drains: a preempted group fails and Tune's
# retry restarts it from its checkpoint) and Train's Prometheus metrics (no dashboard to show them).
LEAN_TRAIN = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}


def run_group(config: dict[str, Any], train_fn: Callable[..., Any], kwargs: Mapping[str, Any], spec: TrialSpec) -> None:
    """Train one trial on ``spec.workers`` workers; returns when they are done, raises
    ``TrialFailed`` naming the worker's error when one fails. Each worker applies the spec's
    checkpoint policy."""
    from ray import train, tune  # Ray: only where Ray runs, so `import hpsearch` stays light
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    for name, value in LEAN_TRAIN.items():  # the user's own setting wins
        os.environ.setdefault(name, value)
    gpu = bool(spec.gpus_per_worker)
    # In the sweep's storage (a bucket or a shared folder), which every worker of the group reaches.
    folder = as_location(spec.group_storage or str(Path.cwd())) / GROUPS_DIR / tune.get_context().get_trial_id()
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        group_worker,
        train_loop_config={"train_fn": train_fn, "config": config, "kwargs": dict(kwargs), "spec": spec,
                           "start": tune.get_checkpoint()},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=train.ScalingConfig(num_workers=spec.workers, use_gpu=gpu,
                                           resources_per_worker=spec.worker_resources()),
        run_config=train.RunConfig(
            # A new name each attempt: Tune's checkpoint is the one a restarted group starts from,
            # never a Train run left behind by a crash.
            name=f"attempt-{secrets.token_hex(4)}", storage_path=folder.uri, callbacks=[Forward(queue)],
            failure_config=train.FailureConfig(max_failures=0),  # retries are Tune's (max_failures)
        ),
    )
    failed: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the trial's thread below
            failed.append(exc)
        finally:
            queue.put(_END)

    threading.Thread(target=fit, name="hpsearch-group", daemon=True).start()
    try:
        while (item := queue.get()) != _END:
            metrics, checkpoint = item
            if checkpoint is None:
                tune.report(metrics)
                continue
            # Tune copies the checkpoint into the trial's storage before report returns.
            tune.report(metrics, checkpoint=checkpoint)
            checkpoint.filesystem.delete_dir(checkpoint.path)
    finally:
        folder.remove()
    if failed:
        raise TrialFailed(group_error(failed[0])) from failed[0]


def group_error(exc: BaseException) -> str:
    """One line for a failed worker group: the first failed worker's own error where Ray gives it."""
    failures = worker_failures(exc)
    if failures:
        rank, error = sorted(failures.items())[0]
        exc = error
        while getattr(exc, "__cause__", None) is not None:
            exc = exc.__cause__
        return f"worker {rank}: {_described(exc)}"
    return _described(exc)


def _described(exc: BaseException) -> str:
    """``Type: first line``, or ``Type`` for an exception without a message."""
    line = first_line(exc)
    return type(exc).__name__ if line == type(exc).__name__ else f"{type(exc).__name__}: {line}"


def group_worker(loop: dict[str, Any]) -> None:
    """What each worker runs: the user's ``train(config)`` with this worker's rank set."""
    from ray import train  # Ray: only where Ray runs, so `import hpsearch` stays light

    ctx = train.get_context()
    session.group = Group(ctx.get_world_rank(), ctx.get_world_size(), loop["start"])
    try:
        with checkpoint_policy(loop["spec"].checkpoint_policy()):
            loop["train_fn"](loop["config"], **loop["kwargs"])
    finally:
        session.group = None


class Forward(UserCallback):
    """Runs in Ray Train's controller: rank 0's metrics and its checkpoint (in the group's storage), to the trial."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put((dict(metrics[0]), checkpoint))
