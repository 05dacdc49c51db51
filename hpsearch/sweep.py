"""``sweep(...)``: a space, a strategy and a scheduler -> trials on Ray Tune -> a ``SweepResult``.

Everything a user can get wrong is checked in ``prepare`` before Ray starts; ``run_prepared``
then builds the Tuner (resources, failure policy, storage, callbacks) and runs it.

Example:
    >>> import hpsearch
    >>> result = hpsearch.sweep("mlp", strategy="random", scheduler="asha", trials=4,
    ...                         max_epochs=3, tracking_uri=False)      # doctest: +SKIP
    >>> result.best_config["lr"]                                      # doctest: +SKIP
    0.0123
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hpsearch.data import Dataset, load_dataset
from hpsearch.schedulers import SCHEDULERS, check_budget, make_scheduler, plan_budget
from hpsearch.space import Space, SpaceModule, load_space_module
from hpsearch.strategies import check_strategy, make_search_alg, planned_trials

SETTINGS_FILE = "hpsearch.json"


@dataclass(frozen=True)
class Resources:
    """What one trial gets. Fractional ``gpus`` pack several trials on one GPU."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or math.isnan(value):
                raise ValueError(f"{name}_per_trial: must be a number >= 0, got {value!r}")
        if self.cpus == 0 and self.gpus == 0:
            raise ValueError("cpus_per_trial: a trial needs some CPU or GPU, got cpus=0 and gpus=0")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"gpus_per_trial: above 1 must be a whole number of GPUs, got {self.gpus!r}")


@dataclass(frozen=True)
class SweepSettings:
    """Everything that defines a sweep, validated; recorded as JSON beside the Ray results."""

    name: str
    space_path: str | None
    metric: str
    mode: str
    strategy: str
    scheduler: str
    trials: int
    max_epochs: int
    grace_period: int
    reduction_factor: float
    seed: int
    cpus_per_trial: float
    gpus_per_trial: float
    concurrency: int | None
    max_failures: int
    dataset: str | None
    storage: str
    tracking_uri: str | None
    experiment: str
    space: dict[str, Any] = field(repr=False)
    goal: float | None = None  # the sweep ends once a trial reports the metric at or beyond this
    time_budget_s: float | None = None  # the sweep ends this many seconds after it starts (or resumes)


@dataclass
class TrialRecord:
    """One row of the trials table."""

    trial_id: str
    config: dict[str, Any]
    status: str  # completed | stopped | failed | running | pending
    epochs: int
    metric: float | None
    metrics: dict[str, Any]
    error: str | None = None
    node: str | None = None
    path: str | None = None
    checkpoint: str | None = None  # directory of the trial's latest checkpoint


@dataclass
class SweepResult:
    """What a sweep returns: the best trial and a table of all of them."""

    name: str
    path: str
    metric: str
    mode: str
    max_epochs: int
    trials: list[TrialRecord]
    wall_s: float
    best: TrialRecord | None
    tracking: dict[str, Any] | None = None  # uri, experiment_id, parent_run_id, children (trial id -> run id)
    stopped_by: str | None = None  # "goal", "time_budget" or "deadline" when the sweep ended before its trials did

    @property
    def deadline_hit(self) -> bool:
        return self.stopped_by == "deadline"

    @property
    def best_config(self) -> dict[str, Any] | None:
        return None if self.best is None else self.best.config

    @property
    def best_metric(self) -> float | None:
        return None if self.best is None else self.best.metric

    @property
    def total_epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out


# -- validation -------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")


