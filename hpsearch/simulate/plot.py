"""The best-so-far plot of ``hpsearch simulate``: median and 10-90% band over seeds, per setting."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from hpsearch.simulate.many import Summary


def plot_best(summaries: Sequence[Summary], path: Path, metric: str, target: float | None) -> Path:
    """Median best-so-far against time per setting, with the 10-90% band over seeds.

    Drawn on a ``Figure`` of its own by the Agg renderer: no ``matplotlib.use``, no pyplot state,
    so a notebook calling this keeps its own backend and figures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: only when plotting
    from matplotlib.figure import Figure

    end = max(r.wall_s for s in summaries for r in s.runs)
    grid = np.linspace(0, end, 400)
    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for s in summaries:
        curves = []
        for r in s.runs:
            times = np.array([t for t, _ in r.best] or [end])
            values = np.array([v for _, v in r.best] or [np.nan])
            idx = np.searchsorted(times, grid, side="right") - 1
            curves.append(np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan))
        a = np.array(curves)
        with np.errstate(all="ignore"):
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
    return path
