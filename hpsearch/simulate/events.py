"""What a sweep will cost and which settings win: recorded curves replayed on a virtual clock.

A discrete-event simulation of a sweep on ``workers`` workers. The decisions are made by the same
code a real sweep runs: Ray Tune's ``FIFOScheduler``, ``ASHAScheduler`` and ``HyperBandScheduler``
built by ``hpsearch.ray.schedulers.make_scheduler``, and hpsearch's strategies from
``hpsearch.search.strategies`` (grid and random: the configurations ``initial_points`` gives, in the order
Ray's ``BasicVariantGenerator`` runs them; TPE: the ``OptunaSearch`` a sweep uses). No scheduler is
re-implemented: this module only plays the part of Ray's ``TuneController`` around them, on a
clock that jumps from event to event, and answers each epoch from a ``CurveTable``.

What the controller part mirrors (Ray 2.60, ``ray/tune/execution/tune_controller.py``):
- trials are created as the searcher allows: grid and random keep up to 200 pending (all of a
  small sweep at the start), a TPE searcher one, so TPE proposes each trial knowing every result
  reported before it starts;
- a free worker takes the trial the scheduler chooses (``choose_trial_to_run``), else the oldest
  pending trial; a paused trial runs again only when the scheduler chooses it;
- after each epoch the scheduler decides: CONTINUE (the searcher sees the result), PAUSE (the
  searcher sees it; the worker is freed), STOP (the scheduler and searcher are told the trial is
  complete). A trial that reaches its last epoch ends there whatever was decided;
- HyperBand's ``stop_trial`` calls are served as ``TuneController.stop_trial`` serves them.
ASHA draws each trial's bracket from NumPy's global generator: seeded per run, restored after.

Costs outside training come from measurements (``Costs``): the benchmark's sweep start-up, the
time between one trial's end and the next one's first epoch on a worker, the per-epoch report, the
end of a sweep. A paused trial that resumes pays the start again. Epoch times are the table's,
scaled by ``epoch_scale``.

Optuna used directly (``optuna_*`` arms: TPE with a successive-halving or Hyperband pruner, or
none) runs on the same clock through ask/tell, ``trial.report`` and ``trial.should_prune``, as a
user would run it with one process per worker on a shared study.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from hpsearch.ray import compat
from hpsearch.search.strategies import define_by_run, initial_points
from hpsearch.settings import check_budget
from hpsearch.simulate.curves import CurveTable
from hpsearch.vocab import Mode, Scheduler, Strategy, whole

OPTUNA_PRUNERS = ("none", "sha", "hyperband")  # Optuna used directly: TPE with one of these
# A sweep's end (its report's rows and plots, its trials' last writes) grows with the trials it
# started: on the 2-core reference machine 3.1 s after 16 trials, 8.7 s after 96 (2026-12-05,
# profiled), ~0.07 s a trial. One recorded sweep cannot tell that slope from the fixed part.
END_TRIAL_S = 0.07


@dataclass(frozen=True)
class Costs:
    """Seconds a real sweep spends outside training. Defaults: the committed full benchmark run of
    2026-11-30 (``scripts/bench/results/issue-12/full-tracking-scale-2026-11-30.json``, hpsearch
    random/FIFO with SQLite tracking, medians of 5): 6.8 s before the first trial, 0.40 s between
    trials, 1% of the worker time inside report (~5 ms an epoch there), 2.0 s after the last report."""

    start_s: float = 6.8
    trial_s: float = 0.40
    epoch_s: float = 0.005
    end_s: float = 2.0
    epoch_scale: float = 1.0
    end_trial_s: float = 0.0  # the end's seconds per trial started (its report's rows and plots)

    def __post_init__(self) -> None:
        for name in ("start_s", "trial_s", "epoch_s", "end_s", "end_trial_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise ValueError(f"{name}: must be a number >= 0, got {value!r}")
        if not isinstance(self.epoch_scale, (int, float)) or not self.epoch_scale > 0 or math.isinf(self.epoch_scale):
            raise ValueError(f"epoch_seconds: must be > 0, got a scale of {self.epoch_scale!r}")

    @classmethod
    def measured(cls, intervals: Iterable[tuple[float, float]], end_s: float,
                 end_trial_s: float = END_TRIAL_S) -> "Costs | None":
        """The costs a recorded sweep shows. ``intervals``: each trial's (start, last report) in
        seconds from the sweep's start, run without pauses (FIFO or ASHA); ``end_s``: when the
        sweep ended. The trials are put back on the workers there were (the most running at once),
        each on the one freed first, as Ray's controller starts them: the median gap between a
        trial's last report and the next start on that worker is ``trial_s``; the first trials'
        median start, less that, is ``start_s``; the end less the last report, less ``end_trial_s``
        for each trial, is ``end_s``. The per-epoch report stays the default: the recorded epoch
        times hold it. None: too few trials to tell (under three hand-overs).

            >>> c = Costs.measured([(5, 9), (5, 10), (9.5, 13), (10.5, 14), (13.5, 17), (14.5, 18)], 20.75, 0.125)
            >>> c.start_s, c.trial_s, c.end_s
            (4.5, 0.5, 2.0)
            >>> Costs.measured([(5, 9), (5, 10), (9.5, 13)], 15.0) is None
            True
        """
        spans = sorted((float(a), float(b)) for a, b in intervals if b >= a)
        running = workers = 0
        for _, step in sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans]):  # an end before a start
            running += step
            workers = max(workers, running)
        if len(spans) < workers + 3:
            return None
        free = [(-math.inf, i) for i in range(workers)]  # -inf: a worker no trial has used yet
        firsts, gaps = [], []
        for a, b in spans:
            freed, i = heapq.heappop(free)
            if freed == -math.inf:
                firsts.append(a)
            else:
                gaps.append(max(a - freed, 0.0))
            heapq.heappush(free, (b, i))
        trial_s = float(np.median(gaps))
        return cls(start_s=max(float(np.median(firsts)) - trial_s, 0.0), trial_s=trial_s,
                   end_s=max(end_s - max(b for _, b in spans) - end_trial_s * len(spans), 0.0), end_trial_s=end_trial_s)


@dataclass(frozen=True)
class Setting:
    """One way to run the sweep. ``strategy`` is grid, random or tpe (through Ray), or ``optuna``
    (Optuna used directly, ``scheduler`` then names its pruner: none, sha or hyperband)."""

    strategy: str = "random"
    scheduler: str = "asha"
    trials: int = 27
    max_epochs: int = 81
    grace_period: int = 1
    reduction_factor: float = 3
    workers: int = 2
    tpe_pruned: bool = True  # TPE told of stopped trials as pruned (hpsearch.ray.searchers); False: Ray's OptunaSearch as is
    goal: float | None = None  # end the sweep once a trial reports this (the run option of that name)
    # Configurations run first, as (name, value) pairs (hashable): a sweep's points to evaluate
    points: tuple[tuple[tuple[str, Any], ...], ...] = ()

    def __post_init__(self) -> None:
        if self.strategy == "optuna":
            if self.scheduler not in OPTUNA_PRUNERS:
                raise ValueError(f"scheduler: Optuna's pruner must be one of {', '.join(OPTUNA_PRUNERS)}, got {self.scheduler!r}")
        else:
            object.__setattr__(self, "strategy", str(Strategy.parse(self.strategy)))
            object.__setattr__(self, "scheduler", str(Scheduler.parse(self.scheduler)))
        whole("trials", self.trials, 1)
        whole("workers", self.workers, 1)
        check_budget(self.max_epochs, self.grace_period, self.reduction_factor)

    @property
    def label(self) -> str:
        if self.strategy == "optuna":
            return f"optuna tpe/{self.scheduler}" + (f" rf={self.reduction_factor:g}" if self.scheduler != "none" else "")
        tail = "" if self.scheduler == "fifo" else f" rf={self.reduction_factor:g}"
        tail += f" grace={self.grace_period}" if self.scheduler == "asha" and self.grace_period != 1 else ""
        tpe = " (Ray's OptunaSearch)" if self.strategy == "tpe" and not self.tpe_pruned else ""
        return f"{self.strategy}/{self.scheduler}{tail}{tpe}"


@dataclass
class Run:
    """One simulated sweep."""

    setting: Setting
    seed: int
    wall_s: float = 0.0
    epochs: int = 0
    trials: int = 0
    reached: dict[int, int] = field(default_factory=dict)  # epoch -> trials that trained to it
    best: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best so far) at each improvement
    best_epochs: list[int] = field(default_factory=list)  # the sweep's epochs so far at each improvement
    epoch_times: list[float] = field(default_factory=list)  # seconds into the sweep at which each epoch ended, in order
    firsts: list[float] = field(default_factory=list)  # seconds into the sweep at which each trial's first epoch ended
    distances: list[float] = field(default_factory=list)  # per trial: to its nearest recorded configuration
    rows: list[int] = field(default_factory=list)  # per trial: the table row that answered it
    failed: int = 0

    @property
    def best_value(self) -> float | None:
        return self.best[-1][1] if self.best else None

    def best_within(self, seconds: float = math.inf, epochs: float = math.inf) -> float | None:
        """The best value reported by ``seconds`` into the sweep and within its first ``epochs`` epochs."""
        within = [v for (t, v), e in zip(self.best, self.best_epochs) if t <= seconds and e <= epochs]
        return within[-1] if within else None

    def time_to(self, target: float, mode: str) -> float | None:
        """Seconds until the best reported value first reached ``target`` (None: never)."""
        for t, v in self.best:
            if Mode(mode).reaches(v, target):
                return t
        return None


class _Controller:
    """The part of Ray's ``TuneController`` the schedulers call: ``get_trials`` and ``stop_trial``."""

    def __init__(self, sim: "_RaySim") -> None:
        self.sim = sim

    def get_trials(self):
        return self.sim.trials

    def stop_trial(self, trial) -> None:
        self.sim.stop(trial, from_scheduler=True)


