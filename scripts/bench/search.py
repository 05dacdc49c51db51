"""Part 6 (issues #13, #25), search efficiency, simulated and deciding: on the curve table shipped
for the default space (spaces/mlp.curves.npz: 300 configurations of spaces/mlp.py on MNIST-1D
trained to 81 epochs), epochs scaled to a median of ``epoch_seconds`` (one minute: what real
models take, and what 2 real cores cannot run), ``seeds`` simulated sweeps per arm on 2 workers,
each arm with the same budget of ``trials`` configurations.

Reached: a trial reaches a target when the mean of its last ``SMOOTH`` (3) reported epochs does,
not when one epoch does: one epoch's validation accuracy on this table moves by about +-0.005
from the next, so a single lucky epoch would count a model that is not there (and favour the
arms that look at more epochs). Every arm, random search and the oracle are judged by that rule.

Targets (a panel of three, easier to harder): random search (random/FIFO, every configuration
trained to the end) is first simulated without the scheduler, cheaply, on ``target_seeds``
other seeds (not the seeds the arms run on); for n = trials/9, trials/3 and trials
configurations, a target is the 10th percentile (lower) of its per-seed best smoothed value after
its first n configurations. Random search with ``trials`` configurations reaches each in about
90% of seeds or more (the best after n <= trials configurations is a floor of the best after
all); the share it reached on the arms' seeds is recorded beside each target.

Per target and arm, paired by seed (the random arms run the same sampled configurations in the
same order as random search on a seed; TPE and Optuna sample their own): the speed-up over random
search (random/FIFO's time to the target / the arm's; 0 where the arm never reached it, seeds
where neither did are left out), its median with a 90% bootstrap interval, and the share of
seeds reached. Beside it the oracle bound: a perfect pruner on the same seed's configurations,
which trains every configuration before the first one that reaches the target for one epoch and
that one until it reaches it, on the same 2 workers with the same costs.

Goal (issue #25): ASHA at >= 60% of the oracle bound. The figure is, per seed, the arm's speed-up
over the oracle's (= oracle time / arm time), its median over seeds with a 90% bootstrap
interval, and the three-state verdict. Judged on hpsearch's default arm, random/ASHA (what a user
gets without choosing), on the panel's middle target; the rule is fixed here, before any run,
so the arm is not picked after the fact. TPE/ASHA's share is shown beside it without a verdict.

Arms: hpsearch random/ASHA, random/Hyperband, TPE/ASHA (told of stopped trials as pruned) and
TPE/ASHA with Ray's OptunaSearch as is; Optuna used directly, as baselines: TPE with its Hyperband
pruner (sized to the budget: min 1, max ``max_epochs`` epochs), with its successive-halving
pruner, and without pruning. The decisions are Ray's and Optuna's own code (hpsearch.simulate);
the costs outside training are the benchmark's measured figures (hpsearch.simulate.Costs).

Budget (full mode: 30 seeds x 8 arms x 243 configurations): 240 CPU-seconds measured on
2026-12-04 (the simulations on every core; each simulated sweep stops once every target is
reached), so about 2.5 minutes on the 2 quiet cores with the pool's start; 8.6 minutes at a load
average of ~17 from other work. Quick mode (5 seeds x 81 configurations): ~10 CPU-seconds.
"""

from __future__ import annotations

import heapq
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections import defaultdict, deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.common import ROOT, bootstrap_interval, figure, verdict

SMOOTH = 3  # epochs in the moving average a trial must bring to the target
QUANTILE = 0.10  # a target: this quantile of random search's per-seed best (reached in >= 90% of seeds)
GOAL_SHARE = 0.60  # issue #25: ASHA at >= 60% of the oracle bound
GOAL_ARM = "hpsearch random/asha"  # the arm the goal is judged on: hpsearch's default (see the docstring)
RANDOM = "random search (random/FIFO)"


