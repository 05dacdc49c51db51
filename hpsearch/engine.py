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
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from hpsearch.cluster import connect, quiet_ray, trials_at_once, wait_until_fits
from hpsearch.data import Dataset, load_dataset
from hpsearch.results import SweepResult, pick_best, read_results, records_from_trials, started
from hpsearch.schedulers import make_scheduler, plan_budget
from hpsearch.settings import (
    Resources, SweepRecord, SweepSettings, check_environment, check_reachable, default_storage,
    resolve_tracking_uri, tracking_uri_name,
)
from hpsearch.modules import SpaceModule, load_space_module
from hpsearch.space import Space
from hpsearch.strategies import make_search_alg, planned_trials
from hpsearch.trial import Replay, trial_entry
from hpsearch.winner import best_model
from hpsearch.vocab import MASK, StopReason, TrialStatus, is_secret, sqlite_path

if TYPE_CHECKING:  # the driver's Ray Tune side is imported when a sweep starts (see start_driver)
    from hpsearch.stopper import SweepStop

log = logging.getLogger(__name__)


@dataclass
class PreparedSweep:
    """A sweep checked and ready: resolved settings, the space, the trainable and its data."""

    settings: SweepSettings  # every field resolved
    space: Space
    space_path: str | None  # the space module, if the sweep came from one
    train_fn: Callable[..., Any]
    data: Dataset | None
    points_to_evaluate: list[dict[str, Any]]
    # config_hash -> a result recorded earlier with the same budget, data and code (see Replay);
    # such a trial replays it instead of training again.
    reuse: dict[str, Replay] = field(default_factory=dict)
    deadline: float | None = None  # time.time() after which running trials are stopped
    # Multi-worker trials: how many worker groups the cluster holds at once (set by start_driver).
    groups_at_once: int | None = None
    # Builds the trainable's network from a config (MODEL), for the best trial's state dict.
    model_fn: Callable[..., Any] | None = None

    @property
    def path(self) -> Path:
        return Path(self.settings.storage, self.settings.name)

    @property
    def record(self) -> SweepRecord:
        return SweepRecord(self.settings, self.space_path, self.space.to_dict())


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
        from hpsearch.train import train as reference_train

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
        storage=str(Path(s.storage or default_storage()).expanduser().resolve()),
        experiment=s.experiment or (module.name if module else "hpsearch"),
    )
    return PreparedSweep(resolved, sp, str(module.path) if module else None, train_fn, dataset, warm, model_fn=model_fn)


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
    return prep


# -- Ray ------------------------------------------------------------------------------------

def start_driver(prep: PreparedSweep, address: str | None):
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
        connect(address, s.workers_per_trial)
        client = opening.result()
    fit = wait_until_fits(s.cpus_per_trial, s.gpus_per_trial, s.wait_for_resources_s, workers=s.workers_per_trial)
    if s.workers_per_trial > 1:
        prep.groups_at_once = fit
    return client


def _import_driver_side(uri: str | None):
    import ray.tune  # noqa: F401

    import hpsearch.progress  # noqa: F401
    import hpsearch.stopper  # noqa: F401

    if uri is None:
        return None
    path = sqlite_path(uri)
    if path is not None and not Path(path).exists():
        import mlflow  # noqa: F401

        return None
    from hpsearch.store import open_client

    return open_client(uri)


def trainable_for(prep: PreparedSweep):
    from ray import tune

    s = prep.settings
    fn = tune.with_parameters(
        trial_entry, train_fn=prep.train_fn, data=prep.data, settings=s, space=prep.space,
        reuse={k: r for k, r in prep.reuse.items() if r.usable(s.max_epochs)},
    )
    if s.workers_per_trial > 1:  # its workers hold the CPUs and GPUs (see hpsearch.workers)
        from hpsearch.workers import TRIAL_ACTOR_MEMORY

        return tune.with_resources(fn, tune.PlacementGroupFactory([{"CPU": 0, "memory": TRIAL_ACTOR_MEMORY}]))
    return tune.with_resources(fn, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})


def trial_dirname(trial) -> str:
    """Ray's own name for a trial's folder (its id, index and configuration, shortened, and the
    time), with secret values masked: the name goes into checkpoint paths, which a nightly's
    ledger and Ray's logs carry."""
    tag = trial.experiment_tag
    for key, value in trial.config.items():
        if is_secret(key) and value not in (None, ""):
            tag = tag.replace(str(value), MASK)
    return f"{trial}_{tag}"[:130] + time.strftime("_%Y-%m-%d_%H-%M-%S")


