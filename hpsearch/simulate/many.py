"""Simulations over seeds and settings: each setting's spread over seeds, the random-search target
and speed-ups, the recommendation, and a sweep's settings simulated for ``plan``.

``hpsearch.simulate.events`` is the event loop for one simulated sweep; this module runs it many
times. Where the curves come from is ``sources``; what the commands print of it, ``explain``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import sys
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from hpsearch.search.schedulers import decision_epochs
from hpsearch.simulate.curves import CurveTable, check_table_fits
from hpsearch.simulate.events import Costs, Run, Setting, simulate
from hpsearch.vocab import Mode

# -- many seeds, many settings ------------------------------------------------------------------

def _one(args: tuple) -> Run:
    table, setting, seed, costs = args
    return simulate(table, setting, seed, costs)


def simulate_many(table: CurveTable, settings: Sequence[Setting], seeds: int, costs: Costs = Costs(),
                  processes: int | None = None) -> dict[Setting, list[Run]]:
    """Every setting on seeds 0..seeds-1; on several processes (fork) when there is enough work."""

    settings = list(dict.fromkeys(settings))  # a setting listed twice is simulated once
    jobs = [(table, s, seed, costs) for s in settings for seed in range(seeds)]
    processes = processes or min(len(jobs), os.cpu_count() or 1)
    if processes > 1 and len(jobs) > 1:
        # Fork is quick (Ray Tune and Optuna already imported); a process connected to Ray (the
        # benchmark's) must not be forked, so its workers start afresh.
        ray = sys.modules.get("ray")
        method = "spawn" if ray is not None and getattr(ray, "is_initialized", lambda: False)() else "fork"
        with multiprocessing.get_context(method).Pool(processes) as pool:
            runs = pool.map(_one, jobs, chunksize=max(1, len(jobs) // (processes * 4)))
    else:
        runs = [_one(j) for j in jobs]
    out: dict[Setting, list[Run]] = {s: [] for s in settings}
    for run in runs:
        out[run.setting].append(run)
    return out


@dataclass
class Summary:
    """A setting over seeds: medians and spread (10th-90th percentile)."""

    setting: Setting
    runs: list[Run]
    target: float | None
    mode: str

    def _spread(self, values: Sequence[float]) -> tuple[float, float, float]:
        a = np.asarray(values, float)
        return float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90))

    @property
    def wall(self) -> tuple[float, float, float]:
        return self._spread([r.wall_s for r in self.runs])

    @property
    def epochs(self) -> tuple[float, float, float]:
        return self._spread([r.epochs for r in self.runs])

    @property
    def best(self) -> tuple[float, float, float]:
        return self._spread([r.best_value for r in self.runs if r.best_value is not None] or [math.nan])

    def times_to_target(self) -> list[float]:
        """Per seed; inf where the target was never reached."""
        if self.target is None:
            return []
        return [t if t is not None else math.inf for t in (r.time_to(self.target, self.mode) for r in self.runs)]

    @property
    def time_to_target(self) -> float:
        """Median over seeds (inf if most seeds never reached it)."""
        times = self.times_to_target()
        return statistics.median(times) if times else math.inf

    @property
    def reached_share(self) -> float:
        times = self.times_to_target()
        return sum(math.isfinite(t) for t in times) / len(times) if times else 0.0

    def trials_per_rung(self) -> dict[int, float]:
        s = self.setting
        sched = "hyperband" if s.strategy == "optuna" and s.scheduler == "hyperband" else (
            "asha" if s.strategy == "optuna" and s.scheduler == "sha" else ("fifo" if s.strategy == "optuna" else s.scheduler))
        rungs = sorted(decision_epochs(sched, s.max_epochs, s.grace_period, s.reduction_factor) | {s.max_epochs})
        return {e: float(np.median([r.reached.get(e, 0) for r in self.runs])) for e in rungs}

    def distance(self) -> tuple[float, float]:
        """Median distance to the nearest recorded configuration, and the share of repeated rows."""
        d = [x for r in self.runs for x in r.distances]
        repeats = [1 - len(set(r.rows)) / len(r.rows) for r in self.runs if r.rows]
        return (float(np.median(d)) if d else 0.0), (float(np.mean(repeats)) if repeats else 0.0)


def random_target(table: CurveTable, trials: int, max_epochs: int, workers: int, seeds: int, costs: Costs) -> tuple[float, list[Run]]:
    """The random-search target: the median (lower, for an even count) over seeds of the best value
    random search with every trial trained to the end (random/FIFO) finds with ``trials`` trials."""
    ref = Setting("random", "fifo", trials, max_epochs, workers=workers)
    runs = simulate_many(table, [ref], seeds, costs)[ref]
    bests = [r.best_value for r in runs if r.best_value is not None]
    if not bests:
        raise ValueError(f"table: random search reported no {table.metric} in {seeds} seed(s)")
    # The worse of two middle values: a target random search reaches in at least half the seeds.
    return (statistics.median_low(bests) if Mode(table.mode) is Mode.MAX else statistics.median_high(bests)), runs


def compare(table: CurveTable, settings: Sequence[Setting], seeds: int, costs: Costs = Costs(),
            target_trials: int | None = None) -> tuple[list[Summary], Summary]:
    """Each setting over ``seeds`` seeds, with its time to the random-search target (random/FIFO with
    ``target_trials`` trials, default the first setting's); and random search itself, random/FIFO
    with the settings' trials, against whose time to that target speed-ups are measured."""
    first = settings[0]
    target_trials = target_trials or first.trials
    target, target_runs = random_target(table, target_trials, first.max_epochs, first.workers, seeds, costs)
    ref = Setting("random", "fifo", first.trials, first.max_epochs, workers=first.workers)
    runs = simulate_many(table, list(settings) + ([ref] if target_trials != first.trials else []), seeds, costs)
    ref_runs = target_runs if target_trials == first.trials else runs[ref]
    return [Summary(s, runs[s], target, table.mode) for s in settings], Summary(ref, ref_runs, target, table.mode)


def expand(base: Setting, **lists: Sequence[Any]) -> list[Setting]:
    """Every combination of the listed values, e.g. ``scheduler=["asha", "hyperband"], reduction_factor=[2, 3]``."""
    out = [base]
    for name, values in lists.items():
        out = [replace(s, **{name: v}) for s in out for v in values]
    seen, unique = set(), []
    for s in out:
        key = replace(s, reduction_factor=s.reduction_factor if s.scheduler != "fifo" else base.reduction_factor,
                      grace_period=s.grace_period if s.scheduler == "asha" else base.grace_period)
        if key not in seen:
            seen.add(key)
            unique.append(key)
    return unique


def settings_from_lists(lists: dict[str, list], trials: int, max_epochs: int, optuna: bool) -> list[Setting]:
    """Every combination of the listed strategies, schedulers, grace periods, reduction factors and
    worker counts; with ``optuna``, also Optuna's TPE with its Hyperband and successive-halving
    pruners at each reduction factor."""
    first = {k: v[0] for k, v in lists.items()}
    base = Setting(first["strategy"], first["scheduler"], trials, max_epochs, first["grace_period"],
                   first["reduction_factor"], first["workers"])
    out = expand(base, **lists)
    if optuna:
        for pruner in ("hyperband", "sha"):
            out += expand(replace(base, strategy="optuna", scheduler=pruner), reduction_factor=lists["reduction_factor"])
    return out


def recommend(summaries: Sequence[Summary], reference: Summary) -> tuple[Summary, float] | None:
    """The hpsearch setting with the shortest median time to the target (ties: fewer epochs), and
    its speed-up over random search (random/FIFO's median time to the same target)."""
    own = [s for s in summaries if s.setting.strategy != "optuna" and math.isfinite(s.time_to_target)]
    if not own:
        return None
    best = min(own, key=lambda s: (s.time_to_target, s.epochs[0]))
    base = reference.time_to_target
    return best, (base / best.time_to_target if best.time_to_target > 0 and math.isfinite(base) else math.nan)


def plan_expectation(curves: CurveTable, space, settings, workers: int, epoch_seconds: float | None,
                     seeds: int = 10, processes: int | None = None) -> Summary:
    """A sweep's settings simulated on recorded curves, for ``hpsearch plan`` (and the parent run's
    plan-against-actual record): epochs and wall over ``seeds`` seeds, epochs scaled to ``epoch_seconds``."""

    s = settings
    check_table_fits(curves, space, s.metric, s.max_epochs)
    costs = Costs(epoch_scale=1.0 if not epoch_seconds else epoch_seconds / curves.median_seconds)
    setting = Setting(str(s.strategy), str(s.scheduler), s.trials, s.max_epochs, s.grace_period, s.reduction_factor, workers)
    runs = simulate_many(curves, [setting], seeds, costs, processes)[setting]
    return Summary(setting, runs, None, curves.mode)
