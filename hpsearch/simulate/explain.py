"""What ``hpsearch simulate`` and ``hpsearch plan`` print of simulations, and the plan-against-actual
figures a sweep records on its parent run at its end.
"""

from __future__ import annotations

import inspect
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.table import Table

from hpsearch.search.schedulers import plan_budget
from hpsearch.simulate.curves import CurveTable, table_beside
from hpsearch.simulate.events import Costs, Setting
from hpsearch.simulate.many import Summary, compare, plan_expectation, recommend
from hpsearch.simulate.plot import plot_best
from hpsearch.simulate.sources import earlier_sweep, find_table
from hpsearch.space.modules import SpaceModule, load_space_module
from hpsearch.text import duration
from hpsearch.trial import session


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


def expected(prep, workers: int, client=None, parent: str | None = None) -> dict[str, float]:
    """Plan against actual, for the parent run at a sweep's end: the plan's arithmetic and, where a
    table of recorded curves ships beside the space module or an earlier sweep of the same space
    is in the store (``client``; ``parent``: this sweep's own run, left out), the simulated median
    (5 seeds, 2 for TPE; in this process, about a second)."""

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
    ratio = mid / ideal_epochs
    reason = WHY_NOT_ARITHMETIC.get(str(summary.setting.scheduler))
    why = f": {reason}" if reason and abs(ratio - 1) >= 0.05 else ""
    return [
        f"Simulated on recorded curves ({len(curves)} configurations of this space"
        f"{', from ' + curves.source if curves.source.startswith('sweep ') else ''}; {len(summary.runs)} seeds, "
        f"{summary.setting.workers} workers): {mid:.0f} epochs [{lo:.0f}-{hi:.0f}] ({ratio:.2f}x the "
        f"arithmetic above{why}), trials reaching each rung {rungs}; "
        f"wall {duration(wall[0])} [{duration(wall[1])}-{duration(wall[2])}] with start-up and hand-overs.",
    ]


# Why a scheduler's simulated epochs differ from plan's arithmetic (shown only when they differ by 5% or more).
WHY_NOT_ARITHMETIC = {
    "asha": "Ray's ASHA promotes a trial once it is in the top 1/eta of those seen at its rung, without waiting "
            "for the rung to fill, so more trials go on than full rungs would let through",
    "hyperband": "Ray's HyperBand fills its brackets in the order trials arrive and judges a rung once the trials "
                 "it holds have reported, so the last, partly filled bracket cuts differently",
    "fifo": "FIFO trains every trial to max_epochs: fewer epochs mean trials that failed or ended early in the "
            "recorded curves",
}


def comparison(module: SpaceModule, curves: CurveTable, settings: Sequence[Setting], seeds: int, costs: Costs,
               epoch_seconds: float | None, plot: Path) -> list[Any]:
    """What ``hpsearch simulate`` prints, in order (lines and one rich table); writes the plot."""

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


