"""Tables and plots of a finished sweep, built from what MLflow holds and logged to the parent run.

(Named analysis, not report: ``hpsearch.report`` is the trial-side function users call, and a
submodule of that name would replace it on the package once imported.)

The same function serves the end of a sweep and ``hpsearch report NAME`` later, so what a person
sees in the MLflow UI and on disk is one thing. Plots use matplotlib, each on its own ``Figure``
saved through the Agg renderer (``figure``): no ``matplotlib.use`` and no pyplot state, so a
notebook that runs a sweep keeps its inline plots. The parameter importance is Optuna's default
evaluator (PED-ANOVA in Optuna 5) over the trials that reported the metric. Beside the PNGs,
interactive pages (zoom, hover for a trial's values) from Optuna's plotly figures, built from the
sweep's trials as an in-memory study (``optuna_study``); one that fails is skipped with a warning.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.search.strategies import to_optuna_distributions
from hpsearch.space import Choice, Fixed, Float, Int, PowerOfTwo, Space
from hpsearch.vocab import (
    ROLE_SWEEP,
    TAG_EPOCHS,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    Mode,
    TrialStatus,
)

ARTIFACT_DIR = "report"
# Optuna's plotly figures, written as <name>.html beside the PNGs. The pages load plotly.js from
# its CDN, as mlflow.log_figure writes them: ~10 KB a page rather than ~4.6 MB with it inlined;
# viewing one needs a browser that can reach the CDN.
INTERACTIVE = ("optimization_history", "parallel_coordinate", "param_importances", "intermediate_values")

log = logging.getLogger(__name__)


@dataclass
class TrialRow:
    run_id: str
    trial_id: str
    status: str
    epochs: int
    params: dict[str, str]
    value: float | None
    curve: list[tuple[int, float]] = field(default_factory=list)
    stamps: list[tuple[int, int]] = field(default_factory=list)  # (epoch, ms) the metric was reported
    start_ms: int = 0


@dataclass
class SweepData:
    name: str
    parent_run_id: str
    metric: str
    mode: str
    max_epochs: int
    space: Space
    rows: list[TrialRow]


def find_parent(client, name: str, experiment: str | None = None):
    """The parent run of a sweep, by sweep name."""
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    ids = [e.experiment_id for e in exps if e is not None]
    runs = client.search_runs(ids, f"tags.`{TAG_SWEEP}` = '{name}' and tags.`{TAG_ROLE}` = '{ROLE_SWEEP}'",
                              max_results=1) if ids else []
    if not runs:
        raise ValueError(f"name: no sweep {name!r} in the MLflow store" + (f" (experiment {experiment!r})" if experiment else ""))
    return runs[0]


def load_sweep(client, parent) -> SweepData:
    """Children, their params, statuses and learning curves (with when each epoch was reported),
    read back from MLflow."""
    params = parent.data.params
    metric, mode = params["metric"], params["mode"]
    space_path = client.download_artifacts(parent.info.run_id, "space.json", tempfile.mkdtemp(prefix="hpsearch-"))
    space = Space.from_json(Path(space_path).read_text())
    children = client.search_runs([parent.info.experiment_id], f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'",
                                  max_results=50000)
    rows = []
    for child in children:
        history = client.get_metric_history(child.info.run_id, metric)
        curve = sorted({m.step: m.value for m in history}.items())
        when = sorted({m.step: m.timestamp for m in history}.items())
        tags = child.data.tags
        rows.append(TrialRow(
            run_id=child.info.run_id, trial_id=tags.get(TAG_TRIAL, ""), status=tags.get(TAG_STATUS, "?"),
            epochs=int(tags.get(TAG_EPOCHS, len(curve)) or 0), params=dict(child.data.params),
            value=curve[-1][1] if curve else None, curve=curve, stamps=when, start_ms=int(child.info.start_time or 0),
        ))
    rows.sort(key=lambda r: r.trial_id)
    return SweepData(parent.data.tags.get(TAG_SWEEP, ""), parent.info.run_id, metric, mode,
                     int(params["max_epochs"]), space, rows)


def param_from_text(space: Space, name: str, text: str) -> Any:
    p = space[name] if name in space else None
    if isinstance(p, (Float,)):
        return float(text)
    if isinstance(p, (Int, PowerOfTwo)):
        return int(text)
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def write_table(data: SweepData, path: Path) -> Path:
    names = [p.name for p in data.space.params]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "run_id", "status", "epochs", data.metric, *names])
        for r in data.rows:
            w.writerow([r.trial_id, r.run_id, r.status, r.epochs, "" if r.value is None else r.value,
                        *[r.params.get(n, "") for n in names]])
    return path


def _tuned(data: SweepData) -> list:
    """Parameters that actually vary across the trials."""
    out = []
    for p in data.space.tuned:
        if isinstance(p, Fixed):
            continue
        if len({r.params.get(p.name) for r in data.rows if p.name in r.params}) > 1:
            out.append(p)
    return out


def _scored(data: SweepData) -> list[TrialRow]:
    return [r for r in data.rows if r.value is not None and math.isfinite(r.value) and r.status != TrialStatus.FAILED]


def figure(**kwargs):
    """A matplotlib ``Figure`` of its own, drawn by the Agg renderer whatever backend the process
    uses (a notebook's inline one, say): nothing global is set or kept, and ``savefig`` writes PNG.

    Example:
        >>> fig = figure(figsize=(2, 1)); fig.subplots().plot([0, 1])[0].get_xydata().shape
        (2, 2)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: only when plotting
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot_parallel_coordinates(data: SweepData, path: Path) -> Path:
    from matplotlib import colormaps  # matplotlib: only when plotting
    from matplotlib.collections import LineCollection

    params, rows = _tuned(data), _scored(data)
    fig = figure(figsize=(max(6, 1.6 * (len(params) + 1)), 4.5))
    ax = fig.subplots()
    if params and rows:
        values = [r.value for r in rows]
        lo, hi = min(values), max(values)
        cmap = colormaps["viridis"]
        lines, colors = [], []
        for r in sorted(rows, key=lambda r: -Mode(data.mode).rank(r.value)):  # best drawn last
            # Each axis is the parameter's unit interval: log parameters sit on a log axis.
            ys = [p.to_unit(param_from_text(data.space, p.name, r.params[p.name])) if p.name in r.params else math.nan
                  for p in params]
            shade = 0.5 if hi == lo else (r.value - lo) / (hi - lo)
            ys.append(shade)  # the metric's own axis
            lines.append(list(enumerate(ys)))
            colors.append(cmap(shade if Mode(data.mode) is Mode.MAX else 1 - shade))
        # One collection rather than a line per trial: 10,000 trials draw in well under a second,
        # not 6 s.
        ax.add_collection(LineCollection(lines, colors=colors, alpha=0.8))
        ax.set_xlim(-0.2, len(params) + 0.2)
        ax.set_ylim(-0.05, 1.05)
        labels = [f"{p.name}\n({'log ' if getattr(p, 'log', False) or isinstance(p, PowerOfTwo) else ''}"
                  f"{_range(p)})" for p in params] + [f"{data.metric}\n({lo:.3g}..{hi:.3g})"]
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks([0, 1], ["low", "high"])
    ax.set_title(f"{data.name}: parameters of {len(rows)} trials, coloured by {data.metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _range(p) -> str:
    if isinstance(p, Choice):
        return "|".join(map(str, p.options))
    return f"{p.low:g}..{p.high:g}"


def plot_metric_vs_params(data: SweepData, path: Path) -> Path:
    from matplotlib.ticker import NullFormatter  # matplotlib: only when plotting

    params, rows = _tuned(data), _scored(data)
    n = max(len(params), 1)
    cols = min(n, 3)
    fig = figure(figsize=(4.2 * cols, 3.4 * math.ceil(n / cols)))
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False)
    for ax, p in zip(axes.flat, params):
        pts = [(param_from_text(data.space, p.name, r.params[p.name]), r.value, r.status) for r in rows if p.name in r.params]
        if isinstance(p, Choice):
            xs = [p.options.index(x) for x, _, _ in pts]
            ax.set_xticks(range(len(p.options)), [str(o) for o in p.options])
        else:
            xs = [x for x, _, _ in pts]
            if getattr(p, "log", False) or isinstance(p, PowerOfTwo):
                ax.set_xscale("log", base=2 if isinstance(p, PowerOfTwo) else 10)
                # Unlabelled minor ticks: measuring their labels was half of this plot's 0.9 s.
                ax.xaxis.set_minor_formatter(NullFormatter())
        colors = ["tab:blue" if s == TrialStatus.COMPLETED else "tab:orange" for _, _, s in pts]
        ax.scatter(xs, [y for _, y, _ in pts], c=colors, s=22)
        ax.set_xlabel(p.name)
        ax.set_ylabel(data.metric)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    fig.suptitle(f"{data.metric} against each parameter (blue: completed, orange: stopped early)", fontsize=10)
    # Fixed margins: tight_layout measured every tick label of every panel (0.5 s of 0.9 s here).
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.9, wspace=0.3, hspace=0.45)
    fig.savefig(path, dpi=110)
    return path


