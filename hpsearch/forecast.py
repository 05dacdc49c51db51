"""Simulations over seeds and settings, and what ``hpsearch simulate`` and ``hpsearch plan`` make
of them: where the curves come from, each setting's spread over seeds, the random-search target and
speed-ups, the recommendation, and a plot of best-so-far against time.

``hpsearch.simulate`` is the event loop for one simulated sweep; this module runs it many times.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hpsearch.curves import CurveTable, table_beside
from hpsearch.schedulers import decision_epochs
from hpsearch.modules import SpaceModule
from hpsearch.simulate import Costs, Run, Setting, simulate
from hpsearch.vocab import duration


# -- many seeds, many settings ------------------------------------------------------------------

def _one(args: tuple) -> Run:
    table, setting, seed, costs = args
    return simulate(table, setting, seed, costs)


def simulate_many(table: CurveTable, settings: Sequence[Setting], seeds: int, costs: Costs = Costs(),
                  processes: int | None = None) -> dict[Setting, list[Run]]:
    """Every setting on seeds 0..seeds-1; on several processes (fork) when there is enough work."""
    import os

    settings = list(dict.fromkeys(settings))  # a setting listed twice is simulated once
    jobs = [(table, s, seed, costs) for s in settings for seed in range(seeds)]
    processes = processes or min(len(jobs), os.cpu_count() or 1)
    if processes > 1 and len(jobs) > 1:
        import multiprocessing
        import sys

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
    # The worse of two middle values, as the benchmark takes it (scripts/bench/time_to_model.py).
    return (statistics.median_low(bests) if table.mode == "max" else statistics.median_high(bests)), runs


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


# An earlier sweep serves as a table only with at least this many whole curves: a handful of
# survivors of an early-stopping sweep would stand for the whole space.
MIN_EARLIER = 8


def earlier_sweep(client, space, metric: str, max_epochs: int, exclude: str | None = None) -> CurveTable | None:
    """The whole curves of the newest finished sweep of the same space (``Space.fingerprint``, on the
    parent run) in the store, for the same metric and at least ``max_epochs`` epochs; None if no
    sweep qualifies. ``exclude``: a parent run not to use (the sweep now ending)."""
    from hpsearch.vocab import ROLE_SWEEP, TAG_ROLE, TAG_SPACE

    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    runs = client.search_runs(ids, f"tags.`{TAG_SPACE}` = '{space.fingerprint()}' and tags.`{TAG_ROLE}` = '{ROLE_SWEEP}' "
                                   "and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=20)
    tried = 0
    for run in runs:
        params = run.data.params
        if run.info.run_id == exclude or params.get("metric") != metric or int(params.get("max_epochs", 0)) < max_epochs:
            continue
        table = _earlier_table(client, run)
        tried += 1
        if table is not None or tried == 3:  # each try reads a sweep's curves back: a few at most
            return table
    return None


def _earlier_table(client, run) -> CurveTable | None:
    """One sweep's table, read once per process (a sweep's end and ``plan`` may ask again)."""
    key = (client.tracking_uri, run.info.run_id)
    if key not in _EARLIER:
        try:
            found = CurveTable.from_parent(client, run)
        except ValueError:  # no whole curve
            found = None
        _EARLIER[key] = found if found is not None and len(found) >= MIN_EARLIER else None
    return _EARLIER[key]


_EARLIER: dict[tuple[str, str], CurveTable | None] = {}


def store_if_any(tracking_uri: str | bool | None):
    """A client of the store to look for earlier sweeps in, without creating one: None when
    tracking is off, the SQLite file does not exist, or the store does not answer (the checks of
    ``settings.store_to_read``, as a quiet None instead of its one line)."""
    from hpsearch.settings import store_to_read

    if tracking_uri is False:
        return None
    try:
        uri = store_to_read(tracking_uri, "plan")
    except ValueError:
        return None
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def find_table(module: SpaceModule, table: str | None = None, from_sweep: str | None = None,
               tracking_uri: str | bool | None = None, experiment: str | None = None, required: bool = True,
               max_epochs: int | None = None) -> CurveTable | None:
    """The curves to replay: ``--table FILE``, else ``--from-sweep NAME`` (read from MLflow), else the
    table shipped beside the space module, else the newest finished sweep of the same space in the
    store (``earlier_sweep``; ``max_epochs``: the least it must have trained). None (or one line,
    if ``required``) when there is none."""
    if table and from_sweep:
        raise ValueError(f"table: give --table or --from-sweep, not both (got {table!r} and {from_sweep!r})")
    if table:
        found = CurveTable.load(table)
    elif from_sweep:
        from mlflow import MlflowClient

        from hpsearch.settings import store_to_read

        uri = store_to_read(tracking_uri, "--from-sweep")
        found = CurveTable.from_sweep(MlflowClient(tracking_uri=uri), from_sweep, experiment)
    else:
        path = table_beside(module.path)
        if path is not None:
            return CurveTable.load(path)
        client = store_if_any(tracking_uri)
        found = earlier_sweep(client, module.space, module.metric, max_epochs or 1) if client is not None else None
        if found is None and required:
            raise ValueError(f"table: no recorded curves for space {module.name!r}: give --table FILE or --from-sweep NAME, "
                             f"ship {module.path.with_suffix('.curves.npz').name} beside the module, or finish a sweep "
                             f"of this space (with {MIN_EARLIER} trials or more trained to the end) first")
    return found


def _spread(values: tuple[float, float, float], fmt) -> str:
    mid, lo, hi = values
    return f"{fmt(mid)} [{fmt(lo)}-{fmt(hi)}]"


def rows(summaries: Sequence[Summary], reference: Summary) -> list[list[str]]:
    """One row per setting: wall, epochs, trials per rung, best, time to target, reached, speed-up."""
    base = reference.time_to_target
    out = []
    for s in summaries:
        ttt = s.time_to_target
        speed = base / ttt if math.isfinite(ttt) and ttt > 0 and math.isfinite(base) else math.nan
        rungs = ", ".join(f"{e}:{n:g}" for e, n in s.trials_per_rung().items())
        out.append([
            s.setting.label, _spread(s.wall, duration), _spread(s.epochs, lambda x: f"{x:.0f}"), rungs,
            _spread(s.best, lambda x: f"{x:.4g}"), duration(ttt), f"{s.reached_share:.0%}",
            "-" if math.isnan(speed) else f"{speed:.2f}x",
        ])
    return out


HEADER = ["setting", "wall: median [10-90%]", "epochs", "trials per rung (epoch:trials)", "best",
          "to target", "reached", "vs random"]


def recommend(summaries: Sequence[Summary], reference: Summary) -> tuple[Summary, float] | None:
    """The hpsearch setting with the shortest median time to the target (ties: fewer epochs), and
    its speed-up over random search (random/FIFO's median time to the same target)."""
    own = [s for s in summaries if s.setting.strategy != "optuna" and math.isfinite(s.time_to_target)]
    if not own:
        return None
    best = min(own, key=lambda s: (s.time_to_target, s.epochs[0]))
    base = reference.time_to_target
    return best, (base / best.time_to_target if best.time_to_target > 0 and math.isfinite(base) else math.nan)


def plot_best(summaries: Sequence[Summary], path: Path, metric: str, target: float | None) -> Path:
    """Median best-so-far against time per setting, with the 10-90% band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(r.wall_s for s in summaries for r in s.runs)
    grid = np.linspace(0, end, 400)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in summaries:
        curves = []
        for r in s.runs:
            times = np.array([t for t, _ in r.best] or [end])
            values = np.array([v for _, v in r.best] or [np.nan])
            idx = np.searchsorted(times, grid, side="right") - 1
            curves.append(np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan))
        a = np.array(curves)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mid, lo, hi = (np.nanpercentile(a, q, axis=0) for q in (50, 10, 90))
        line, = ax.plot(grid / 60, mid, label=s.setting.label)
        ax.fill_between(grid / 60, lo, hi, color=line.get_color(), alpha=0.15)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="random-search target")
    ax.set_xlabel("simulated wall-clock (minutes)")
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title(f"Best so far, median and 10-90% over {len(summaries[0].runs)} seeds")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plan_expectation(curves: CurveTable, space, settings, workers: int, epoch_seconds: float | None,
                     seeds: int = 10, processes: int | None = None) -> Summary:
    """A sweep's settings simulated on recorded curves, for ``hpsearch plan`` (and the parent run's
    plan-against-actual record): epochs and wall over ``seeds`` seeds, epochs scaled to ``epoch_seconds``."""
    from hpsearch.curves import check_table_fits

    s = settings
    check_table_fits(curves, space, s.metric, s.max_epochs)
    costs = Costs(epoch_scale=1.0 if not epoch_seconds else epoch_seconds / curves.median_seconds)
    setting = Setting(str(s.strategy), str(s.scheduler), s.trials, s.max_epochs, s.grace_period, s.reduction_factor, workers)
    runs = simulate_many(curves, [setting], seeds, costs, processes)[setting]
    return Summary(setting, runs, None, curves.mode)


def expected(prep, workers: int, client=None, parent: str | None = None) -> dict[str, float]:
    """Plan against actual, for the parent run at a sweep's end: the plan's arithmetic and, where a
    table of recorded curves ships beside the space module or an earlier sweep of the same space
    is in the store (``client``; ``parent``: this sweep's own run, left out), the simulated median
    (5 seeds, 2 for TPE; in this process, about a second)."""
    from hpsearch.schedulers import plan_budget

    s = prep.settings
    out = {"planned_epochs": float(plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor).total_epochs)}
    path = table_beside(prep.space_path)
    table = CurveTable.load(path) if path is not None else \
        earlier_sweep(client, prep.space, s.metric, s.max_epochs, exclude=parent) if client is not None else None
    if table is None:
        return out
    try:
        summary = plan_expectation(table, prep.space, s, workers, None,
                                   seeds=2 if str(s.strategy) == "tpe" else 5, processes=1)
    except ValueError:  # a table for other settings (another metric, fewer epochs): nothing to compare
        return out
    out["simulated_epochs"] = summary.epochs[0]
    return out


def plan_lines(summary: Summary, curves: CurveTable, ideal_epochs: int) -> list[str]:
    """What ``plan`` prints beside its arithmetic."""
    mid, lo, hi = summary.epochs
    wall = summary.wall
    rungs = ", ".join(f"{e} -> {n:g}" for e, n in summary.trials_per_rung().items())
    return [
        f"Simulated on recorded curves ({len(curves)} configurations of this space"
        f"{', from ' + curves.source if curves.source.startswith('sweep ') else ''}; {len(summary.runs)} seeds, "
        f"{summary.setting.workers} workers): {mid:.0f} epochs [{lo:.0f}-{hi:.0f}] ({mid / ideal_epochs:.2f}x the "
        f"arithmetic above: Ray's ASHA promotes without waiting for a full rung), trials reaching each rung {rungs}; "
        f"wall {duration(wall[0])} [{duration(wall[1])}-{duration(wall[2])}] with start-up and hand-overs.",
    ]


def comparison(module: SpaceModule, curves: CurveTable, settings: Sequence[Setting], seeds: int, costs: Costs,
               epoch_seconds: float | None, plot: Path) -> list[Any]:
    """What ``hpsearch simulate`` prints, in order (lines and one rich table); writes the plot."""
    import time

    from rich.table import Table

    started = time.perf_counter()
    summaries, reference = compare(curves, settings, seeds, costs)
    took = time.perf_counter() - started
    first = settings[0]
    epoch_note = f"epochs scaled to a median of {epoch_seconds:g} s" if epoch_seconds else "epochs as recorded"
    grid = Table(*HEADER)
    for row in rows(summaries, reference):
        grid.add_row(*row)
    distance, repeats = reference.distance()
    out: list[Any] = [
        f"[bold]{module.name}[/]: {curves.describe()}",
        f"{len(settings)} setting(s) x {seeds} seeds, {first.trials} trials of up to {first.max_epochs} epochs; {epoch_note}; "
        f"{costs.start_s:g} s start-up, {costs.trial_s:g} s between trials; simulated in {took:.1f} s",
        grid,
        f"Random-search target: {module.metric} {reference.target:.4g} (the median best of random/FIFO with "
        f"{first.trials} trials); random search reaches it in {duration(reference.time_to_target)} (median).",
        f"Nearest recorded configurations: median distance {distance:.3f} in the unit cube; "
        f"{repeats:.0%} of trials were answered by a row already used in the same sweep.",
    ]
    pick = recommend(summaries, reference)
    if pick is None:
        out.append("Recommended: none of these settings reaches the random-search target in most seeds; give more --trials.")
    else:
        best, speed = pick
        out.append(f"Recommended: {best.setting.label} on {best.setting.workers} workers: reaches the target in "
                   f"{duration(best.time_to_target)} (median), {speed:.2f}x faster than random search.")
    shown = [reference, *(s for s in summaries if s.setting != reference.setting)]
    out.append(f"wrote {plot_best(shown, plot, module.metric, reference.target)}")
    return out


def plan_report(prep, ideal_epochs: int, workers: int, epoch_seconds: float | None, table: str | None = None,
                from_sweep: str | None = None, tracking_uri: str | bool | None = None) -> list[str]:
    """What ``plan`` prints beside its arithmetic: the sweep simulated on recorded curves of its space
    (``--table``, ``--from-sweep``, the table shipped beside the module, or the newest finished sweep
    of the space in the store at ``tracking_uri``); nothing where there are none. A curve source
    that was asked for and fails raises ValueError (one line)."""
    from hpsearch.modules import load_space_module

    asked = bool(table or from_sweep)
    if prep.space_path is None and not asked:
        return []
    try:
        module = load_space_module(prep.space_path) if prep.space_path else None
        curves = find_table(module, table, from_sweep, tracking_uri, required=asked,
                            max_epochs=prep.settings.max_epochs) if module else None
        if curves is None:
            return []
        summary = plan_expectation(curves, prep.space, prep.settings, workers, epoch_seconds)
    except ValueError as exc:
        if asked:
            raise
        return [f"Simulation: not run ({exc})."]
    return plan_lines(summary, curves, ideal_epochs)