def _whole(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: must be a whole number >= {low}, got {value!r}")
    return value


def _resolve_module(space: str | SpaceModule | Space) -> tuple[SpaceModule | None, Space]:
    if isinstance(space, Space):
        return None, space
    if isinstance(space, SpaceModule):
        return space, space.space
    module = load_space_module(space)
    return module, module.space


def default_storage() -> str:
    return str(Path(os.environ.get("HPSEARCH_STORAGE", "~/ray_results")).expanduser())


@dataclass
class PreparedSweep:
    settings: SweepSettings
    space: Space
    train_fn: Callable[..., Any]
    data: Dataset | None
    points_to_evaluate: list[dict[str, Any]]
    # config_hash -> a result recorded earlier with the same budget, data and code (see Replay);
    # such a trial replays it instead of training again.
    reuse: dict[str, "Replay"] = field(default_factory=dict)
    deadline: float | None = None  # time.time() after which running trials are stopped


@dataclass(frozen=True)
class Replay:
    """A trial result recorded earlier, to be reported again rather than trained again.

    ``curve`` holds one dict of metrics per epoch (``epoch`` included). ``checkpoint`` is the
    directory of the checkpoint reported at ``checkpoint_epoch``: a trial the scheduler lets run
    past the recorded curve continues training from there. ``source`` names where it came from.
    """

    curve: tuple[dict[str, Any], ...]
    source: str
    checkpoint: str | None = None
    checkpoint_epoch: int = 0

    def usable(self, max_epochs: int) -> bool:
        """Whole to the budget, or resumable from its checkpoint."""
        last = int(self.curve[-1]["epoch"]) if self.curve else 0
        return last >= max_epochs or (self.checkpoint is not None and self.checkpoint_epoch >= 1)


def prepare(
    space: str | SpaceModule | Space,
    *,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
    metric: str | None = None,
    mode: str | None = None,
    strategy: str = "random",
    scheduler: str = "asha",
    trials: int | None = None,
    max_epochs: int | None = None,
    grace_period: int = 1,
    reduction_factor: float = 3,
    seed: int = 0,
    resources: Resources = Resources(),
    concurrency: int | None = None,
    max_failures: int = 0,
    name: str | None = None,
    storage: str | None = None,
    tracking_uri: str | bool | None = None,
    experiment: str | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] = (),
    goal: float | None = None,
    time_budget_s: float | None = None,
) -> PreparedSweep:
    """Validate everything and load the data; raises ValueError (one line) before any compute."""
    module, sp = _resolve_module(space)
    metric = metric or (module.metric if module else None)
    mode = mode or (module.mode if module else None)
    if not metric:
        raise ValueError("metric: name the reported metric to optimise (e.g. metric='val_acc')")
    if mode not in ("max", "min"):
        raise ValueError(f"mode: must be 'max' or 'min', got {mode!r}")
    check_strategy(strategy)
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler: must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    max_epochs = max_epochs if max_epochs is not None else (module.max_epochs if module else None)
    if max_epochs is None:
        raise ValueError("max_epochs: give the epoch budget per trial (e.g. max_epochs=27)")
    check_budget(max_epochs, grace_period, reduction_factor)
    n = planned_trials(sp, strategy, trials)
    _whole("seed", seed, 0)
    if concurrency is not None:
        _whole("concurrency", concurrency, 1)
    _whole("max_failures", max_failures, 0)
    if goal is not None and (not isinstance(goal, (int, float)) or isinstance(goal, bool) or not math.isfinite(goal)):
        raise ValueError(f"goal: must be a finite number ({metric} that ends the sweep once reached), got {goal!r}")
    if time_budget_s is not None and (not isinstance(time_budget_s, (int, float)) or isinstance(time_budget_s, bool)
                                      or not 0 < time_budget_s < math.inf):
        raise ValueError(f"time_budget_s: must be a number of seconds > 0, got {time_budget_s!r}")
    if not isinstance(resources, Resources):
        raise ValueError(f"resources: must be hpsearch.Resources(cpus=..., gpus=...), got {resources!r}")
    if name is None:  # a random suffix keeps two sweeps started in the same second apart
        stem = module.name if module else "sweep"
        name = f"{stem}-{strategy}-{scheduler}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    if not _NAME.match(name):
        raise ValueError(f"name: letters, digits and _ . = - only (max 128), got {name!r}")
    train_fn = train or (module.train if module and module.train else None)
    if data is None and module is not None and module.dataset:
        data = module.dataset
    if train_fn is None:
        from hpsearch.train import train as reference_train

        train_fn = reference_train
        data = data if data is not None else "mnist1d"
    if not callable(train_fn):
        raise ValueError(f"train: must be a function train(config), got {type(train_fn).__name__}")
    if module is not None and getattr(train_fn, "__module__", None) in sys.modules and \
            sys.modules[train_fn.__module__].__file__ == str(module.path):
        # A space module is loaded from a path, not installed: workers cannot import it by name,
        # so Ray must ship its code (TRAIN and what it uses) by value.
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[train_fn.__module__])
    warm = [sp.validate_config(p) for p in points_to_evaluate]
    dataset = load_dataset(data) if data is not None else None
    from hpsearch.tracking import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    experiment = experiment or (module.name if module else "hpsearch")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ValueError(f"experiment: must be a non-empty name, got {experiment!r}")
    if uri:
        check_reachable(uri)  # an unreachable server fails here, before any trial runs
    settings = SweepSettings(
        name=name, space_path=str(module.path) if module else None, metric=metric, mode=mode,
        strategy=strategy, scheduler=scheduler, trials=n, max_epochs=max_epochs, grace_period=grace_period,
        reduction_factor=reduction_factor, seed=seed, cpus_per_trial=resources.cpus,
        gpus_per_trial=resources.gpus, concurrency=concurrency, max_failures=max_failures,
        dataset=dataset.name if dataset else None, storage=str(Path(storage or default_storage()).expanduser().resolve()),
        tracking_uri=uri, experiment=experiment, space=sp.to_dict(), goal=goal, time_budget_s=time_budget_s,
    )
    return PreparedSweep(settings, sp, train_fn, dataset, warm)