class _RaySim:
    def __init__(self, table: CurveTable, setting: Setting, seed: int, costs: Costs) -> None:
        from ray.tune.experiment import Trial  # heavy (Ray Tune): only when a simulation runs
        from ray.tune.schedulers import TrialScheduler

        from hpsearch.ray.schedulers import make_scheduler
        from hpsearch.ray.searchers import make_search_alg

        self.Trial, self.TS = Trial, TrialScheduler
        self.table, self.s, self.costs = table, setting, costs
        self.run = Run(setting, seed)
        self.ctl = _Controller(self)
        self.scheduler = make_scheduler(setting.scheduler, setting.max_epochs, setting.grace_period, setting.reduction_factor)
        self.scheduler.set_search_properties(table.metric, table.mode)
        space = table.space
        if setting.strategy == "tpe":
            self.searcher = make_search_alg("tpe", space, table.metric, table.mode, setting.trials, seed,
                                            points_to_evaluate=[dict(p) for p in setting.points],
                                            max_epochs=setting.max_epochs if setting.tpe_pruned else None)
            self.points: Iterable[dict] | None = None
            self.max_pending = 1
        else:
            self.searcher = None
            first = [dict(p) for p in setting.points]  # as make_search_alg puts a sweep's points first
            self.points = iter((first + initial_points(space, setting.strategy, setting.trials, seed))[: setting.trials])
            self.max_pending = 200
        self.trials: list = []
        # Trials waiting to start, oldest first: counted at every event, so kept apart rather than
        # found by scanning every trial (that scan was O(trials) per simulated epoch).
        self.pending: dict[str, Any] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[float, int, str]] = []
        self.free = setting.workers
        self.clock = costs.start_s
        self.created = 0
        self.seq = 0

    # -- the controller loop ------------------------------------------------------------------

    def simulate(self) -> Run:
        while True:
            self.add_trials()
            self.start_trials()
            if not self.events:
                break
            self.clock, _, trial_id = heapq.heappop(self.events)
            self.finish_epoch(self.info[trial_id]["trial"])
            if _reached(self.run, self.s.goal, self.table.mode):
                break
        self.run.wall_s = self.clock + self.costs.end_s + self.costs.end_trial_s * len(self.run.firsts)
        return self.run

    def add_trials(self) -> None:
        pending = len(self.pending)
        while pending < self.max_pending and self.created < self.s.trials:
            trial_id = f"{self.created:05d}"
            if self.searcher is not None:
                config = self.searcher.suggest(trial_id)
            else:
                config = next(self.points, None)  # type: ignore[arg-type]
            if config is None:
                self.created = self.s.trials
                break
            trial = compat.stub_trial(config, trial_id)
            self.pending[trial_id] = trial
            row, distance = self.table.nearest(config)
            self.info[trial_id] = {"trial": trial, "row": row, "epoch": 0}
            self.run.rows.append(row)
            self.run.distances.append(distance)
            self.trials.append(trial)
            self.scheduler.on_trial_add(self.ctl, trial)
            self.created += 1
            pending += 1

    def start_trials(self) -> None:
        while self.free > 0:
            trial = self.scheduler.choose_trial_to_run(self.ctl)
            if trial is None:
                trial = next(iter(self.pending.values()), None)
            if trial is None:
                return
            info = self.info[trial.trial_id]
            if info["epoch"] == 0:
                self.run.trials += 1
            trial.status = self.Trial.RUNNING
            self.pending.pop(trial.trial_id, None)
            self.free -= 1
            self.schedule_epoch(trial, self.costs.trial_s)
            self.add_trials()  # Ray refills its queue of pending trials each step

    def limit(self, row: int) -> int:
        """The epoch after which a trial's function returns: the budget, or where a whole recorded
        curve ends (a failed one fails in the epoch after its last)."""
        return self.s.max_epochs if self.table.failed[row] else min(self.s.max_epochs, int(self.table.lengths[row]))

    def schedule_epoch(self, trial, extra: float = 0.0) -> None:
        info = self.info[trial.trial_id]
        train = info["epoch"] < self.limit(info["row"]) or self.table.failed[info["row"]]
        seconds = self.table.epoch_time(info["row"], info["epoch"]) * self.costs.epoch_scale + self.costs.epoch_s if train else 0.0
        when = self.clock + extra + seconds
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, trial.trial_id))

    def finish_epoch(self, trial) -> None:
        info = self.info[trial.trial_id]
        row, epoch = info["row"], info["epoch"] + 1
        if epoch > self.limit(row):
            # A trial paused at its last epoch (HyperBand does that) resumes only to return at once:
            # Tune sees it done and completes it.
            self.stop(trial)
            return
        value = self.table.values[row, epoch - 1]
        if math.isnan(value):  # the recorded trial failed in this epoch
            self.run.failed += 1
            trial.status = self.Trial.ERROR
            self.scheduler.on_trial_error(self.ctl, trial)
            if self.searcher is not None:
                self.searcher.on_trial_complete(trial.trial_id, error=True)
            self.free += 1
            return
        info["epoch"] = epoch
        self.run.epochs += 1
        self.run.epoch_times.append(self.clock)
        self.run.reached[epoch] = self.run.reached.get(epoch, 0) + 1
        if epoch == 1:
            self.run.firsts.append(self.clock)
        value = float(value)
        if not self.run.best or Mode(self.table.mode).better(value, self.run.best[-1][1]):
            self.run.best.append((self.clock, value))
            self.run.best_epochs.append(self.run.epochs)
        result = {self.table.metric: value, "epoch": epoch, "training_iteration": epoch,
                  "time_total_s": self.clock, "trial_id": trial.trial_id, "done": False}
        decision = self.scheduler.on_trial_result(self.ctl, trial, result)
        if decision == self.TS.CONTINUE and epoch >= self.limit(row):
            decision = self.TS.STOP  # the trainable returns after its last epoch
        compat.set_last_result(trial, result)
        if decision == self.TS.STOP:
            self.stop(trial)
            return
        if self.searcher is not None:
            self.searcher.on_trial_result(trial.trial_id, result)
        if decision == self.TS.PAUSE:
            trial.status = self.Trial.PAUSED
            self.free += 1
            return
        self.schedule_epoch(trial)

    def stop(self, trial, from_scheduler: bool = False) -> None:
        """``TuneController.stop_trial``: a pending or paused trial is removed, a running one completes."""
        if trial.status in (self.Trial.ERROR, self.Trial.TERMINATED):
            return
        if trial.status in (self.Trial.PENDING, self.Trial.PAUSED):
            self.scheduler.on_trial_remove(self.ctl, trial)
            if self.searcher is not None:
                self.searcher.on_trial_complete(trial.trial_id)
        else:
            last = trial.last_result
            self.scheduler.on_trial_complete(self.ctl, trial, last)
            if self.searcher is not None:
                self.searcher.on_trial_complete(trial.trial_id, result=last)
            if from_scheduler:  # not reached with Ray 2.60 (HyperBand stops only paused trials), kept exact
                self.events = [e for e in self.events if e[2] != trial.trial_id]
                heapq.heapify(self.events)
            self.free += 1
        trial.status = self.Trial.TERMINATED
        self.pending.pop(trial.trial_id, None)


