"""Settings that fit a budget (``--budget``), chosen by simulation on recorded curves.

Given what a sweep may spend and what the user set, the settings they did not set (trials, grace
period, reduction factor, concurrency, and the scheduler unless named) are chosen to maximize the
best metric expected at the budget: candidates are screened over a few seeds on the space's best
recorded curves (``sources.find_table``: a table shipped beside the module, else the space's own
earlier sweep), the leaders and the defaults are simulated over 30 seeds, and the winner is the one
with the best median metric at the budget (ties: the better mean, then one whose sweeps end within
the budget in 9 of 10 seeds, then the cheaper), the defaults included. The sweep's stopper ends it
when the budget is spent (``hpsearch.ray.stopper``), so a setting that would overrun is judged by
what it has found when the budget ends. The seconds outside training are those the space's newest
FIFO or ASHA sweep in the store showed (``sources.earlier_costs``), else the benchmark machine's.
Without curves, the trial count comes from the plan's arithmetic alone, and the choice says so.

No library chooses scheduler settings for a budget (Ray Tune and Optuna take them as given), hence
this module; the simulations are Ray's own schedulers replayed (``events``).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from dataclasses import dataclass, field, replace
from typing import Collection, Iterator, Sequence

import numpy as np

from hpsearch.budget import Budget
from hpsearch.search.schedulers import plan_budget
from hpsearch.simulate.curves import CurveTable, check_table_fits, table_beside
from hpsearch.simulate.events import Costs, Run, Setting
from hpsearch.simulate.explain import measure_epoch_seconds
from hpsearch.simulate.many import simulate_many
from hpsearch.simulate.sources import earlier_costs, earlier_sweep, find_table, store_if_any
from hpsearch.space.modules import load_space_module
from hpsearch.text import duration
from hpsearch.vocab import Mode

SEEDS_SCREEN = 6  # seeds per candidate when screening
SEEDS_FINAL = 30  # seeds for the leaders and the defaults: the bands printed
FINALISTS = 3
GRACE_PERIODS = (1, 2, 4)
REDUCTION_FACTORS = (2, 3, 4)
MAX_TRIALS = 400  # a candidate's trials at most: a simulated sweep of more takes seconds a seed
TUNED = ("scheduler", "trials", "grace_period", "reduction_factor", "concurrency")  # what a budget may choose


def band(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, 10th and 90th percentile (NaN left out; all NaN if nothing else)."""
    a = np.asarray(values, float)
    if not len(a) or np.isnan(a).all():
        return math.nan, math.nan, math.nan
    return float(np.nanmedian(a)), float(np.nanpercentile(a, 10)), float(np.nanpercentile(a, 90))