# -- the trial entry point --------------------------------------------------------------------

REUSED_KEY = "hpsearch_reused"  # in a replayed result: where the recorded result came from
_REPLAY_MARK = "replay.json"


def _trial_entry(
    config: dict[str, Any], *, train_fn: Callable[..., Any], data: Dataset | None, max_epochs: int, space: Space,
    reuse: Mapping[str, Replay] | None = None,
) -> None:
    """Calls the user's ``train(config)``, passing ``data`` / ``max_epochs`` if it declares them.

    Ray fills inactive conditional parameters with None; the user sees them absent, as in the space.
    A configuration with a recorded result (``reuse``) reports that result again instead.
    """
    replay = (reuse or {}).get(space.config_hash(config))
    if replay is not None and _replay(replay, max_epochs):
        return
    params = inspect.signature(train_fn).parameters
    kwargs: dict[str, Any] = {}
    if "data" in params:
        kwargs["data"] = data
    if "max_epochs" in params:
        kwargs["max_epochs"] = max_epochs
    train_fn(space.complete(config), **kwargs)


def _replay(replay: Replay, max_epochs: int) -> bool:
    """Report a recorded curve epoch by epoch, so the scheduler and searcher see it as if trained.

    Returns True when the curve covers the budget; False when training must go on from the
    recorded checkpoint (reported with the last replayed epoch, so ``load_checkpoint`` finds it).
    Each earlier replayed epoch carries a small marker checkpoint: a trial paused mid-replay
    (HyperBand) and resumed goes on replaying from there rather than from epoch 1.
    """
    import tempfile

    from ray import tune

    done = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            mark = Path(d, _REPLAY_MARK)
            if not mark.exists():
                return False  # resumed past the replay: the user's train() continues from its state
            done = int(json.loads(mark.read_text())["epoch"])
    whole = bool(replay.curve) and int(replay.curve[-1]["epoch"]) >= max_epochs
    upto = max_epochs if whole else replay.checkpoint_epoch
    import ray

    node = ray.get_runtime_context().get_node_id()
    for row in replay.curve:
        epoch = int(row["epoch"])
        if epoch <= done or epoch > upto:
            continue
        values = {**row, "node_id": node, REUSED_KEY: replay.source}
        if epoch == upto and not whole:
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(replay.checkpoint))
            continue
        with tempfile.TemporaryDirectory(prefix="hpsearch-replay-") as tmp:
            Path(tmp, _REPLAY_MARK).write_text(json.dumps({"epoch": epoch}))
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(tmp))
    return whole


# -- Ray ------------------------------------------------------------------------------------