def _run_config(prep: PreparedSweep, callbacks: Sequence[Any], stopper: SweepStop):
    from ray import tune

    s = prep.settings
    return tune.RunConfig(
        name=s.name, storage_path=s.storage, stop=stopper,
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        # Every checkpoint kept until the sweep ends (persist.prune_checkpoints says why): Ray
        # deletes a superseded one before the snapshot that stops naming it is uploaded.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=list(callbacks), verbose=0,
    )


def _live_callbacks(prep: PreparedSweep, progress: bool, client=None):
    """The progress bar and (when tracking is on) the MLflow tracker of a sweep about to run, with
    the driver callbacks that feed them; ``client``: the store, if already open."""
    from hpsearch.callbacks import Groundwork, InterruptWatch, NoCSV, NoTensorBoard
    from hpsearch.progress import Progress

    s = prep.settings
    plan = plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor)
    bar = Progress(s, plan.total_epochs, enabled=progress)
    watch = InterruptWatch()
    if not s.tracking_uri:
        return Live(bar, None, watch, None, [bar.callback(), watch, NoTensorBoard(), NoCSV()])
    from hpsearch.tracking import MlflowCallback, SweepTracker

    tracker = SweepTracker(s, prep.space, client=client)
    ground = Groundwork(lambda: _expected(prep, tracker.client, tracker.parent_id))
    return Live(bar, tracker, watch, ground,
                [bar.callback(), MlflowCallback(tracker), watch, ground, NoTensorBoard(), NoCSV()])


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


def run_prepared(
    prep: PreparedSweep, *, address: str | None = None, callbacks: Sequence[Any] = (), progress: bool = True,
) -> SweepResult:
    """Run a validated sweep on Ray and collect its result."""
    client = start_driver(prep, address)
    from ray import tune

    from hpsearch.persist import SchedulerState, resumable
    from hpsearch.stopper import SweepStop

    s = prep.settings
    prep.record.save()
    live = _live_callbacks(prep, progress, client)
    stopper = SweepStop(s, prep.deadline)
    scheduler = resumable(make_scheduler(s.scheduler, s.max_epochs, s.grace_period, s.reduction_factor))
    tuner = tune.Tuner(
        trainable_for(prep),
        # Ray takes pre-set points only for keys its param_space names; the points themselves come
        # from the space (already validated), so the keys carry no Ray domain.
        param_space={name: None for name in prep.space.names},
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=str(s.mode), num_samples=s.trials,
            search_alg=make_search_alg(s.strategy, prep.space, s.metric, str(s.mode), s.trials, s.seed,
                                       trials_at_once(prep.settings.concurrency, prep.groups_at_once), prep.points_to_evaluate, max_epochs=s.max_epochs),
            scheduler=scheduler,
            # Reusing trial actors cuts per-trial start-up from about a second to tens of ms here;
            # it is safe because each trial builds its own model and optimizer from its config. A
            # multi-worker trial's actor cannot be reused: its group trains until the actor ends.
            reuse_actors=s.workers_per_trial == 1,
            max_concurrent_trials=trials_at_once(prep.settings.concurrency, prep.groups_at_once),
            trial_dirname_creator=trial_dirname,
        ),
        run_config=_run_config(prep, [*live.callbacks, SchedulerState(scheduler), *callbacks], stopper),
    )
    return _run(tuner, prep, live, stopper)