def plan_text(prep, epoch_seconds: float | None = None, workers: int | None = None, table: str | None = None,
              from_sweep: str | None = None, tracking_uri: str | bool | None = None,
              experiment: str | None = None) -> Iterator[Any]:
    """What ``hpsearch plan`` prints, line by line (strings, a rich table; a line starting with
    ``warning: `` is one): the arithmetic of rungs and brackets, the time (``epoch_seconds`` given,
    else one epoch measured here), and the simulation where recorded curves exist. A curve source
    that was asked for (``table``, ``from_sweep``) and fails raises ValueError (one line)."""
    s = prep.settings
    p = plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor)
    yield (f"[bold]{s.name}[/]: {s.trials} trials ({s.strategy}"
           + (f", grid of {len(prep.space.grid())}" if s.strategy == "grid" else "") + f"), scheduler {s.scheduler}, "
           f"max {s.max_epochs} epochs, grace {s.grace_period}, reduction factor {s.reduction_factor}")
    rows = Table("bracket", "trials", "rungs: epoch -> trials expected to reach it", "epochs")
    for b in p.brackets:
        rows.add_row(str(b.s), str(b.trials), ", ".join(f"{r.epoch} -> {r.trials}" for r in b.rungs), str(b.epochs))
    yield rows
    yield (f"Total: {p.total_epochs} epochs, against {p.full_epochs} if every trial ran to the end "
           f"({p.total_epochs / p.full_epochs:.1%}; saves {p.saving:.1%}).")
    source = "given"
    if epoch_seconds is None:
        measured = measure_epoch_seconds(prep)
        if measured is None:
            yield "Time: pass --epoch-seconds to estimate it (this trainable takes no max_epochs to measure with)."
            return
        (epoch_seconds, noise), source = measured, "measured here"
        if noise:
            yield f"warning: the epoch time is a noisy estimate ({noise}): pass --epoch-seconds for a steadier time"
    n_workers = workers or s.concurrency or max(
        1, int((os.cpu_count() or 1) // max(s.cpus_per_trial * s.workers_per_trial, 1e-9)))  # trials at once
    seconds = p.total_epochs * epoch_seconds
    yield (f"Time: {epoch_seconds:.3g} s per epoch ({source}) -> {seconds / 3600:.3g} worker-hours, "
           f"about {duration(seconds / n_workers)} on {n_workers} workers.")
    yield from plan_report(prep, p.total_epochs, n_workers, epoch_seconds, table, from_sweep, tracking_uri, experiment)


def measure_epoch_seconds(prep) -> tuple[float, str] | None:
    """Median seconds of one epoch over three sampled configs, outside Ray (report keeps them local),
    and why the sample is noisy, if it is: times far apart, or the machine busy with other work
    (an estimate moved 32x between two runs on a loaded machine). None when the trainable takes no
    ``max_epochs`` to measure with."""
    params = inspect.signature(prep.train_fn).parameters
    if "max_epochs" not in params:
        return None
    load = (lambda: os.getloadavg()[0]) if hasattr(os, "getloadavg") else (lambda: 0.0)
    kwargs: dict[str, Any] = {"max_epochs": 1}
    if "data" in params:
        kwargs["data"] = prep.data
    configs = prep.space.sample(3, seed=prep.settings.seed)
    prep.train_fn(configs[0], **kwargs)  # not timed: the first epoch in a process pays torch's one-time set-up
    load_before, times = load(), []
    for config in configs:
        start = time.perf_counter()
        prep.train_fn(config, **kwargs)
        times.append(time.perf_counter() - start)
    session.history.clear()  # the reports made outside a sweep (the list a caller may have replaced)
    busy, cpus = max(load_before, load()), os.cpu_count() or 1
    noise = []
    if max(times) > 3 * min(times):
        noise.append(f"epochs took {min(times):.3g}-{max(times):.3g} s for the 3 sampled configurations")
    if busy > cpus:
        noise.append(f"load average {busy:.1f} on {cpus} CPUs")
    return statistics.median(times), "; ".join(noise)


def plan_report(prep, ideal_epochs: int, workers: int, epoch_seconds: float | None, table: str | None = None,
                from_sweep: str | None = None, tracking_uri: str | bool | None = None,
                experiment: str | None = None) -> list[str]:
    """What ``plan`` prints beside its arithmetic: the sweep simulated on recorded curves of its space
    (``--table``, ``--from-sweep``, the table shipped beside the module, or the newest finished sweep
    of the space in the store at ``tracking_uri``); nothing where there are none. A curve source
    that was asked for and fails raises ValueError (one line)."""

    asked = bool(table or from_sweep)
    if prep.space_path is None and not asked:
        return []
    try:
        module = load_space_module(prep.space_path) if prep.space_path else None
        curves = find_table(module, table, from_sweep, tracking_uri, experiment, required=asked,
                            max_epochs=prep.settings.max_epochs) if module else None
        if curves is None:
            return []
        summary = plan_expectation(curves, prep.space, prep.settings, workers, epoch_seconds)
    except ValueError as exc:
        if asked:
            raise
        return [f"Simulation: not run ({exc})."]
    return plan_lines(summary, curves, ideal_epochs)