def _quiet_ray() -> None:
    """Our progress bar replaces Ray's console output. Ray's new output engine prints an
    experiment box even at verbosity 0, the legacy one is silent there; and per-epoch checkpoints
    make Ray warn about its (intended) experiment snapshots once a second."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def connect(address: str | None) -> dict[str, float]:
    """Join ``address`` (``auto``, ``ray://host:port``, ``host:port``) or start Ray on this machine.

    Returns the cluster's resources. An already connected Ray (a notebook, a test session) is reused.
    """
    import ray

    if not ray.is_initialized():
        import logging

        # No dashboard (seconds of start-up); worker output stays in Ray's session logs.
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    return dict(ray.cluster_resources())


def _status(trial, max_epochs: int, ended: bool = False) -> str:
    """``ended``: called from on_trial_complete, before Ray marks the trial TERMINATED."""
    last = trial.last_result or {}
    if trial.status == "ERROR":
        return "failed"
    if trial.status == "TERMINATED" or ended:
        return "completed" if last.get("epoch", 0) >= max_epochs else "stopped"
    return "running" if trial.status in ("RUNNING", "PAUSED") else "pending"


def _error_text(trial) -> str | None:
    path = getattr(trial, "error_file", None) or (
        os.path.join(trial.local_path, "error.txt") if getattr(trial, "local_path", None) else None
    )
    if path and os.path.exists(path):
        text = Path(path).read_text(errors="replace").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1][:500] if lines else text[:500]
    return None


def records_from_trials(trials, space: Space, metric: str, max_epochs: int) -> list[TrialRecord]:
    out = []
    for t in trials:
        last = dict(t.last_result or {})
        out.append(TrialRecord(
            trial_id=t.trial_id, config=space.complete(t.config), status=_status(t, max_epochs),
            epochs=int(last.get("epoch", 0) or 0),
            metric=last.get(metric) if isinstance(last.get(metric), (int, float)) else None,
            metrics={k: last[k] for k in ("train_loss", "val_loss", "val_acc", metric) if k in last},
            error=_error_text(t) if t.status == "ERROR" else None,
            node=last.get("node_id"), path=_trial_dir(t),
            checkpoint=t.checkpoint.path if getattr(t, "checkpoint", None) is not None else None,
        ))
    return out


def _trial_dir(trial) -> str | None:
    # After a restore, Ray's local_path can name its staging folder rather than the storage.
    for folder in (getattr(trial, "path", None), getattr(trial, "local_path", None)):
        if folder and Path(folder, "result.json").exists():
            return folder
    return getattr(trial, "local_path", None)


def read_results(folder: str | os.PathLike | None) -> list[dict[str, Any]]:
    """Every result Ray persisted for a trial (its result.json, one JSON object a line)."""
    path = Path(folder, "result.json") if folder else None
    if not path or not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return out


def pick_best(records: Sequence[TrialRecord], mode: str) -> TrialRecord | None:
    scored = [r for r in records if r.metric is not None and r.status != "failed" and math.isfinite(r.metric)]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r.metric)


class Progress:
    """A live rich progress bar fed by a Ray Tune callback (instead of Ray's verbose tables)."""

    def __init__(self, settings: SweepSettings, expected_epochs: int, enabled: bool = True) -> None:
        self.settings, self.expected = settings, max(expected_epochs, 1)
        self.enabled = enabled
        self.epochs = 0
        self.counts = {"completed": 0, "stopped": 0, "failed": 0}
        self.running: set[str] = set()
        self.best: float | None = None
        self._lock = threading.Lock()
        self._bar = None

    def callback(self):
        return _ProgressCallback(self)

    def on_result(self, result: Mapping[str, Any]) -> None:
        with self._lock:
            self.epochs += 1
            value = result.get(self.settings.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                better = self.best is None or (value > self.best if self.settings.mode == "max" else value < self.best)
                self.best = value if better else self.best
        self.refresh()

    def on_end(self, trial, status: str) -> None:
        with self._lock:
            self.running.discard(trial.trial_id)
            self.counts[status if status in self.counts else "stopped"] += 1
        self.refresh()

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.settings.name, total=self.expected, status="starting")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self.refresh()
            self._bar.stop()

    def refresh(self) -> None:
        if self._bar is None:
            return
        c = self.counts
        done = c["completed"] + c["stopped"] + c["failed"]
        best = "-" if self.best is None else f"{self.best:.4g}"
        status = (f"{done}/{self.settings.trials} trials: {len(self.running)} running, {c['completed']} completed, "
                  f"{c['stopped']} stopped early, {c['failed']} failed | best {self.settings.metric} {best}")
        # Expected epochs come from the plan; schedulers may spend a little more, so grow the total.
        total = max(self.expected, self.epochs)
        self._bar.update(self._task, completed=self.epochs, total=total, status=status)


def _driver_callback_base():
    from ray.tune import Callback

    class DriverCallback(Callback):
        """A callback that lives on the driver only: Ray pickles callbacks into its experiment
        state, so the live objects (locks, clients, a terminal) are dropped from the pickle and
        re-supplied on resume."""

        def __getstate__(self):
            return {}

        def __setstate__(self, state):
            self.__dict__.update(state)

    return DriverCallback


class _ProgressCallback(_driver_callback_base()):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def _live(self) -> Progress | None:
        return getattr(self, "progress", None)

    def on_trial_start(self, iteration, trials, trial, **info):
        if self._live():
            self.progress.running.add(trial.trial_id)
            self.progress.refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self._live():
            self.progress.on_result(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self._live():
            self.progress.on_end(trial, _status(trial, self.progress.settings.max_epochs, ended=True))

    def on_trial_error(self, iteration, trials, trial, **info):
        if self._live():
            self.progress.on_end(trial, "failed")


def _run_config(prep: PreparedSweep, callbacks: Sequence[Any], stopper: "_Stop", verbose: int):
    from ray import tune

    s = prep.settings
    return tune.RunConfig(
        name=s.name, storage_path=s.storage, stop=stopper,
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        # Ray snapshots the experiment every num_to_keep trial checkpoints so that the state it
        # would resume from never names a deleted checkpoint; 2 halves those snapshots vs 1.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=list(callbacks), verbose=verbose,
    )


def _stopper_base():
    from ray import tune

    return tune.Stopper


class _Stop(_stopper_base()):
    """A trial stops at the epoch budget; every trial stops at the deadline (a nightly's, or the
    end of the time budget) or once a trial reaches the goal, if there is one.

    Ray's own ``time_budget_s`` counts seconds from each (re)start of the driver; a nightly run
    needs a time of day that also holds for a sweep resumed the next morning. Ray has no stopper
    that ends the whole experiment on a metric value (its dict form stops single trials).
    """

    def __init__(self, settings: SweepSettings, deadline: float | None = None) -> None:
        self.max_epochs, self.deadline, self.why = settings.max_epochs, deadline, "deadline"
        if settings.time_budget_s is not None:  # counted from this start, as Ray's time_budget_s
            end = time.time() + settings.time_budget_s
            if deadline is None or end < deadline:
                self.deadline, self.why = end, "time_budget"
        self.metric, self.mode, self.goal = settings.metric, settings.mode, settings.goal
        self.reached: str | None = None  # "goal", "time_budget" or "deadline", once it has stopped everything

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        if self.meets_goal(result):
            self.reached = self.reached or "goal"
        return int(result.get("epoch", 0) or 0) >= self.max_epochs

    def meets_goal(self, result: Mapping[str, Any]) -> bool:
        value = result.get(self.metric)
        return self.goal is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (value >= self.goal if self.mode == "max" else value <= self.goal)

    def stop_all(self) -> bool:
        if self.reached is None and self.deadline is not None and time.time() >= self.deadline:
            self.reached = self.why
        return self.reached is not None


def trainable_for(prep: PreparedSweep):
    from ray import tune

    s = prep.settings
    fn = tune.with_parameters(
        _trial_entry, train_fn=prep.train_fn, data=prep.data, max_epochs=s.max_epochs, space=prep.space,
        reuse={k: r for k, r in prep.reuse.items() if r.usable(s.max_epochs)},
    )
    return tune.with_resources(fn, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})


def run_prepared(
    prep: PreparedSweep,
    *,
    address: str | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> SweepResult:
    """Run a validated sweep on Ray and collect its result."""
    from ray import tune

    s = prep.settings
    _quiet_ray()
    connect(address)
    Path(s.storage, s.name).mkdir(parents=True, exist_ok=True)
    Path(s.storage, s.name, SETTINGS_FILE).write_text(json.dumps(asdict(s), indent=2))
    bar, tracker, live = _live_callbacks(prep, progress)
    stopper = _Stop(s, prep.deadline)
    tuner = tune.Tuner(
        trainable_for(prep),
        # Ray takes pre-set points only for keys its param_space names; the points themselves come
        # from the space (already validated), so the keys carry no Ray domain.
        param_space={name: None for name in prep.space.names},
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=s.mode, num_samples=s.trials,
            search_alg=make_search_alg(s.strategy, prep.space, s.metric, s.mode, s.trials, s.seed,
                                       s.concurrency, prep.points_to_evaluate),
            scheduler=make_scheduler(s.scheduler, s.max_epochs, s.grace_period, s.reduction_factor),
            # Reusing trial actors cuts per-trial start-up from about a second to tens of ms here;
            # it is safe because each trial builds its own model and optimizer from its config.
            reuse_actors=True,
            max_concurrent_trials=s.concurrency,
        ),
        run_config=_run_config(prep, [*live, *callbacks], stopper, verbose=0),
    )
    return _run(tuner, prep, bar, tracker, stopper)


def _live_callbacks(prep: PreparedSweep, progress: bool):
    """The progress bar and (when tracking is on) the MLflow tracker of a sweep about to run, with
    the driver callbacks that feed them."""
    s = prep.settings
    plan = plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor)
    bar = Progress(s, plan.total_epochs, enabled=progress)
    if not s.tracking_uri:
        return bar, None, [bar.callback(), _NoTensorBoard()]
    from hpsearch.tracking import MlflowCallback, SweepTracker

    tracker = SweepTracker(s, prep.space)
    return bar, tracker, [bar.callback(), MlflowCallback(tracker), _NoTensorBoard()]


def _logger_base():
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback


class _NoTensorBoard(_logger_base()):
    """Stands in for Ray's TensorBoard logger, so that Ray does not add its own.

    MLflow already holds every curve. Measured on 400 no-op trials, Ray's logger spent about a
    third of the driver's time: it imports torch into the driver (~2 s) and flushes an event file
    for every result. Ray's CSV and JSON loggers stay (resume and the nightly ledger read
    result.json).
    """

    def __init__(self) -> None:
        pass

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration, trial, result) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