@dataclass
class Scored:
    """One setting over seeds, judged against the budget."""

    setting: Setting
    runs: list[Run]
    budget: Budget
    epoch_s: float
    units: float
    mode: str

    end_s: float = Costs().end_s  # seconds a sweep takes after the stopper ends it
    end_trial_s: float = Costs().end_trial_s  # and per trial it started

    def cut(self, run: Run) -> tuple[float, int]:
        """The run's wall-clock and epochs as the sweep's stopper leaves them: ended when the budget is
        spent (then the end: ``end_s``, and ``end_trial_s`` per trial started), or its own where its
        training ends first."""
        b, times = self.budget, run.epoch_times
        if b.kind == "wall":
            limit = b.amount
        else:
            allowed = int(b.amount if b.kind == "epochs" else b.amount * 3600 / max(self.epoch_s * self.units, 1e-12))
            limit = times[allowed - 1] if 0 < allowed < len(times) else (math.inf if allowed else 0.0)
        if not times or times[-1] <= limit:
            return run.wall_s, run.epochs
        return limit + self.end_s + self.end_trial_s * bisect.bisect_right(run.firsts, limit), \
            bisect.bisect_right(times, limit)

    def spent(self, run: Run, cut: bool = True) -> float:
        wall, epochs = self.cut(run) if cut else (run.wall_s, run.epochs)
        return self.budget.spent(wall, epochs, epochs * self.epoch_s, self.units)

    def best_at_budget(self, run: Run) -> float | None:
        if self.budget.kind == "wall":
            return run.best_within(seconds=self.budget.amount)
        if self.budget.kind == "epochs":
            return run.best_within(epochs=self.budget.amount)
        return run.best_within(epochs=self.budget.amount * 3600 / max(self.epoch_s * self.units, 1e-12))

    @property
    def spend(self) -> tuple[float, float, float]:
        """What the sweep spends, in the budget's unit, ended by the budget where it would overrun."""
        return band([self.spent(r) for r in self.runs])

    @property
    def wall(self) -> tuple[float, float, float]:
        return band([self.cut(r)[0] for r in self.runs])

    @property
    def epochs(self) -> tuple[float, float, float]:
        return band([self.cut(r)[1] for r in self.runs])

    @property
    def bests(self) -> list[float]:
        """Per run, the best metric found by the time the budget is spent (NaN: none)."""
        return [math.nan if (v := self.best_at_budget(r)) is None else v for r in self.runs]

    @property
    def best(self) -> tuple[float, float, float]:
        """The best metric found by the time the budget is spent: median, 10th and 90th percentile."""
        return band(self.bests)

    @property
    def fits(self) -> bool:
        """Whether 9 of 10 simulated sweeps end before the budget does."""
        return band([self.spent(r, cut=False) for r in self.runs])[2] <= self.budget.amount

    def rank(self) -> tuple:
        """Smaller is better: the median best at the budget first (the sweep's stopper ends the ones
        that overrun, so that is what each finds), then the mean (medians tie often: the same
        configuration found by both), then finishing within it, then spending less."""
        sign = 1.0 if Mode(self.mode) is Mode.MAX else -1.0
        bests = self.bests  # read once: each is a scan of a run's improvements
        mid, mean = band(bests)[0], (float(np.nanmean(bests)) if not np.isnan(bests).all() else math.nan)
        return tuple(math.inf if math.isnan(x) else -sign * x for x in (mid, mean)) + (not self.fits, self.spend[0])


@dataclass
class Forecast:
    """The chosen setting's simulated sweeps, kept for the sweep to re-forecast its spending as it
    runs (``hpsearch.ray.callbacks.BudgetWatch``): each seed's epoch end times, wall and epochs.
    Small and picklable: a ray:// sweep's driver takes it to the cluster inside ``PreparedSweep``.

    Re-forecasting starts each simulated sweep from where the real one is (its epochs so far):
    what that simulated sweep had left, at the epoch time the real one now shows, added to what the
    real one has spent."""

    budget: Budget
    epoch_s: float  # seconds per epoch the promise assumed
    units: float  # what a trial holds of a worker-hour budget's resource
    end_s: float  # seconds a sweep spends after its last epoch
    # What the chosen setting's sweeps would spend if nothing stopped them (median, 10th, 90th
    # percentile): a setting chosen to be ended by the budget overruns by design, not by surprise.
    promise: tuple[float, float, float]
    seeds: list[tuple[list[float], float, int]]  # per simulated sweep: epoch end times, wall, epochs

    @classmethod
    def of(cls, scored: "Scored", costs: Costs) -> "Forecast":
        return cls(scored.budget, scored.epoch_s, scored.units, costs.end_s,
                   band([scored.spent(r, cut=False) for r in scored.runs]),
                   [(list(r.epoch_times), r.wall_s, r.epochs) for r in scored.runs])

    def at(self, epochs: int, elapsed_s: float, worker_s: float, epoch_s_now: float) -> tuple[float, float, float]:
        """What the sweep will have spent at its end (median, 10th, 90th percentile over the seeds),
        ``epochs`` epochs and ``elapsed_s`` seconds into it, ``worker_s`` of trial time spent, epochs
        now taking ``epoch_s_now`` seconds."""
        ratio = epoch_s_now / self.epoch_s if self.epoch_s > 0 else 1.0
        out = []
        for times, wall, total in self.seeds:
            left = max(total - epochs, 0)
            if self.budget.kind == "epochs":
                out.append(float(epochs + left))
            elif self.budget.kind == "wall":
                done_at = times[min(epochs, len(times)) - 1] if epochs and times else 0.0
                out.append(elapsed_s + max(wall - self.end_s - done_at, 0.0) * ratio + self.end_s)
            else:
                out.append((worker_s + left * epoch_s_now) * self.units / 3600)
        return band(out)

    def overrun(self, forecast: tuple[float, float, float]) -> bool:
        """Whether a forecast's median lies beyond the promised band."""
        return forecast[0] > self.promise[2]