def plot_learning_curves(data: SweepData, path: Path) -> Path:
    from matplotlib.collections import LineCollection  # matplotlib: only when plotting

    fig = figure(figsize=(7, 4.5))
    ax = fig.subplots()
    curves, colors, cuts, cut_colors = [], [], [], []
    for r in data.rows:
        if not r.curve:
            continue
        color = {TrialStatus.COMPLETED: "tab:blue", TrialStatus.STOPPED: "tab:orange",
                 TrialStatus.FAILED: "tab:red"}.get(r.status, "tab:gray")
        curves.append(r.curve)
        colors.append(color)
        if r.status in (TrialStatus.STOPPED, TrialStatus.FAILED):  # where the scheduler cut it
            cuts.append(r.curve[-1])
            cut_colors.append(color)
    if curves:
        # One collection for all curves (a line per trial took 9 s for 10,000 trials).
        ax.add_collection(LineCollection(curves, colors=colors, alpha=0.7, linewidths=1))
        if cuts:
            ax.scatter(*zip(*cuts), marker="x", c=cut_colors, s=49, linewidths=1)
        ax.autoscale_view()
    ax.set_xlabel("epoch")
    ax.set_ylabel(data.metric)
    ax.set_title(f"{data.name}: learning curves (x: cut by the scheduler, red: failed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def param_importances(data: SweepData) -> dict[str, float]:
    """Optuna's importance (its default evaluator) over the trials that reported the metric."""
    import optuna  # Optuna: only when it samples or ranks


    rows, params = _scored(data), [p.name for p in _tuned(data)]
    if len(rows) < 3 or not params:
        return {}
    dists = to_optuna_distributions(data.space)
    study = optuna.create_study(direction=Mode(data.mode).direction)
    for r in rows:
        values = {n: param_from_text(data.space, n, r.params[n]) for n in params if n in r.params}
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions={n: dists[n] for n in values}, value=r.value))
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. every trial scored the same
        return {}