def _run(tuner, prep: PreparedSweep, bar: Progress, tracker, stopper: _Stop) -> SweepResult:
    s = prep.settings
    start = time.time()
    try:
        with bar:
            grid = tuner.fit()
    except BaseException:
        if tracker is not None:
            tracker.writer.submit({"op": "set_status", "ref": "parent", "status": "FAILED"})
            tracker.close(Path(s.storage, s.name))
        raise
    wall = time.time() - start
    trials = _trials_of(grid)
    records = records_from_trials(trials, prep.space, s.metric, s.max_epochs)
    if stopper.reached:  # Ray marks the trials it never started as terminated too
        never_started = {t.trial_id for t in trials if not _started(t)}
        for r in records:
            if r.status == "stopped" and r.trial_id in never_started:
                r.status = "pending"
    result = SweepResult(s.name, str(Path(s.storage, s.name)), s.metric, s.mode, s.max_epochs, records, wall,
                         pick_best(records, s.mode), stopped_by=stopper.reached)
    if tracker is not None:
        _close_tracking(tracker, prep, result)
    return result


def _close_tracking(tracker, prep: PreparedSweep, result: SweepResult) -> None:
    """Best model and report (they read back from MLflow, so only once every write landed), the
    sweep's ending, and what could not be delivered kept on disk for ``hpsearch replay``."""
    import logging

    from hpsearch.tracking import drain_seconds

    tracker.flush()
    if tracker.writer.drain(drain_seconds()):
        try:
            model = best_model(prep, result.best)
            if model is not None and prep.data is not None:
                tracker.log_model(model, prep.data.x_val[:2])
            from hpsearch.analysis import log_report

            log_report(tracker.client, tracker.parent_id, tracker.sweep_data(result))
        except Exception as exc:  # the results are safe in MLflow; the extras must not lose them
            logging.getLogger(__name__).warning("best model / report not logged: %s: %s", type(exc).__name__, exc)
    tracker.finish(result)
    pending = tracker.close(result.path)
    result.tracking = {"uri": prep.settings.tracking_uri, "experiment_id": tracker.experiment_id,
                       "parent_run_id": tracker.parent_id, "children": tracker.children,
                       "pending": None if pending is None else {"path": str(pending[0]), "writes": pending[1]}}