@dataclass
class BudgetChoice:
    """What ``--budget`` chose, and why. ``chosen`` is None without recorded curves (``changes``
    then holds only the trial count the plan's arithmetic fits)."""

    budget: Budget
    changes: dict[str, object]
    chosen: Scored | None = None
    runner_up: Scored | None = None
    defaults: Scored | None = None
    source: str = ""
    screened: int = 0
    kept: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    epoch_s: float | None = None  # seconds per epoch the choice assumed (None: a budget in epochs, unmeasured)
    forecast: Forecast | None = None  # the chosen setting's simulated sweeps, to re-forecast from

    def lines(self, metric: str) -> Iterator[str]:
        """What ``run`` and ``plan`` print of the choice."""
        b = self.budget
        if self.chosen is None:
            yield (f"Budget {b} ({b.describe()}): no recorded curves of this space, so no bands; trials chosen by "
                   f"the plan's arithmetic alone: {self.changes.get('trials')}.")
        else:
            yield (f"Budget {b} ({b.describe()}): settings chosen by simulation on {self.source}; {self.screened} "
                   f"candidate settings screened over {SEEDS_SCREEN} seeds, the best {FINALISTS} and the defaults over "
                   f"{SEEDS_FINAL} (median [10-90%]):")
            for label, scored in (("chosen", self.chosen), ("runner-up", self.runner_up), ("defaults", self.defaults)):
                if scored is not None:
                    yield f"  {label + ':':11}{self._describe(scored, metric)}"
        if self.kept:
            yield f"Kept as given: {', '.join(self.kept)}."
        yield from self.notes

    def _describe(self, s: Scored, metric: str) -> str:
        st = s.setting
        how = f"{st.strategy}/{st.scheduler}" + (f" grace {st.grace_period}" if st.scheduler == "asha" else "") + \
              (f" rf {st.reduction_factor:g}" if st.scheduler != "fifo" else "")
        wall, epochs, best = s.wall, s.epochs, s.best
        spend = "" if self.budget.kind in ("wall", "epochs") else \
            f", {self.budget.describe(s.spend[0])} [{self.budget.describe(s.spend[1])}-{self.budget.describe(s.spend[2])}]"
        fit = "" if s.fits else " (would overrun: ended by the budget)"
        return (f"{how}, {st.trials} trials, {st.workers} at once: wall {duration(wall[0])} [{duration(wall[1])}-"
                f"{duration(wall[2])}], epochs {epochs[0]:.0f} [{epochs[1]:.0f}-{epochs[2]:.0f}]{spend}, best {metric} "
                f"{best[0]:.4g} [{best[1]:.4g}-{best[2]:.4g}]{fit}")


def arithmetic_spend(budget: Budget, scheduler: str, trials: int, max_epochs: int, grace: int, rf: float,
                     workers: int, epoch_s: float, units: float, costs: Costs) -> float:
    """What ``plan``'s arithmetic says a sweep spends, in the budget's unit."""
    epochs = plan_budget(scheduler, trials, max_epochs, grace, rf).total_epochs
    wall = costs.start_s + costs.end_s + (epochs * (epoch_s + costs.epoch_s) + trials * costs.trial_s) / workers
    return budget.spent(wall, epochs, epochs * epoch_s, units)


