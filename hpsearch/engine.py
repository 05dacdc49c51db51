"""The driver: a space and ``SweepSettings`` -> trials on Ray Tune -> a ``SweepResult``.

``prepare`` resolves the settings against the space module and checks everything a user can get
wrong before Ray starts; ``run_prepared`` builds the Tuner (resources, failure policy, storage,
callbacks) and runs it; ``resume_prepared`` restores an interrupted sweep. ``sweep`` and
``resume_sweep`` are the public one-call forms.

Example:
    >>> import hpsearch
    >>> result = hpsearch.sweep("mlp", strategy="random", scheduler="asha", trials=4,
    ...                         max_epochs=3, tracking_uri=False)      # doctest: +SKIP
    >>> result.best_config["lr"]                                      # doctest: +SKIP
    0.0123
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from hpsearch.console import out
from hpsearch.environment import check_environment
from hpsearch.progress import Progress, RelayedProgress
from hpsearch.ray import compat
from hpsearch.ray.checkpoints import cut_off_snapshot, prune_checkpoints, snapshot_period
from hpsearch.ray.client import client_address, on_cluster
from hpsearch.ray.cluster import connect, job_runtime_env, quiet_ray, trials_at_once, wait_until_fits
from hpsearch.record import PreparedSweep, SweepRecord
from hpsearch.results import SweepResult, pick_best, read_results, records_from_trials, started, wait_for_ends
from hpsearch.search.schedulers import decision_epochs, plan_budget
from hpsearch.search.strategies import planned_trials
from hpsearch.settings import Resources, SweepSettings
from hpsearch.simulate.budget import fit_budget
from hpsearch.simulate.explain import expected
from hpsearch.space import Space
from hpsearch.space.modules import SpaceModule, load_space_module
from hpsearch.storage import open_storage
from hpsearch.tracking.close import close_sweep
from hpsearch.tracking.store import open_client
from hpsearch.tracking.tracker import SweepTracker
from hpsearch.tracking.uri import check_reachable, resolve_tracking_uri, tracking_uri_name
from hpsearch.trial.data import Dataset, load_dataset
from hpsearch.vocab import VERSION, StopReason, TrialStatus, sqlite_path
from hpsearch.winner import best_model

if TYPE_CHECKING:  # the driver's Ray Tune side is imported when a sweep starts (see start_driver)
    from hpsearch.ray.stopper import SweepStop

log = logging.getLogger(__name__)


def _resolve_module(space: str | SpaceModule | Space) -> tuple[SpaceModule | None, Space]:
    if isinstance(space, Space):
        return None, space
    if isinstance(space, SpaceModule):
        return space, space.space
    module = load_space_module(space)
    return module, module.space


def prepare(
    space: str | SpaceModule | Space,
    settings: SweepSettings = SweepSettings(),
    *,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] = (),
    model: Callable[..., Any] | None = None,
) -> PreparedSweep:
    """Resolve ``settings`` against the space module, check everything and load the data; raises
    ValueError (one line) before any compute."""
    check_environment()
    module, sp = _resolve_module(space)
    s = settings
    metric = s.metric or (module.metric if module else None)
    if not metric:
        raise ValueError("metric: name the reported metric to optimise (e.g. metric='val_acc')")
    mode = s.mode or (module.mode if module else None)
    if mode is None:
        raise ValueError("mode: must be 'max' or 'min', got None")
    max_epochs = s.max_epochs if s.max_epochs is not None else (module.max_epochs if module else None)
    if max_epochs is None:
        raise ValueError("max_epochs: give the epoch budget per trial (e.g. max_epochs=27)")
    trials = planned_trials(sp, s.strategy, s.trials)
    name = s.name
    if name is None:  # a random suffix keeps two sweeps started in the same second apart
        stem = module.name if module else "sweep"
        name = f"{stem}-{s.strategy}-{s.scheduler}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    train_fn = train or (module.train if module and module.train else None)
    if data is None:
        data = s.dataset or (module.dataset if module is not None else None)
    if train_fn is None:
        from hpsearch.trial.train import train as reference_train  # torch: only for the reference trainable

        train_fn = reference_train
        data = data if data is not None else "mnist1d"
    if not callable(train_fn):
        raise ValueError(f"train: must be a function train(config), got {type(train_fn).__name__}")
    model_fn = model or (module.model if module else None)
    if model_fn is not None and not callable(model_fn):
        raise ValueError(f"model: must be a function model(config) building the network, got {type(model_fn).__name__}")
    if module is not None and getattr(train_fn, "__module__", None) in sys.modules and \
            sys.modules[train_fn.__module__].__file__ == str(module.path):
        # A space module is loaded from a path, not installed: workers cannot import it by name,
        # so Ray must ship its code (TRAIN and what it uses) by value.
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[train_fn.__module__])
    warm = [sp.validate_config(p) for p in points_to_evaluate]
    dataset = load_dataset(data) if data is not None else None
    uri = resolve_tracking_uri(s.tracking_uri)
    if uri:
        check_reachable(uri, tracking_uri_name(s.tracking_uri))  # an unreachable server fails here, before any trial runs
    resolved = s.replace(
        metric=metric, mode=mode, trials=trials, max_epochs=max_epochs, name=name,
        dataset=dataset.name if dataset else None, tracking_uri=uri or False,
        storage=open_storage(s.storage).uri,  # a URI that cannot be opened fails here, before anything is written
        experiment=s.experiment or default_experiment(module.path if module else None, train_fn),
    )
    return PreparedSweep(resolved, sp, str(module.path) if module else None, train_fn, dataset, warm, model_fn=model_fn)


def default_experiment(space_path: Path | None, train_fn: Callable[..., Any] | None = None) -> str:
    """The MLflow experiment a sweep goes to unless told: ``PROJECT/SPACE``, so that two projects'
    ``mlp`` spaces do not share one experiment on a team server. The project is the space module's
    folder, or the folder above it when that is the conventional ``spaces/``; without a module, the
    working folder and the trainable's name.

    Example:
        >>> default_experiment(Path("/home/ana/fraud/spaces/mlp.py"))
        'fraud/mlp'
        >>> default_experiment(Path("/home/ana/fraud/tuning/mlp.py"))
        'tuning/mlp'
    """
    if space_path is None:
        return f"{Path.cwd().name or 'hpsearch'}/{getattr(train_fn, '__name__', 'train')}"
    folder = space_path.parent
    project = folder.parent.name if folder.name == "spaces" and folder.parent.name else folder.name
    return f"{project}/{space_path.stem}" if project else space_path.stem


def prepare_resume(
    name: str,
    *,
    storage: str | None = None,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
    model: Callable[..., Any] | None = None,
) -> PreparedSweep:
    """A recorded sweep, validated again (its module, data and tracking store) before Ray starts."""
    record = SweepRecord.load(name, storage)
    if record.space_path is None and train is None:
        raise ValueError(f"train: sweep {name!r} was started from a Space object; pass train= to resume it")
    space_or_module: Any = load_space_module(record.space_path) if record.space_path else Space.from_dict(record.space)
    prep = prepare(space_or_module, record.settings, train=train, data=data, model=model)
    prep.space = Space.from_dict(record.space)  # the space as it was when the sweep started
    cut = cut_off_snapshot(prep.path)
    if cut is not None:
        raise ValueError(f"name: sweep {name!r} cannot be resumed: its experiment snapshot file {cut!r} under "
                         f"{prep.path.uri!r} was cut off while it was written (a crash mid-write, or a full disk); "
                         f"its trials' results and MLflow runs stay as they are")
    return prep


# -- Ray ------------------------------------------------------------------------------------

def start_driver(prep: PreparedSweep, address: str | None, show_trial_output: bool = False):
    """Start (or join) Ray while a thread imports Ray Tune and opens the MLflow store; check that a
    trial fits on one of the cluster's nodes; returns the store's client (None if tracking is off
    or the store is new). Nothing is written before these checks pass.

    Done one after the other these took ~5 s (Ray's processes starting, mostly waiting) and ~5 s
    (imports: Ray Tune ~1.5 s, MLflow ~2 s; opening an SQLite store ~2 s) here, before the first
    trial could start; overlapped, ~7-8 s. A new SQLite store is created only once Ray is up, so a
    cluster that cannot be joined leaves nothing written.
    """
    quiet_ray()
    import ray  # noqa: F401  before the thread starts, so both threads find it imported

    s = prep.settings
    with ThreadPoolExecutor(1, thread_name_prefix="hpsearch-start") as pool:
        opening = pool.submit(_import_driver_side, s.tracking_uri or None)
        env = job_runtime_env(s.runtime_env, prep.code_folder, s.workers_per_trial,
                              joining=bool(address or os.environ.get("RAY_ADDRESS")))
        connect(address, s.workers_per_trial, env, user_env=bool(s.runtime_env) and not _ON_CLUSTER,
                log_to_driver=show_trial_output)
        client = opening.result()
    fit = wait_until_fits(s.cpus_per_trial, s.gpus_per_trial, s.wait_for_resources_s, workers=s.workers_per_trial)
    if s.workers_per_trial > 1:
        prep.groups_at_once = fit
    return client


def _import_driver_side(uri: str | None):
    """Ray Tune and hpsearch's driver side (~1.5 s), and the MLflow store opened (MLflow ~2 s, an
    SQLite store ~2 s), on the start-up thread while Ray starts: hence imports in a function."""
    import hpsearch.ray.tuner  # noqa: F401  Ray Tune, the wing's callbacks, stopper, schedulers

    if uri is None:
        return None
    path = sqlite_path(uri)
    if path is not None and not Path(path).exists():
        import mlflow  # noqa: F401

        return None

    return open_client(uri)


@dataclass
class Live:
    """What watches a running sweep on the driver: its progress bar, its MLflow tracker (None with
    tracking off), the interrupt watch, the end's groundwork (with tracking), and the Ray Tune
    callbacks that feed them."""

    bar: Any
    tracker: Any
    watch: Any
    ground: Any
    callbacks: list[Any]


def _live(prep: PreparedSweep, progress: bool, client=None, relay=None) -> Live:
    """The progress bar and (when tracking is on) the MLflow tracker of a sweep about to run, with
    the driver callbacks that feed them; ``client``: the store, if already open; ``relay``: a queue
    to the ray:// client whose bar this sweep's progress feeds instead (``hpsearch.ray.client``)."""
    import ray  # imported by start_driver already; the wing's callbacks import Ray Tune

    from hpsearch.ray.callbacks import (
        BudgetWatch,
        Groundwork,
        InterruptWatch,
        MlflowCallback,
        NoCSV,
        NoTensorBoard,
        ProgressCallback,
    )

    s = prep.settings
    plan = plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor)
    bar = RelayedProgress(s, plan.total_epochs, relay) if relay is not None else \
        Progress(s, plan.total_epochs, enabled=progress)
    watch = InterruptWatch()
    rungs = decision_epochs(s.scheduler, s.max_epochs, s.grace_period, s.reduction_factor)
    budgeted = (lambda tracker: [BudgetWatch(prep.forecast, s, bar, tracker, rungs)]) if prep.forecast else \
        (lambda tracker: [])
    if not s.tracking_uri:
        return Live(bar, None, watch, None, [ProgressCallback(bar), watch, NoTensorBoard(), NoCSV(), *budgeted(None)])
    resources = ray.cluster_resources()
    tracker = SweepTracker(s, prep.space, client=client, resources=resources, note=prep.budget_lines,
                           tags=prep.parent_tags)
    # The workers counted now: the plan against actual may be computed after sweep() returned,
    # when the caller may have shut Ray down.
    workers = trials_at_once(s.concurrency, prep.groups_at_once) or \
        max(1, int(resources.get("CPU", 1) // max(s.cpus_per_trial, 1e-9)))
    ground = Groundwork(lambda: _expected(prep, workers, tracker.client, tracker.parent_id))
    return Live(bar, tracker, watch, ground,
                [ProgressCallback(bar), MlflowCallback(tracker), watch, ground, NoTensorBoard(), NoCSV(),
                 *budgeted(tracker)])


def run_prepared(
    prep: PreparedSweep, *, address: str | None = None, callbacks: Sequence[Any] = (), progress: bool = True,
    show_trial_output: bool = False, relay=None,
) -> SweepResult:
    """Run a validated sweep on Ray and collect its result (``address`` ray://...: its driver runs
    on the cluster, see ``hpsearch.ray.client``; ``show_trial_output``: trials' output on this console)."""
    if client_address(address):
        return on_cluster(_drive, "run", prep, client_address(address), callbacks, progress, show_trial_output)
    wait_for_ends()  # an earlier sweep of this process still writing its end: one writer to MLflow
    client = start_driver(prep, address, show_trial_output)
    from hpsearch.ray.stopper import SweepStop  # Ray Tune: imported by start_driver's thread
    from hpsearch.ray.tuner import new_tuner

    prep.record.save()
    live = _live(prep, progress, client, relay)
    stopper = SweepStop(prep.settings, prep.deadline)
    tuner = new_tuner(prep, live.callbacks, callbacks, stopper)
    return _run(tuner, prep, live, stopper)


def resume_prepared(
    prep: PreparedSweep, *, address: str | None = None, progress: bool = True, callbacks: Sequence[Any] = (),
    show_trial_output: bool = False, relay=None,
) -> SweepResult:
    """Restore an interrupted sweep's Ray experiment and run it to its end, with this start's
    callbacks and deadline."""
    if client_address(address):
        return on_cluster(_drive, "resume", prep, client_address(address), callbacks, progress, show_trial_output)
    wait_for_ends()
    client = start_driver(prep, address, show_trial_output)
    from hpsearch.ray.stopper import SweepStop  # Ray Tune: imported by start_driver's thread
    from hpsearch.ray.tuner import attach, restored_tuner

    stopper = SweepStop(prep.settings, prep.deadline)
    tuner = restored_tuner(prep, stopper)  # before the tracker: nothing to resume writes nothing to MLflow
    live = _live(prep, progress, client, relay)
    attach(tuner, live.callbacks, callbacks)
    if any(stopper.meets_goal(r) for d in prep.path.children() for r in read_results(d)):
        stopper.reached = StopReason.GOAL  # reached before the interruption: end now instead of going on
    return _run(tuner, prep, live, stopper)


def _run(tuner, prep: PreparedSweep, live: Live, stopper: SweepStop) -> SweepResult:

    s = prep.settings
    tracker = live.tracker
    start = time.time()
    live.watch.arm()
    try:
        with live.bar, snapshot_period(s.checkpoint_every_s):
            grid = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM): end at once, resumable as after the first
        if tracker is not None:
            tracker.interrupt()
        raise
    except BaseException as exc:
        if tracker is not None:
            tracker.abandon()
        if compat.missing_metric(exc):  # Ray ends the whole sweep at the first such result
            raise ValueError(f"metric: a trial reported without {s.metric!r}, the metric the sweep optimises; call "
                             f"hpsearch.report(epoch=..., {s.metric}=...) every epoch, or give the metric it "
                             f"reports (--metric / METRIC)") from None
        raise
    finally:
        live.watch.restore()
    wall = time.time() - start
    # The Trial objects: their status and error file are what the table needs; the public Result
    # has neither the scheduler's stop nor the status.
    trials = compat.result_trials(grid)
    records = records_from_trials(trials, prep.space, s.metric, s.max_epochs, prep.path)
    if live.watch.signal and not stopper.reached:
        # Ray saved the experiment with these trials unfinished, then marked them TERMINATED.
        stopper.reached = StopReason.INTERRUPTED
        for r in records:
            if r.trial_id in live.watch.unfinished:
                r.status = TrialStatus.INTERRUPTED
    if stopper.reached:  # Ray marks the trials it never started as terminated too
        never_started = {t.trial_id for t in trials if not started(t)}
        for r in records:
            if r.status == TrialStatus.STOPPED and r.trial_id in never_started:
                r.status = TrialStatus.PENDING
    if stopper.reached == StopReason.BUDGET and all(r.status in (TrialStatus.COMPLETED, TrialStatus.FAILED) for r in records):
        stopper.reached = None  # spent by the last epoch of the last trial: the budget cut nothing
    if stopper.reached != StopReason.INTERRUPTED:
        prune_checkpoints(trials, prep.path)  # the sweep has ended: no resume will need a superseded one
    result = SweepResult(s.name, prep.path.uri, s.metric, str(s.mode), s.max_epochs, records, wall,
                         pick_best(records, s.mode), stopped_by=stopper.reached,
                         signal=live.watch.signal if stopper.reached == StopReason.INTERRUPTED else None)
    if tracker is None:
        return result
    model = lambda: best_model(result.best, prep.data, prep.model_fn, prep.train_fn)  # noqa: E731
    if result.interrupted:  # quickly, and before the command exits with the signal's status
        close_sweep(tracker, result, model, prep.data)
        return result
    # The result is known: return it, and finish the slow end (plan against actual, the best model,
    # the report, the parent's summary, the last writes: ~1.5 s for a small sweep) on a thread the
    # process joins before it exits. Reading what it fills in waits for it (SweepResult.wait).
    result.end_in_background(lambda: _end(result, live, tracker, model, prep.data))
    return result


def _end(result: SweepResult, live: Live, tracker, model: Callable[[], Any], data) -> None:
    """The end of a tracked sweep that ran to its end, on ``SweepEnd``'s thread."""
    try:
        result.expected = live.ground.result()
        close_sweep(tracker, result, model, data)
    except BaseException:
        try:  # what is queued is delivered (or kept for sync) all the same; the failure is SweepEnd's to report
            tracker.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow writes after a failed end: %s: %s", type(exc).__name__, exc)
        raise


def _expected(prep: PreparedSweep, workers: int, client, parent: str) -> dict[str, float]:
    """Plan against actual (``hpsearch.simulate.explain.expected``) for the ``workers`` this cluster gave the sweep."""
    try:
        return expected(prep, workers, client, parent)
    except Exception as exc:  # noqa: BLE001 - a forecast must never cost the sweep its record
        log.warning("plan against actual not recorded: %s: %s", type(exc).__name__, exc)
        return {}


# -- the driver on the cluster (ray://) -------------------------------------------------------

_ON_CLUSTER = False  # True in the driver task a ray:// client runs on the cluster (its Ray is joined already)


def _drive(what: str, prep: PreparedSweep, callbacks: list, relay, version: str) -> SweepResult:
    """The sweep's driver, in a task on the cluster's head (``hpsearch.ray.client.on_cluster``)."""
    global _ON_CLUSTER
    if version != VERSION:
        raise ValueError(f"address: the cluster runs hpsearch {VERSION}, this machine {version}; install the same "
                         "version on both")
    _ON_CLUSTER = True
    run = run_prepared if what == "run" else resume_prepared
    return run(prep, address=None, callbacks=callbacks, progress=False, relay=relay).wait()  # before the task ends


# -- the public one-call forms ----------------------------------------------------------------

def settings_from(options: Mapping[str, Any], resources: Resources | None = None) -> SweepSettings:
    """``SweepSettings`` from keyword options; an unknown one is one line with the nearest name."""
    if resources is not None:
        if not isinstance(resources, Resources):
            raise ValueError(f"resources: must be hpsearch.Resources(cpus=..., gpus=..., workers=...), got {resources!r}")
        options = {**options, "cpus_per_trial": resources.cpus, "gpus_per_trial": resources.gpus,
                   "workers_per_trial": resources.workers}
    return SweepSettings.from_mapping(dict(options))


def sweep(
    space: str | SpaceModule | Space,
    *,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
    model: Callable[..., Any] | None = None,
    resources: Resources | None = None,
    address: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    show_trial_output: bool = False,
    **options: Any,
) -> SweepResult:
    """Run a hyperparameter sweep on Ray Tune and return the best trial and a table of all trials.

    Args:
        space: a space module path (``spaces/mlp.py``), short name (``mlp``), ``SpaceModule`` or ``Space``.
        train: ``train(config)`` calling ``hpsearch.report(epoch=..., **metrics)``; default: the
            module's ``TRAIN`` or the reference PyTorch trainable.
        data: dataset name, ``Dataset`` or a function returning one; passed to ``train`` if it
            declares a ``data`` argument, through Ray's object store (put once).
        model: ``model(config)`` (or ``model(config, data)``) building ``train``'s network, so the
            best trial's checkpointed ``{"model": state_dict}`` is logged as a model (default:
            the module's ``MODEL``).
        resources: per trial, e.g. ``Resources(cpus=1, gpus=0.25)``; ``Resources(workers=2, cpus=1)``
            trains each trial under DDP on two workers of one CPU each.
        address: None starts Ray here; ``auto``, ``host:port`` or ``ray://host:port`` joins a cluster
            (through ``ray://`` the sweep's driver runs on the cluster's head node).
        show_trial_output: stream the trials' stdout and stderr to this console (each trial's
            output is also a file on its MLflow run).
        **options: any field of ``hpsearch.SweepSettings`` (``strategy``, ``scheduler``, ``trials``,
            ``max_epochs``, ``metric``, ``goal``, ``tracking_uri``...; see its fields for each
            one's meaning and default). ``tracking_uri=False`` turns MLflow off.

    Example:
        >>> hpsearch.sweep("mlp", strategy="tpe", trials=27, max_epochs=27)  # doctest: +SKIP
    """
    prep = prepare(space, settings_from(options, resources), train=train, data=data, model=model)
    if prep.settings.budget:  # the options passed are kept; the budget chooses the others
        wait_for_ends()  # a sweep of this process just ended is one to learn from: its end written first
        fit_budget(prep, set(options), tracking_uri=prep.settings.tracking_uri, experiment=prep.settings.experiment)
        for line in prep.budget_lines:
            (out.print(line, markup=False, highlight=False, soft_wrap=True) if progress else log.info(line))
    return run_prepared(prep, address=address, callbacks=callbacks, progress=progress,
                        show_trial_output=show_trial_output)


# help(sweep) and IDEs that read signatures show every option as a keyword.
sweep.__signature__ = inspect.signature(sweep).replace(parameters=[
    *[p for p in inspect.signature(sweep).parameters.values() if p.kind != p.VAR_KEYWORD],
    *[inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
      for f in fields(SweepSettings)],
])


def resume_sweep(
    name: str,
    *,
    storage: str | None = None,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
    model: Callable[..., Any] | None = None,
    address: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    show_trial_output: bool = False,
) -> SweepResult:
    """Finish an interrupted sweep: finished trials stay, unfinished ones continue from checkpoints.

    A sweep started from a space module needs only its name; one started from a ``Space`` object
    needs ``train`` (and ``data``) again, since functions are not recorded.
    """
    prep = prepare_resume(name, storage=storage, train=train, data=data, model=model)
    return resume_prepared(prep, address=address, progress=progress, callbacks=callbacks,
                           show_trial_output=show_trial_output)