def best_model(prep: PreparedSweep, best: TrialRecord | None):
    """The trained model of the best trial, from its last checkpoint; None if it holds no model.

    A checkpoint may be an ``nn.Module``, a dict with one under ``"model"``, or (the reference
    trainable) a dict whose ``"model"`` is a state dict, rebuilt here from the trial's config.
    """
    if best is None or not best.checkpoint:
        return None
    from torch import nn

    from hpsearch.session import read_checkpoint_dir

    state = read_checkpoint_dir(best.checkpoint)
    if isinstance(state, nn.Module):
        return state.eval()
    if not isinstance(state, dict):
        return None
    held = state.get("model")
    if isinstance(held, nn.Module):
        return held.eval()
    from hpsearch.train import build_model, train as reference_train

    if prep.train_fn is reference_train and isinstance(held, dict) and prep.data is not None:
        model = build_model(best.config, prep.data.num_features, prep.data.num_classes)
        model.load_state_dict(held)
        return model.eval()
    return None


def _started(trial) -> bool:
    """Whether Ray ever ran the trial (it notes the time it first set it RUNNING). A trial started
    just before the goal or deadline may end with no epoch: it is stopped, not pending, and has its
    child run."""
    return getattr(getattr(trial, "run_metadata", None), "start_time", None) is not None