def fitting_trials(budget: Budget, scheduler: str, max_epochs: int, grace: int, rf: float, workers: int,
                   epoch_s: float, units: float, costs: Costs, cap: int) -> int:
    """The most trials (up to ``cap``) the plan's arithmetic fits in the budget; 0 if not one."""
    fits = lambda n: arithmetic_spend(budget, scheduler, n, max_epochs, grace, rf, workers, epoch_s, units, costs) \
        <= budget.amount  # noqa: E731
    if not fits(1):
        return 0
    lo, hi = 1, cap
    while lo < hi:  # the epochs of a plan grow with its trials
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def check_budget_fits(budget: Budget, schedulers: Sequence[str], max_epochs: int, grace: int, epoch_s: float | None,
                      units: float, costs: Costs, grid: int | None) -> None:
    """One line where the budget cannot buy one trial's first rung, or buys more than a whole grid.
    ``epoch_s`` None (not known yet): only what needs no time (a budget in epochs, GPUs held)."""
    if budget.kind == "gpu-h" and units == 0:
        raise ValueError(f"budget: {budget} counts GPU-hours but a trial holds no GPU (gpus_per_trial=0); give a "
                         f"wall-clock or cpu-h, got {str(budget)!r}")
    if epoch_s is None and budget.kind != "epochs":
        return
    seconds = epoch_s or 0.0
    first = min(grace if s == "asha" else 1 if s == "hyperband" else max_epochs for s in schedulers)
    need = budget.spent(costs.start_s + costs.trial_s + first * seconds + costs.end_s, first, first * seconds, units)
    if budget.amount < need:
        timing = "" if budget.kind == "epochs" else \
            f" of about {seconds:.3g} s, with {duration(costs.start_s + costs.end_s)} of start and end"
        raise ValueError(f"budget: {budget} is less than one trial's first rung ({first} epoch(s){timing}): give "
                         f"at least {budget.describe(need)}, got {str(budget)!r}")
    if grid is not None:
        whole = budget.spent(costs.start_s + costs.end_s + grid * (max_epochs * seconds + costs.trial_s),
                             grid * max_epochs, grid * max_epochs * seconds, units)
        if whole <= budget.amount:
            raise ValueError(f"budget: {budget} is more than the whole grid needs ({grid} configurations trained to "
                             f"the end on one worker: {budget.describe(whole)}); run it without --budget, got "
                             f"{str(budget)!r}")


def schedulers_allowed(base: Setting, fixed: Collection[str]) -> list[str]:
    """The user's scheduler if they named one; else ASHA and HyperBand (FIFO stays FIFO)."""
    return [base.scheduler] if "scheduler" in fixed else (["fifo"] if base.scheduler == "fifo" else ["asha", "hyperband"])