def optuna_study(data: SweepData):
    """The sweep's trials as an in-memory Optuna study (no storage), for Optuna's plots: a trial
    that reported the metric and did not fail is COMPLETE with its last value (stopped trials too,
    as in the PNGs and the importance), the others FAIL; every trial carries its curve as
    intermediate values, and its status, trial id and run id as user attributes."""
    import optuna  # Optuna: only when it samples, ranks or plots

    dists = to_optuna_distributions(data.space)
    params = [p.name for p in _tuned(data)]
    scored = {r.run_id for r in _scored(data)}
    study = optuna.create_study(direction=Mode(data.mode).direction, study_name=data.name)
    for r in data.rows:
        values = {n: param_from_text(data.space, n, r.params[n]) for n in params if n in r.params}
        ok = r.run_id in scored
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions={n: dists[n] for n in values},
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
            value=r.value if ok else None,
            intermediate_values={step: v for step, v in r.curve if math.isfinite(v)},
            user_attrs={"status": r.status, "trial_id": r.trial_id, "run_id": r.run_id}))
    return study


def write_interactive(data: SweepData, out_dir: Path) -> list[Path]:
    """Optuna's plotly figures of the sweep (``INTERACTIVE``) as HTML pages in ``out_dir``; a figure
    Optuna cannot draw for these trials (too few, nothing varied) is skipped with a warning."""
    try:
        import optuna.visualization as vis  # Optuna and plotly: only when plotting

        study = optuna_study(data)
    except Exception as exc:  # noqa: BLE001 - interactive plots are extras: never worth the report
        log.warning("interactive plots skipped: %s: %s", type(exc).__name__, exc)
        return []
    target = {"target_name": data.metric}
    out = []
    for name in INTERACTIVE:
        path = out_dir / f"{name}.html"
        try:
            fig = getattr(vis, f"plot_{name}")(study, **({} if name == "intermediate_values" else target))
            fig.update_layout(title=f"{data.name}: {fig.layout.title.text or name.replace('_', ' ')}")
            fig.write_html(path, include_plotlyjs="cdn", auto_open=False)
        except Exception as exc:  # noqa: BLE001 - as above: one plot that fails leaves the others
            log.warning("interactive plot %s skipped: %s: %s", name, type(exc).__name__, exc)
            continue
        out.append(path)
    return out


def plot_importance(importance: dict[str, float], data: SweepData, path: Path) -> Path:
    fig = figure(figsize=(6, 0.45 * max(len(importance), 2) + 1.2))
    ax = fig.subplots()
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance for {data.metric} (Optuna, sums to 1)")
    ax.set_title(f"{data.name}: parameter importance" + ("" if importance else " (too few trials)"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_report(data: SweepData, out_dir: Path) -> list[Path]:
    """The trials table, four PNG plots and Optuna's interactive ones (``write_interactive``),
    written to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    importance = param_importances(data)
    (out_dir / "importance.json").write_text(json.dumps(importance, indent=2))
    return [
        write_table(data, out_dir / "trials.csv"),
        plot_parallel_coordinates(data, out_dir / "parallel_coordinates.png"),
        plot_metric_vs_params(data, out_dir / "metric_vs_params.png"),
        plot_learning_curves(data, out_dir / "learning_curves.png"),
        plot_importance(importance, data, out_dir / "param_importance.png"),
        out_dir / "importance.json",
        *write_interactive(data, out_dir),
    ]


def log_report(client, parent_run_id: str, data: SweepData | None = None) -> list[Path]:
    """Write the report of a sweep and log it as artifacts of its parent run.

    ``data``: what the sweep that just ended holds in memory; without it, read back from MLflow
    (one metric-history query per trial: seconds for a few thousand trials).
    """
    data = data if data is not None else load_sweep(client, client.get_run(parent_run_id))
    with tempfile.TemporaryDirectory(prefix="hpsearch-report-") as tmp:
        paths = write_report(data, Path(tmp))
        client.log_artifacts(parent_run_id, tmp, ARTIFACT_DIR)
        return [Path(ARTIFACT_DIR) / p.name for p in paths]
