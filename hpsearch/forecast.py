"""What ``hpsearch simulate`` and ``hpsearch plan`` print from simulations: where the curves come
from, a table of settings side by side, the recommendation, and a plot of best-so-far against time.

Kept apart from ``hpsearch.simulate`` (the event loop) so the loop stays free of rich and matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from hpsearch.curves import CurveTable, table_beside
from hpsearch.modules import SpaceModule
from hpsearch.simulate import Summary
from hpsearch.vocab import duration


def find_table(module: SpaceModule, table: str | None = None, from_sweep: str | None = None,
               tracking_uri: str | None = None, experiment: str | None = None, required: bool = True) -> CurveTable | None:
    """The curves to replay: ``--table FILE``, else ``--from-sweep NAME`` (read from MLflow), else the
    table shipped beside the space module. None (or one line, if ``required``) when there is none."""
    if table and from_sweep:
        raise ValueError(f"table: give --table or --from-sweep, not both (got {table!r} and {from_sweep!r})")
    if table:
        found = CurveTable.load(table)
    elif from_sweep:
        from mlflow import MlflowClient

        from hpsearch.settings import check_reachable, resolve_tracking_uri, tracking_uri_name
        from hpsearch.vocab import sqlite_path

        if tracking_uri == "off":
            raise ValueError("tracking_uri: --from-sweep reads a sweep back from MLflow, so it needs a store, got 'off'")
        uri = resolve_tracking_uri(tracking_uri)
        if sqlite_path(uri) is not None and not Path(sqlite_path(uri)).exists():
            raise ValueError(f"tracking_uri: no MLflow store at {sqlite_path(uri)}")
        check_reachable(uri, tracking_uri_name(tracking_uri))
        found = CurveTable.from_sweep(MlflowClient(tracking_uri=uri), from_sweep, experiment)
    else:
        path = table_beside(module.path)
        if path is None:
            if required:
                raise ValueError(f"table: no recorded curves for space {module.name!r}: give --table FILE or --from-sweep NAME "
                                 f"(or ship {module.path.with_suffix('.curves.npz').name} beside the module)")
            return None
        found = CurveTable.load(path)
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
    from hpsearch.simulate import Costs, Setting, simulate_many

    s = settings
    check_table_fits(curves, space, s.metric, s.max_epochs)
    costs = Costs(epoch_scale=1.0 if not epoch_seconds else epoch_seconds / curves.median_seconds)
    setting = Setting(str(s.strategy), str(s.scheduler), s.trials, s.max_epochs, s.grace_period, s.reduction_factor, workers)
    runs = simulate_many(curves, [setting], seeds, costs, processes)[setting]
    return Summary(setting, runs, None, curves.mode)


def expected(prep, workers: int) -> dict[str, float]:
    """Plan against actual, for the parent run at a sweep's end: the plan's arithmetic and, where a
    table of recorded curves ships beside the space module, the simulated median (5 seeds, 2 for
    TPE; in this process, about a second)."""
    from hpsearch.schedulers import plan_budget

    s = prep.settings
    out = {"planned_epochs": float(plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor).total_epochs)}
    path = table_beside(prep.space_path)
    if path is None:
        return out
    try:
        summary = plan_expectation(CurveTable.load(path), prep.space, s, workers, None,
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
        f"Simulated on recorded curves ({len(curves)} configurations of this space; {len(summary.runs)} seeds, "
        f"{summary.setting.workers} workers): {mid:.0f} epochs [{lo:.0f}-{hi:.0f}] ({mid / ideal_epochs:.2f}x the "
        f"arithmetic above: Ray's ASHA promotes without waiting for a full rung), trials reaching each rung {rungs}; "
        f"wall {duration(wall[0])} [{duration(wall[1])}-{duration(wall[2])}] with start-up and hand-overs.",
    ]