class _Reached(Exception):
    """Every target of the panel reached: the simulated sweep can stop (what follows cannot change it)."""


class _Watch:
    """Follows every reported epoch of a simulated sweep; records when the mean of a trial's last
    ``SMOOTH`` epochs first reaches each target."""

    def __init__(self, targets: Sequence[float], mode: str) -> None:
        from hpsearch.vocab import Mode

        self.targets, self.mode = list(targets), Mode(mode)
        self.first = [math.inf] * len(self.targets)
        self.recent: dict[Any, deque] = defaultdict(lambda: deque(maxlen=SMOOTH))

    def see(self, clock: float, trial: Any, value: float) -> None:
        if value is None or math.isnan(value):
            return
        last = self.recent[trial]
        last.append(float(value))
        if len(last) < SMOOTH:
            return
        mean = sum(last) / SMOOTH
        for i, target in enumerate(self.targets):
            if math.isinf(self.first[i]) and self.mode.reaches(mean, target):
                self.first[i] = clock
        if all(math.isfinite(t) for t in self.first):
            raise _Reached


def smoothed(curve: Sequence[float]) -> list[float]:
    """The moving average the rule judges, per epoch from epoch ``SMOOTH`` on (NaN before).

    >>> [round(x, 3) for x in smoothed([0.1, 0.2, 0.3, 0.7])][2:]
    [0.2, 0.4]
    """
    out = [math.nan] * len(curve)
    for e in range(SMOOTH - 1, len(curve)):
        window = curve[e - SMOOTH + 1: e + 1]
        out[e] = sum(window) / SMOOTH if not any(math.isnan(v) for v in window) else math.nan
    return out


def _traced(table, setting, seed: int, costs, targets: Sequence[float]) -> list[float]:
    """One simulated sweep (hpsearch.simulate's own, unchanged), watched: the time each target was
    first reached by the rule (inf: never, within the budget)."""
    import numpy as np
    import optuna

    from hpsearch.simulate import events

    watch = _Watch(targets, table.mode)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if setting.strategy == "optuna":
        # Optuna's loop is a function: watch what it reports (trial.report) at the time of the
        # event it handles (the event queue's last pop), both put back afterwards.
        clock = _ClockedQueue()
        report = optuna.trial.Trial.report

        def watched(trial, value, step):
            watch.see(clock.now, ("optuna", trial.number), value)
            return report(trial, value, step)

        events.heapq, optuna.trial.Trial.report = clock, watched
        try:
            events.simulate(table, setting, seed, costs)
        except _Reached:
            pass
        finally:
            events.heapq, optuna.trial.Trial.report = heapq, report
        return watch.first

    class Sim(events._RaySim):  # Ray's controller part, as simulate() runs it, watched after each epoch
        def finish_epoch(self, trial) -> None:
            info = self.info[trial.trial_id]
            row, epoch = info["row"], info["epoch"] + 1
            super().finish_epoch(trial)
            if epoch <= self.limit(row):
                watch.see(self.clock, trial.trial_id, float(self.table.values[row, epoch - 1]))

    state = np.random.get_state()
    np.random.seed(seed)  # as events.simulate: ASHA draws brackets from the global generator
    try:
        Sim(table, setting, seed, costs).simulate()
    except _Reached:
        pass
    finally:
        np.random.set_state(state)
    return watch.first


class _ClockedQueue:
    """heapq as hpsearch.simulate.events uses it, remembering the time of the event last popped."""

    now = 0.0
    heappush = staticmethod(heapq.heappush)
    heapify = staticmethod(heapq.heapify)

    def heappop(self, events):
        item = heapq.heappop(events)
        self.now = item[0]
        return item


def _job(args: tuple) -> tuple[str, int, list[float]]:
    table, name, setting, seed, costs, targets = args
    return name, seed, _traced(table, setting, seed, costs, targets)