def candidates(base: Setting, fixed: Collection[str], schedulers: Sequence[str], budget: Budget, slots: int,
               epoch_s: float, units: float, costs: Costs, cap: int) -> list[Setting]:
    """The settings worth simulating: each scheduler's grace periods and reduction factors, on the
    workers there are (and half of them, for budgets that do not count wall-clock), with the trials
    the arithmetic fits and fewer (Ray's ASHA spends more than the arithmetic: it promotes early)."""
    out: list[Setting] = []
    workers = [base.workers] if "concurrency" in fixed else sorted({slots, max(1, slots // 2)} if budget.kind != "wall"
                                                                   else {slots}, reverse=True)
    for scheduler in schedulers:
        graces = [base.grace_period] if "grace_period" in fixed or scheduler != "asha" else \
            [g for g in GRACE_PERIODS if g < base.max_epochs]
        factors = [base.reduction_factor] if "reduction_factor" in fixed or scheduler == "fifo" else REDUCTION_FACTORS
        for grace in graces or [base.grace_period]:
            for rf in factors:
                for w in workers:
                    if "trials" in fixed:
                        counts = [base.trials]
                    else:
                        n = fitting_trials(budget, scheduler, base.max_epochs, grace, rf, w, epoch_s, units, costs, cap)
                        counts = sorted({max(1, n), max(1, round(n * 0.6))}) if n else [1]
                    out += [replace(base, scheduler=scheduler, grace_period=grace, reduction_factor=rf, workers=w,
                                    trials=t) for t in counts]
    return list(dict.fromkeys(out))


def choose(table: CurveTable | None, base: Setting, budget: Budget, fixed: Collection[str], *, epoch_s: float,
           units: float, slots: int, grid: int | None = None, costs: Costs = Costs(),
           seeds: tuple[int, int] = (SEEDS_SCREEN, SEEDS_FINAL), processes: int | None = None) -> BudgetChoice:
    """The settings for ``budget``. ``base``: the sweep's settings with the defaults where the user
    set nothing (its ``workers``: the concurrency); ``fixed``: the names in ``TUNED`` the user set;
    ``epoch_s``: seconds per epoch on the workers; ``units``: what a trial holds of a worker-hour
    budget's resource; ``slots``: trials that fit at once; ``grid``: the grid's size with
    ``strategy`` grid. Raises ValueError (one line) for a budget that cannot fit."""
    logging.getLogger("ray.tune.schedulers").setLevel(logging.WARNING)  # HyperBand's "Bracket too small" each draw
    schedulers = schedulers_allowed(base, fixed)
    cap = min(grid or MAX_TRIALS, MAX_TRIALS)
    check_budget_fits(budget, schedulers, base.max_epochs, base.grace_period, epoch_s, units, costs, grid)
    kept = tuple(n for n in TUNED if n in fixed)
    if table is None:
        n = base.trials if "trials" in fixed else max(1, fitting_trials(
            budget, base.scheduler, base.max_epochs, base.grace_period, base.reduction_factor, base.workers, epoch_s,
            units, costs, cap))
        return BudgetChoice(budget, {"trials": n}, kept=kept)
    costs = replace(costs, epoch_scale=epoch_s / table.median_seconds)
    options = candidates(base, fixed, schedulers, budget, slots, epoch_s, units, costs, cap)
    score = lambda runs: [Scored(s, r, budget, epoch_s, units, table.mode, costs.end_s, costs.end_trial_s)  # noqa: E731
                          for s, r in runs.items()]
    screened = sorted(score(simulate_many(table, options, seeds[0], costs, processes)), key=Scored.rank)
    leaders = [s.setting for s in screened[:FINALISTS]]
    final = {s.setting: s for s in score(simulate_many(table, leaders + [base], seeds[1], costs, processes))}
    # The defaults are a candidate too: where nothing beats them, they are the choice.
    ranked = sorted((final[s] for s in dict.fromkeys(leaders + [base])), key=Scored.rank)
    chosen = ranked[0]
    st = chosen.setting
    changes = {"scheduler": st.scheduler, "trials": st.trials, "grace_period": st.grace_period,
               "reduction_factor": st.reduction_factor, "concurrency": st.workers}
    notes = [] if chosen.fits else [
        f"The chosen setting finds more by the time {budget} is spent than any that finishes within it: in more "
        "than 1 of 10 simulated sweeps the budget ends it, with trials unfinished."]
    forecast = Forecast.of(chosen, costs)
    if st.workers == slots:  # all there are: a cluster larger than this machine keeps its own concurrency
        changes.pop("concurrency")
    return BudgetChoice(budget, {k: v for k, v in changes.items() if k not in fixed}, chosen,
                        ranked[1] if len(ranked) > 1 else None, final[base], table.describe(), len(options), kept, notes,
                        forecast=forecast)


def slots_here(cpus_per_trial: float, workers_per_trial: int) -> int:
    """Trials that fit at once on this machine's CPUs."""
    return max(1, int((os.cpu_count() or 1) // max(cpus_per_trial * workers_per_trial, 1e-9)))


def _curves(prep, module, table: str | None, from_sweep: str | None, client, tracking_uri: str | bool | None,
            experiment: str | None) -> tuple[CurveTable | None, str]:
    """The best curves there are for this sweep, and where they come from: those asked for, else the
    space's own newest finished sweep in the store (this machine, this data), else the table shipped
    beside its module."""
    s = prep.settings
    if table or from_sweep:
        return find_table(module, table, from_sweep, tracking_uri, experiment, max_epochs=s.max_epochs), \
            f"--table {table}" if table else f"sweep {from_sweep}"
    earlier = earlier_sweep(client, prep.space, s.metric, s.max_epochs) if client is not None else None
    if earlier is not None:
        return earlier, f"the space's own {earlier.source}"
    shipped = table_beside(module.path) if module is not None else None
    if shipped is not None:
        return CurveTable.load(shipped), f"{shipped.name}, shipped beside the space module"
    return None, ""


def fit_budget(prep, fixed: Collection[str], epoch_seconds: float | None = None, workers: int | None = None,
               table: str | None = None, from_sweep: str | None = None, tracking_uri: str | bool | None = None,
               experiment: str | None = None, seeds: tuple[int, int] = (SEEDS_SCREEN, SEEDS_FINAL)) -> BudgetChoice:
    """Choose the settings for ``prep.settings.budget`` and put them in ``prep.settings``. The
    curves: ``table`` or ``from_sweep`` where given, else the space's (``find_table``); seconds per
    epoch: ``epoch_seconds``, else one epoch measured here, else the curves' own. ``fixed``: the
    options the user set (kept, and the search constrained by them). Raises ValueError (one line)."""
    s = prep.settings
    budget = Budget.parse(s.budget)
    module = load_space_module(prep.space_path) if prep.space_path else None
    client = store_if_any(tracking_uri)
    curves, where = _curves(prep, module, table, from_sweep, client, tracking_uri, experiment)
    costs, notes = Costs(), []
    measured = earlier_costs(client, prep.space) if client is not None else None
    if measured is not None:  # this machine's start, hand-overs and end, not the benchmark machine's
        costs, name = measured
        notes.append(f"Costs outside training as sweep {name} of this space showed them: {costs.start_s:.1f} s to "
                     f"start, {costs.trial_s:.2f} s between trials, {costs.end_s:.1f} s to end and {costs.end_trial_s:.2f} s "
                     "more a trial started.")
    slots = workers or slots_here(s.cpus_per_trial, s.workers_per_trial)
    base = Setting(str(s.strategy), str(s.scheduler), s.trials, s.max_epochs, s.grace_period, s.reduction_factor,
                   s.concurrency if "concurrency" in fixed and s.concurrency else slots)
    grid = len(prep.space.grid()) if str(s.strategy) == "grid" else None
    units = budget.units_per_trial(s.cpus_per_trial, s.gpus_per_trial, s.workers_per_trial)
    # What can be refused before an epoch is measured (seconds of training) is refused first.
    check_budget_fits(budget, schedulers_allowed(base, fixed), s.max_epochs, s.grace_period, epoch_seconds, units,
                      costs, grid)
    if curves is not None:
        check_table_fits(curves, prep.space, s.metric, s.max_epochs)
    if epoch_seconds is None and where.startswith("the space's own"):
        # Epochs as they ran in a real sweep of this space in this store, beside other trials and
        # the driver: on a 2-core machine ~2.5x one epoch timed alone (measured: 0.28 s and 0.11 s).
        epoch_seconds = curves.median_seconds
        notes.append(f"Epochs of {epoch_seconds:.3g} s (as they ran in that sweep).")
    if epoch_seconds is None:
        measured = measure_epoch_seconds(prep)
        if measured is not None:
            epoch_seconds, noise = measured
            notes.append(f"Epochs of {epoch_seconds:.3g} s (one timed alone here{': ' + noise if noise else ''}; in a "
                         "sweep, beside other trials, they may take longer).")
        elif curves is not None:
            epoch_seconds = curves.median_seconds
            notes.append(f"Epochs of {epoch_seconds:.3g} s (the recorded curves' median).")
        elif budget.kind != "epochs":
            raise ValueError(f"budget: {budget} needs the seconds an epoch takes, and this trainable takes no "
                             "max_epochs to measure one with: give --epoch-seconds or a budget in epochs")
    choice = choose(curves, base, budget, fixed, epoch_s=epoch_seconds or 1.0, units=units, slots=slots, grid=grid,
                    costs=costs, seeds=seeds)
    if curves is not None:
        choice.source = f"{len(curves)} recorded curves ({where})"
    choice.epoch_s = epoch_seconds
    choice.notes[:0] = notes
    prep.settings = s.replace(**choice.changes)
    prep.budget_lines = list(choice.lines(s.metric))
    prep.forecast = choice.forecast
    return choice