def _trials_of(grid) -> list:
    # ResultGrid keeps the Trial objects it was built from; their status and error file are
    # what the table needs, and the public Result has neither the scheduler's stop nor the status.
    return list(grid._experiment_analysis.trials)


def sweep(
    space: str | SpaceModule | Space,
    *,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
    metric: str | None = None,
    mode: str | None = None,
    strategy: str = "random",
    scheduler: str = "asha",
    trials: int | None = None,
    max_epochs: int | None = None,
    grace_period: int = 1,
    reduction_factor: float = 3,
    seed: int = 0,
    resources: Resources = Resources(),
    concurrency: int | None = None,
    max_failures: int = 0,
    name: str | None = None,
    address: str | None = None,
    storage: str | None = None,
    tracking_uri: str | bool | None = None,
    experiment: str | None = None,
    goal: float | None = None,
    time_budget_s: float | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> SweepResult:
    """Run a hyperparameter sweep on Ray Tune and return the best trial and a table of all trials.

    Args:
        space: a space module path (``spaces/mlp.py``), short name (``mlp``), ``SpaceModule`` or ``Space``.
        train: ``train(config)`` calling ``hpsearch.report(epoch=..., **metrics)``; default: the
            module's ``TRAIN`` or the reference PyTorch trainable.
        data: dataset name, ``Dataset`` or a function returning one; passed to ``train`` if it
            declares a ``data`` argument, through Ray's object store (put once).
        strategy: ``grid``, ``random`` or ``tpe``. scheduler: ``fifo``, ``asha`` or ``hyperband``.
        trials: number of trials (grid: defaults to the whole grid).
        max_epochs, grace_period, reduction_factor: the budget, in epochs.
        resources: per trial, e.g. ``Resources(cpus=1, gpus=0.25)``.
        address: None starts Ray here; ``auto`` or ``ray://host:port`` joins a cluster.
        tracking_uri: MLflow store; None: $MLFLOW_TRACKING_URI, else SQLite at ``mlflow/mlflow.db``;
            False: no tracking. experiment: MLflow experiment (default: the space module's name).
        goal: end the sweep as soon as a trial reports the metric at or beyond this value (running
            trials are stopped, the rest not started), e.g. ``goal=0.9`` for ``val_acc``.
        time_budget_s: end the sweep the same way this many seconds after it starts.

    Example:
        >>> hpsearch.sweep("mlp", strategy="tpe", trials=27, max_epochs=27)  # doctest: +SKIP
    """
    prep = prepare(
        space, train=train, data=data, metric=metric, mode=mode, strategy=strategy, scheduler=scheduler,
        trials=trials, max_epochs=max_epochs, grace_period=grace_period, reduction_factor=reduction_factor,
        seed=seed, resources=resources, concurrency=concurrency, max_failures=max_failures, name=name,
        storage=storage, tracking_uri=tracking_uri, experiment=experiment, goal=goal, time_budget_s=time_budget_s,
    )
    return run_prepared(prep, address=address, callbacks=callbacks, progress=progress)


def load_settings(name: str, storage: str | None = None) -> SweepSettings:
    """The recorded settings of a sweep, by name."""
    root = Path(storage or default_storage()).expanduser()
    path = root / name / SETTINGS_FILE
    if not path.exists():
        known = sorted(p.parent.name for p in root.glob(f"*/{SETTINGS_FILE}")) if root.is_dir() else []
        raise ValueError(f"name: no sweep {name!r} under {str(root)!r} (known: {', '.join(known[-5:]) or 'none'})")
    return SweepSettings(**json.loads(path.read_text()))


def resume_sweep(
    name: str,
    *,
    storage: str | None = None,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
    address: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> SweepResult:
    """Finish an interrupted sweep: finished trials stay, unfinished ones continue from checkpoints.

    A sweep started from a space module needs only its name; one started from a ``Space`` object
    needs ``train`` (and ``data``) again, since functions are not recorded.
    """
    prep = prepare_resume(name, storage=storage, train=train, data=data)
    return resume_prepared(prep, address=address, progress=progress, callbacks=callbacks)


def prepare_resume(
    name: str,
    *,
    storage: str | None = None,
    train: Callable[..., Any] | None = None,
    data: str | Dataset | Callable[[], Dataset] | None = None,
) -> PreparedSweep:
    """A recorded sweep, validated again (its module, data and tracking store) before Ray starts."""
    s = load_settings(name, storage)
    if s.space_path is None and train is None:
        raise ValueError(f"train: sweep {name!r} was started from a Space object; pass train= to resume it")
    space_or_module: Any = load_space_module(s.space_path) if s.space_path else Space.from_dict(s.space)
    prep = prepare(
        space_or_module, train=train, data=data if data is not None else s.dataset, metric=s.metric, mode=s.mode,
        strategy=s.strategy, scheduler=s.scheduler, trials=s.trials, max_epochs=s.max_epochs,
        grace_period=s.grace_period, reduction_factor=s.reduction_factor, seed=s.seed,
        resources=Resources(s.cpus_per_trial, s.gpus_per_trial), concurrency=s.concurrency,
        max_failures=s.max_failures, name=s.name, storage=s.storage,
        tracking_uri=s.tracking_uri if s.tracking_uri else False, experiment=s.experiment, goal=s.goal,
        time_budget_s=s.time_budget_s,
    )
    prep.space = Space.from_dict(s.space)  # the space as it was when the sweep started
    return prep


def resume_prepared(
    prep: PreparedSweep, *, address: str | None = None, progress: bool = True, callbacks: Sequence[Any] = ()
) -> SweepResult:
    from ray import tune

    s = prep.settings
    _quiet_ray()
    connect(address)
    path = str(Path(s.storage, s.name))
    if not tune.Tuner.can_restore(path):
        raise ValueError(f"name: sweep {s.name!r} has no Ray experiment state under {path!r} to resume")
    tuner = tune.Tuner.restore(path, trainable=trainable_for(prep), resume_unfinished=True, resume_errored=False)
    # Ray restores the RunConfig it pickled, whose driver callbacks were pickled empty (see
    # DriverCallback); hand it live ones, and this start's deadline. get_run_config() returns the
    # object the run will use.
    bar, tracker, live = _live_callbacks(prep, progress)
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = [*live, *callbacks]
    run_config.stop = stopper = _Stop(s, prep.deadline)
    if any(stopper.meets_goal(r) for d in Path(path).glob("*/") for r in read_results(d)):
        stopper.reached = "goal"  # reached before the interruption: end now instead of going on
    return _run(tuner, prep, bar, tracker, stopper)