def _simulate_all(table, arms: dict[str, Any], seeds: int, costs, targets: list[float]) -> dict[str, list[list[float]]]:
    """Every arm on seeds 0..seeds-1, on every core: per arm, per seed, the time to each target."""
    jobs = [(table, name, s, seed, costs, targets) for name, s in arms.items() for seed in range(seeds)]
    processes = min(len(jobs), os.cpu_count() or 1)
    if processes > 1:
        # Fork is quick; a process connected to Ray (the suite's) must not be forked: spawn then.
        ray = sys.modules.get("ray")
        method = "spawn" if ray is not None and getattr(ray, "is_initialized", lambda: False)() else "fork"
        with multiprocessing.get_context(method).Pool(processes) as pool:
            done = pool.map(_job, jobs, chunksize=1)
    else:
        done = [_job(j) for j in jobs]
    out: dict[str, list[list[float]]] = {name: [[] for _ in range(seeds)] for name in arms}
    for name, seed, times in done:
        out[name][seed] = times
    return out


def rows_of(table, trials: int, seed: int) -> list[int]:
    """The table rows random search runs on a seed, in order (the configurations the simulator samples)."""
    from hpsearch.search.strategies import initial_points

    return [table.nearest(c)[0] for c in initial_points(table.space, "random", trials, seed)]