def _reached(run: Run, goal: float | None, mode: str) -> bool:
    return goal is not None and bool(run.best) and Mode(mode).reaches(run.best[-1][1], goal)


def _simulate_optuna(table: CurveTable, s: Setting, seed: int, costs: Costs) -> Run:
    import optuna  # heavy: only when a simulation runs

    pruner = {
        "none": lambda: optuna.pruners.NopPruner(),
        "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=s.grace_period, reduction_factor=int(s.reduction_factor)),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=s.grace_period, max_resource=s.max_epochs,
                                                            reduction_factor=int(s.reduction_factor)),
    }[s.scheduler]()
    study = optuna.create_study(direction=Mode(table.mode).direction,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    suggest = define_by_run(table.space)
    run = Run(s, seed)
    events: list[tuple[float, int, int]] = []
    running: dict[int, dict[str, Any]] = {}
    asked = 0

    def start(now: float) -> None:
        nonlocal asked
        trial = study.ask()
        constants = suggest(trial)
        row, distance = table.nearest({**trial.params, **constants})
        run.rows.append(row)
        run.distances.append(distance)
        run.trials += 1
        running[trial.number] = {"trial": trial, "row": row, "epoch": 0}
        asked += 1
        push(trial.number, now + costs.trial_s)

    def push(number: int, now: float) -> None:
        info = running[number]
        heapq.heappush(events, (now + table.epoch_time(info["row"], info["epoch"]) * costs.epoch_scale + costs.epoch_s,
                                number, number))

    clock = costs.start_s
    for _ in range(min(s.workers, s.trials)):
        start(clock)
    while events:
        clock, number, _ = heapq.heappop(events)
        info = running[number]
        trial, row = info["trial"], info["row"]
        epoch = info["epoch"] + 1
        value = table.values[row, epoch - 1]
        done = True
        if math.isnan(value):
            run.failed += 1
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            info["epoch"] = epoch
            run.epochs += 1
            run.epoch_times.append(clock)
            run.reached[epoch] = run.reached.get(epoch, 0) + 1
            if epoch == 1:
                run.firsts.append(clock)
            value = float(value)
            if not run.best or Mode(table.mode).better(value, run.best[-1][1]):
                run.best.append((clock, value))
                run.best_epochs.append(run.epochs)
            trial.report(value, epoch)
            if epoch >= s.max_epochs or (epoch >= table.lengths[row] and not table.failed[row]):
                study.tell(trial, value)
            elif trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                done = False
                push(number, clock)
        if _reached(run, s.goal, table.mode):
            break
        if done:
            del running[number]
            if asked < s.trials:
                start(clock)
    run.wall_s = clock + costs.end_s + costs.end_trial_s * len(run.firsts)
    return run


def simulate(table: CurveTable, setting: Setting, seed: int, costs: Costs = Costs()) -> Run:
    """One simulated sweep of ``setting`` with ``seed``, answered from ``table``."""
    if setting.max_epochs > table.max_epochs:
        raise ValueError(f"max_epochs: the table's curves end at epoch {table.max_epochs}, got max_epochs={setting.max_epochs}")
    import optuna  # Optuna: only when it samples or ranks

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a study per simulated sweep: no line each
    if setting.strategy == "optuna":
        return _simulate_optuna(table, setting, seed, costs)
    state = np.random.get_state()
    np.random.seed(seed)  # ASHA draws brackets from the global generator (one bracket: a draw all the same)
    try:
        return _RaySim(table, setting, seed, costs).simulate()
    finally:
        np.random.set_state(state)