def resume_prepared(
    prep: PreparedSweep, *, address: str | None = None, progress: bool = True, callbacks: Sequence[Any] = ()
) -> SweepResult:
    """Restore an interrupted sweep's Ray experiment and run it to its end."""
    client = start_driver(prep, address)
    from ray import tune

    from hpsearch.stopper import SweepStop

    s = prep.settings
    path = str(prep.path)
    if not tune.Tuner.can_restore(path):
        raise ValueError(f"name: sweep {s.name!r} has no Ray experiment state under {path!r} to resume")
    tuner = tune.Tuner.restore(path, trainable=trainable_for(prep), resume_unfinished=True, resume_errored=False)
    # Ray restores the RunConfig it pickled, whose driver callbacks were pickled empty (see
    # DriverCallback); hand it live ones, and this start's deadline. get_run_config() returns the
    # object the run will use. The scheduler comes back as pickled when the sweep started; its
    # state comes from the latest snapshot, through SchedulerState (a sweep started before
    # hpsearch kept it gets the wrapper now, and resumes with an empty state as it used to).
    from hpsearch.persist import SchedulerState, resumable

    live = _live_callbacks(prep, progress, client)
    tune_config = tuner._local_tuner._tune_config
    tune_config.scheduler = resumable(tune_config.scheduler)
    tune_config.max_concurrent_trials = trials_at_once(prep.settings.concurrency, prep.groups_at_once)  # this cluster's, which may not be the first one's
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = [*live.callbacks, SchedulerState(tune_config.scheduler), *callbacks]
    run_config.stop = stopper = SweepStop(s, prep.deadline)
    if any(stopper.meets_goal(r) for d in Path(path).glob("*/") for r in read_results(d)):
        stopper.reached = StopReason.GOAL  # reached before the interruption: end now instead of going on
    return _run(tuner, prep, live, stopper)


def _run(tuner, prep: PreparedSweep, live: Live, stopper: SweepStop) -> SweepResult:
    from hpsearch.persist import prune_checkpoints, snapshot_period

    s = prep.settings
    tracker = live.tracker
    start = time.time()
    live.watch.arm()
    try:
        with live.bar, snapshot_period(s.checkpoint_every_s):
            grid = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM): end at once, resumable as after the first
        if tracker is not None:
            tracker.interrupt(prep.path)
        raise
    except BaseException:
        if tracker is not None:
            tracker.abandon(prep.path)
        raise
    finally:
        live.watch.restore()
    wall = time.time() - start
    # ResultGrid keeps the Trial objects it was built from; their status and error file are
    # what the table needs, and the public Result has neither the scheduler's stop nor the status.
    trials = list(grid._experiment_analysis.trials)
    records = records_from_trials(trials, prep.space, s.metric, s.max_epochs)
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
    if stopper.reached != StopReason.INTERRUPTED:
        prune_checkpoints(trials)  # the sweep has ended: no resume will need a superseded one
    result = SweepResult(s.name, str(prep.path), s.metric, str(s.mode), s.max_epochs, records, wall,
                         pick_best(records, s.mode), stopped_by=stopper.reached,
                         signal=live.watch.signal if stopper.reached == StopReason.INTERRUPTED else None)
    if tracker is not None:
        from hpsearch.tracking import close_sweep

        if not result.interrupted:
            result.expected = live.ground.result()
        close_sweep(tracker, result, lambda: best_model(result.best, prep.data, prep.model_fn, prep.train_fn), prep.data)
    return result


def _expected(prep: PreparedSweep, client, parent: str) -> dict[str, float]:
    """Plan against actual (``hpsearch.forecast.expected``) for the workers this cluster gave the sweep."""
    import ray

    from hpsearch.forecast import expected

    s = prep.settings
    workers = trials_at_once(prep.settings.concurrency, prep.groups_at_once) or max(1, int(ray.cluster_resources().get("CPU", 1) // max(s.cpus_per_trial, 1e-9)))
    try:
        return expected(prep, workers, client, parent)
    except Exception as exc:  # noqa: BLE001 - a forecast must never cost the sweep its record
        log.warning("plan against actual not recorded: %s: %s", type(exc).__name__, exc)
        return {}


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
        address: None starts Ray here; ``auto`` or ``ray://host:port`` joins a cluster.
        **options: any field of ``hpsearch.SweepSettings`` (``strategy``, ``scheduler``, ``trials``,
            ``max_epochs``, ``metric``, ``goal``, ``tracking_uri``...; see its fields for each
            one's meaning and default). ``tracking_uri=False`` turns MLflow off.

    Example:
        >>> hpsearch.sweep("mlp", strategy="tpe", trials=27, max_epochs=27)  # doctest: +SKIP
    """
    prep = prepare(space, settings_from(options, resources), train=train, data=data, model=model)
    return run_prepared(prep, address=address, callbacks=callbacks, progress=progress)


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
) -> SweepResult:
    """Finish an interrupted sweep: finished trials stay, unfinished ones continue from checkpoints.

    A sweep started from a space module needs only its name; one started from a ``Space`` object
    needs ``train`` (and ``data``) again, since functions are not recorded.
    """
    prep = prepare_resume(name, storage=storage, train=train, data=data, model=model)
    return resume_prepared(prep, address=address, progress=progress, callbacks=callbacks)