def panel(table, trials: int, target_seeds: int) -> list[dict[str, Any]]:
    """The targets: for n = trials/9, trials/3, trials, the 10th percentile (the worse side) of
    random search's per-seed best smoothed value after n configurations, over seeds 1000.. (not
    the arms' seeds). Random/FIFO trains every configuration to the end, so its best needs no
    scheduler: the best smoothed value of the rows it samples."""
    from hpsearch.vocab import Mode

    sign = Mode(table.mode).sign
    best_of_row = [max((sign * v for v in smoothed(list(table.values[r])) if not math.isnan(v)), default=-math.inf)
                   for r in range(len(table))]
    sizes = sorted({max(1, trials // 9), max(1, trials // 3), trials})
    bests: dict[int, list[float]] = {n: [] for n in sizes}
    for seed in range(1000, 1000 + target_seeds):
        rows = rows_of(table, trials, seed)
        for n in sizes:
            bests[n].append(max(best_of_row[r] for r in rows[:n]))
    out = []
    for n in sizes:
        values = sorted(bests[n])
        low = values[int(math.floor(QUANTILE * (len(values) - 1)))]  # the worse side of the quantile
        out.append({"target": sign * low, "configurations": n, "quantile": QUANTILE, "target_seeds": target_seeds})
    return out


def oracle_time(table, rows: Sequence[int], target: float, costs, workers: int = 2) -> tuple[float, float]:
    """A perfect pruner on these configurations, in order, on ``workers`` workers: every one before
    the first that reaches ``target`` (by the rule) trains one epoch, that one until it reaches
    it; and that one trained alone. Seconds to the target, with the suite's costs; inf for both
    where no configuration reaches it.

    >>> from hpsearch.space import Space, Float
    >>> from hpsearch.simulate.curves import CurveTable
    >>> from hpsearch.simulate.events import Costs
    >>> t = CurveTable.build(Space(Float("lr", 1e-3, 1e-1, log=True)), "acc", "max", [{"lr": 1e-3}, {"lr": 1e-1}],
    ...                      [[0.1] * 4, [0.5] * 4], [[1.0] * 4, [1.0] * 4])
    >>> oracle_time(t, [0, 0, 1], 0.5, Costs(start_s=0, trial_s=0, epoch_s=0, end_s=0))
    (4.0, 3.0)
    """
    from hpsearch.vocab import Mode

    mode = Mode(table.mode)

    def train(row: int, epochs: int) -> float:
        return costs.trial_s + sum(table.epoch_time(row, e) * costs.epoch_scale + costs.epoch_s for e in range(epochs))

    free = [costs.start_s] * workers
    for row in rows:
        reach = next((e + 1 for e, v in enumerate(smoothed(list(table.values[row])))
                      if not math.isnan(v) and mode.reaches(v, target)), None)
        start = heapq.heappop(free)
        if reach is not None:
            return start + train(row, reach), costs.start_s + train(row, reach)
        heapq.heappush(free, start + train(row, 1))
    return math.inf, math.inf


def speedups(base: Sequence[float], times: Sequence[float]) -> list[float]:
    """Per seed, base / time: 0 where only the base reached, inf where only the arm did, NaN
    (left out) where neither did.

    >>> speedups([10.0, 10.0, math.inf, math.inf], [2.0, math.inf, 5.0, math.inf])
    [5.0, 0.0, inf, nan]
    """
    out = []
    for b, t in zip(base, times):
        if math.isinf(t):
            out.append(math.nan if math.isinf(b) else 0.0)
        else:
            out.append(b / t)
    return out


def _median(values: Sequence[float]) -> float | None:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else None


def run(seeds: int, trials: int, epoch_seconds: float, work: Path, log: Callable[[str], None],
        target_seeds: int = 100) -> dict[str, Any]:
    from hpsearch.simulate.curves import CurveTable
    from hpsearch.simulate.events import Costs, Setting

    started = time.perf_counter()
    table = CurveTable.load(ROOT / "spaces" / "mlp.curves.npz")
    costs = Costs(epoch_scale=epoch_seconds / table.median_seconds)
    base = Setting("random", "asha", trials, table.max_epochs, 1, 3, workers=2)
    arms = {
        RANDOM: replace(base, scheduler="fifo"),
        "hpsearch random/asha": base,
        "hpsearch random/hyperband": replace(base, scheduler="hyperband"),
        "hpsearch tpe/asha": replace(base, strategy="tpe"),
        "hpsearch tpe/asha, Ray's OptunaSearch as is": replace(base, strategy="tpe", tpe_pruned=False),
        "optuna tpe + hyperband pruner": replace(base, strategy="optuna", scheduler="hyperband"),
        "optuna tpe + successive-halving pruner": replace(base, strategy="optuna", scheduler="sha"),
        "optuna tpe, no pruner": replace(base, strategy="optuna", scheduler="none"),
    }
    targets = panel(table, trials, target_seeds)
    log("search: targets " + ", ".join(f"{t['target']:.4f} ({t['configurations']} configurations)" for t in targets))
    times = _simulate_all(table, arms, seeds, costs, [t["target"] for t in targets])
    random_rows = [rows_of(table, trials, seed) for seed in range(seeds)]
    out_targets = []
    for i, t in enumerate(targets):
        base_times = [times[RANDOM][s][i] for s in range(seeds)]
        oracle = [oracle_time(table, random_rows[s], t["target"], costs) for s in range(seeds)]
        entry = {**t, "random_reached": sum(math.isfinite(x) for x in base_times) / seeds,
                 "random_time_s": base_times, "arms": {}}
        for name in ("oracle", "winner alone", *arms):
            arm_times = ([o[0] for o in oracle] if name == "oracle" else [o[1] for o in oracle] if name == "winner alone"
                         else [times[name][s][i] for s in range(seeds)])
            up = speedups(base_times, arm_times)
            # The arm's speed-up over the oracle's, per seed: oracle time / arm time (0: never reached);
            # left out where the oracle bound is undefined (no configuration of the seed reaches).
            share = [math.nan if math.isinf(o[0]) else (0.0 if math.isinf(a) else o[0] / a)
                     for o, a in zip(oracle, arm_times)]
            entry["arms"][name] = {
                "time_s": arm_times, "speedup": up, "median_speedup": _median(up),
                "speedup_interval": bootstrap_interval(up), "reached": sum(math.isfinite(x) for x in arm_times) / seeds,
                "share_of_oracle": share, "median_share_of_oracle": _median(share),
                "share_interval": bootstrap_interval(share), "pairs": sum(not math.isnan(x) for x in up),
            }
        out_targets.append(entry)
        log(f"search target {t['target']:.4f}: random reached {entry['random_reached']:.0%}; " + "; ".join(
            f"{n} {_x(a['median_speedup'])}" for n, a in entry["arms"].items() if n != RANDOM))
    took = time.perf_counter() - started
    return {
        "size": {"seeds": seeds, "trials": trials, "target_seeds": target_seeds, "epoch_seconds": epoch_seconds,
                 "workers": 2, "max_epochs": table.max_epochs, "smooth_epochs": SMOOTH, "table": table.source,
                 "costs": costs.__dict__},
        "targets": out_targets, "goal_arm": GOAL_ARM, "simulated_in_s": took,
        "figures": _figures(out_targets, seeds, epoch_seconds, took),
    }


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _figures(targets: list[dict[str, Any]], seeds: int, epoch_seconds: float, took: float) -> list[dict[str, Any]]:
    figs = []
    shown = ("hpsearch tpe/asha", "hpsearch random/hyperband", "hpsearch tpe/asha, Ray's OptunaSearch as is",
             "optuna tpe + hyperband pruner", "optuna tpe + successive-halving pruner", "optuna tpe, no pruner")
    common = (f"simulated, {seeds} seeds, epochs scaled to a median of {epoch_seconds:g} s, 2 workers, "
              f"reached = a {SMOOTH}-epoch moving average at the target")
    for t in targets:
        a = t["arms"]
        asha = a[GOAL_ARM]
        label = f"val_acc {t['target']:.4f} (random's 10th percentile after {t['configurations']} configurations)"
        figs.append(figure(
            "search", f"speed-up over random search to {label}, hpsearch random/asha", asha["median_speedup"], "×",
            baselines={"oracle bound": a["oracle"]["median_speedup"], **{n: a[n]["median_speedup"] for n in shown}},
            interval=asha["speedup_interval"], seeds=asha["pairs"],
            note=(f"{common}; median of per-seed speed-ups, 90% bootstrap interval; seeds reached: random search "
                  f"{t['random_reached']:.0%}, " + ", ".join(f"{n} {a[n]['reached']:.0%}" for n in (GOAL_ARM, *shown))
                  + f"; oracle [{_r(a['oracle']['speedup_interval'])}], winner trained alone "
                  f"{_x(a['winner alone']['median_speedup'])}")))
    middle = targets[len(targets) // 2]
    for name in (GOAL_ARM, "hpsearch tpe/asha"):
        arm = middle["arms"][name]
        judged = name == GOAL_ARM
        value = arm["median_share_of_oracle"]
        figs.append(figure(
            "search", f"{name.removeprefix('hpsearch ')} speed-up as a share of the oracle bound's, median target "
            f"(val_acc {middle['target']:.4f})", value, "",
            baselines={"oracle speed-up": middle["arms"]["oracle"]["median_speedup"], "arm speed-up": arm["median_speedup"]},
            goal=f">= {GOAL_SHARE:g} of the oracle bound" if judged else "",
            verdict=verdict(value, ">=", GOAL_SHARE, arm["share_interval"]) if judged else None,
            interval=arm["share_interval"], seeds=sum(not math.isnan(x) for x in arm["share_of_oracle"]),
            note=(f"per seed: oracle time / arm time (0 where the arm never reached the target), median over seeds, "
                  f"90% bootstrap interval; the goal is judged on hpsearch's default arm, random/ASHA, on the panel's "
                  f"middle target, a rule fixed before the run; simulated in {took:.0f} s" if judged else
                  "shown beside the judged arm (random/ASHA), no verdict of its own")))
    return figs


def _r(interval: Sequence[float] | None) -> str:
    return "-" if not interval else f"{interval[0]:.2f}, {interval[1]:.2f}"
