"""The ``hpsearch`` command: run, plan, resume, report, replay, nightly.

User mistakes print one line, ``hpsearch: error: ...``, and exit with status 2 before Ray starts.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from typer.exceptions import TyperException  # typer vendors click: its errors derive from this
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Hyperparameter search for PyTorch on Ray Tune, with every trial in MLflow.",
)
out = Console()
if not out.is_terminal:  # piped or in CI: a wide table beats one folded into 80 columns
    out = Console(width=200)
err = Console(stderr=True)


def _quiet_libraries() -> None:
    """The command prints its own progress and results; silence the libraries' INFO chatter.

    (The Python API leaves logging alone: configuring it is the caller's business.)
    """
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow sets up its loggers
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import optuna  # it sets its own level on first use, so only its API sticks

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # pickle advice: we log our own model
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # failed trials are in our table instead
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*noload.*")


def _duration(seconds: float) -> str:
    """Seconds for people: 42 s, 3.5 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit status 2."""


def _fail(message: str) -> None:
    raise UserError(message)


# Options shared by run and plan (typer has no option groups; these keep the two in step).
SpaceArg = typer.Argument(..., help="Space module: a path (spaces/mlp.py) or a short name (mlp).")
Strategy = typer.Option("random", "--strategy", help="grid | random | tpe")
Scheduler = typer.Option("asha", "--scheduler", help="fifo | asha | hyperband")
Trials = typer.Option(None, "--trials", help="Number of trials (grid: default the whole grid).")
MaxEpochs = typer.Option(None, "--max-epochs", help="Epoch budget per trial (default: the module's).")
Grace = typer.Option(1, "--grace-period", help="Epochs before a trial can be cut (asha).")
Eta = typer.Option(3.0, "--reduction-factor", help="Keep 1/eta of trials at each rung (>= 2).")
Cpus = typer.Option(1.0, "--cpus-per-trial")
Gpus = typer.Option(0.0, "--gpus-per-trial", help="Fractions pack several trials on one GPU.")
Concurrency = typer.Option(None, "--concurrency", help="At most this many trials at once.")
MaxFailures = typer.Option(0, "--max-failures", help="Retries of a failed trial, from its last checkpoint.")
Seed = typer.Option(0, "--seed")
Name = typer.Option(None, "--name", help="Sweep name (default: SPACE-strategy-scheduler-time).")
Storage = typer.Option(None, "--storage", help="Where Ray keeps results (default ~/ray_results or $HPSEARCH_STORAGE).")
TrackingUri = typer.Option(None, "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite mlflow/mlflow.db); 'off' disables.")
Experiment = typer.Option(None, "--experiment", help="MLflow experiment (default: the space module's name).")
Goal = typer.Option(None, "--goal", help="End the sweep once a trial reports the metric at or beyond this value.")
TimeBudget = typer.Option(None, "--time-budget", help="End the sweep this many seconds after it starts.")


def _prepare(space, strategy, scheduler, trials, max_epochs, grace_period, reduction_factor, cpus, gpus,
             concurrency, max_failures, seed, name, storage, tracking_uri=None, experiment=None, goal=None,
             time_budget=None):
    from hpsearch.sweep import Resources, prepare

    try:
        return prepare(
            space, strategy=strategy, scheduler=scheduler, trials=trials, max_epochs=max_epochs,
            grace_period=grace_period, reduction_factor=_number(reduction_factor), seed=seed,
            resources=Resources(cpus=_number(cpus), gpus=_number(gpus)), concurrency=concurrency,
            max_failures=max_failures, name=name, storage=storage,
            tracking_uri=False if tracking_uri == "off" else tracking_uri, experiment=experiment, goal=goal,
            time_budget_s=time_budget,
        )
    except ValueError as exc:
        _fail(str(exc))


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


@app.command()
def run(
    space: str = SpaceArg, strategy: str = Strategy, scheduler: str = Scheduler,
    trials: Optional[int] = Trials, max_epochs: Optional[int] = MaxEpochs, grace_period: int = Grace,
    reduction_factor: float = Eta, cpus_per_trial: float = Cpus, gpus_per_trial: float = Gpus,
    concurrency: Optional[int] = Concurrency, max_failures: int = MaxFailures, seed: int = Seed,
    name: Optional[str] = Name, storage: Optional[str] = Storage,
    tracking_uri: Optional[str] = TrackingUri, experiment: Optional[str] = Experiment, goal: Optional[float] = Goal,
    time_budget: Optional[float] = TimeBudget,
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or ray://host:port (default: start one here)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run a sweep on Ray and print the best trial and a table of all trials."""
    prep = _prepare(space, strategy, scheduler, trials, max_epochs, grace_period, reduction_factor,
                    cpus_per_trial, gpus_per_trial, concurrency, max_failures, seed, name, storage,
                    tracking_uri, experiment, goal, time_budget)
    from hpsearch.sweep import run_prepared

    result = run_prepared(prep, address=address, progress=progress)
    print_result(result)
    print_tracking(result)
    _exit_if_nothing_reported(result)


@app.command()
def plan(
    space: str = SpaceArg, strategy: str = Strategy, scheduler: str = Scheduler,
    trials: Optional[int] = Trials, max_epochs: Optional[int] = MaxEpochs, grace_period: int = Grace,
    reduction_factor: float = Eta, cpus_per_trial: float = Cpus, gpus_per_trial: float = Gpus,
    concurrency: Optional[int] = Concurrency, max_failures: int = MaxFailures, seed: int = Seed,
    name: Optional[str] = Name, storage: Optional[str] = Storage,
    epoch_seconds: Optional[float] = typer.Option(None, "--epoch-seconds", help="Seconds per epoch (default: measure one epoch here)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Trials at once (default: CPUs here / cpus per trial)."),
) -> None:
    """Say what a sweep will do, before anything runs: trials, rungs, brackets, epochs, time."""
    prep = _prepare(space, strategy, scheduler, trials, max_epochs, grace_period, reduction_factor,
                    cpus_per_trial, gpus_per_trial, concurrency, max_failures, seed, name, storage,
                    tracking_uri="off")  # a plan records nothing
    from hpsearch.schedulers import plan_budget

    s = prep.settings
    if epoch_seconds is not None and epoch_seconds <= 0:
        _fail(f"epoch_seconds: must be > 0, got {epoch_seconds}")
    if workers is not None and workers < 1:
        _fail(f"workers: must be a whole number >= 1, got {workers}")
    p = plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor)
    out.print(f"[bold]{s.name}[/]: {s.trials} trials ({s.strategy}"
              + (f", grid of {len(prep.space.grid())}" if s.strategy == "grid" else "") + f"), scheduler {s.scheduler}, "
              f"max {s.max_epochs} epochs, grace {s.grace_period}, reduction factor {s.reduction_factor}")
    table = Table("bracket", "trials", "rungs: epoch -> trials expected to reach it", "epochs")
    for b in p.brackets:
        table.add_row(str(b.s), str(b.trials), ", ".join(f"{r.epoch} -> {r.trials}" for r in b.rungs), str(b.epochs))
    out.print(table)
    out.print(f"Total: {p.total_epochs} epochs, against {p.full_epochs} if every trial ran to the end "
              f"({p.total_epochs / p.full_epochs:.1%}; saves {p.saving:.1%}).")
    source = "given"
    if epoch_seconds is None:
        epoch_seconds, source = measure_epoch_seconds(prep), "measured here"
    if epoch_seconds is None:
        out.print("Time: pass --epoch-seconds to estimate it (this trainable takes no max_epochs to measure with).")
        return
    n_workers = workers or s.concurrency or max(1, int((os.cpu_count() or 1) // max(s.cpus_per_trial, 1e-9)))
    seconds = p.total_epochs * epoch_seconds
    out.print(f"Time: {epoch_seconds:.3g} s per epoch ({source}) -> {seconds / 3600:.3g} worker-hours, "
              f"about {_duration(seconds / n_workers)} on {n_workers} workers.")


def measure_epoch_seconds(prep) -> float | None:
    """Median seconds of one epoch over three sampled configs, outside Ray (report keeps them local)."""
    params = inspect.signature(prep.train_fn).parameters
    if "max_epochs" not in params:
        return None
    import statistics

    from hpsearch import session

    times = []
    for config in prep.space.sample(3, seed=prep.settings.seed):
        kwargs: dict[str, Any] = {"max_epochs": 1}
        if "data" in params:
            kwargs["data"] = prep.data
        start = time.perf_counter()
        prep.train_fn(config, **kwargs)
        times.append(time.perf_counter() - start)
    session.history.clear()
    return statistics.median(times)


@app.command()
def resume(
    name: str = typer.Argument(..., help="The sweep's name."),
    storage: Optional[str] = Storage,
    address: Optional[str] = typer.Option(None, "--address"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Finish an interrupted sweep: completed trials are kept, unfinished ones continue."""
    from hpsearch.sweep import resume_sweep

    try:
        result = resume_sweep(name, storage=storage, address=address, progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    print_result(result)
    print_tracking(result)
    _exit_if_nothing_reported(result)


def _exit_if_nothing_reported(result) -> None:
    if result.best is None and not any(t.status == "failed" for t in result.trials):
        err.print(f"hpsearch: error: metric: no trial reported {result.metric!r}; does train() call "
                  f"hpsearch.report(epoch=..., {result.metric}=...)?", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def report(
    name: str = typer.Argument(..., help="The sweep's name."),
    tracking_uri: Optional[str] = TrackingUri, experiment: Optional[str] = Experiment,
    out_dir: Path = typer.Option(Path("report"), "--out", help="Folder for trials.csv and the plots."),
) -> None:
    """Table and plots of a finished sweep, from what MLflow holds."""
    from mlflow import MlflowClient

    from hpsearch.analysis import find_parent, load_sweep, write_report
    from hpsearch.tracking import check_reachable, resolve_tracking_uri

    try:
        uri = resolve_tracking_uri(None if tracking_uri in (None, "off") else tracking_uri)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            _fail(f"tracking_uri: no MLflow store at {uri[len('sqlite:///'):]}")
        check_reachable(uri)
        client = MlflowClient(tracking_uri=uri)
        data = load_sweep(client, find_parent(client, name, experiment))
    except ValueError as exc:
        _fail(str(exc))
    paths = write_report(data, out_dir / name)
    table = Table("trial", "status", "epochs", data.metric, title=f"{name}: {len(data.rows)} trials")
    for r in sorted(data.rows, key=lambda r: (r.value is None, -(r.value or 0) if data.mode == "max" else (r.value or 0))):
        table.add_row(r.trial_id, r.status, str(r.epochs), "-" if r.value is None else f"{r.value:.4g}")
    out.print(table)
    for p in paths:
        out.print(f"wrote {p}")


@app.command()
def replay(
    name: str = typer.Argument(..., help="The sweep's name."),
    storage: Optional[str] = Storage,
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Send to this store instead of the sweep's."),
) -> None:
    """Send to MLflow the writes a sweep kept on disk while the tracking server was unreachable."""
    from hpsearch.sweep import load_settings
    from hpsearch.tracking import PENDING_FILE, replay as replay_writes

    try:
        s = load_settings(name, storage)
        path = Path(s.storage, s.name, PENDING_FILE)
        if not path.exists():
            _fail(f"name: sweep {name!r} has no writes waiting for MLflow ({path} does not exist)")
        sent = replay_writes(path, tracking_uri)
    except ValueError as exc:
        _fail(str(exc))
    out.print(f"Sent {sent} writes of {name} to MLflow.")


@app.command()
def nightly(
    config: Path = typer.Argument(..., help="The nightly config (TOML), e.g. scripts/nightly/mlp.toml."),
    date: Optional[str] = typer.Option(None, "--date", help="The night, YYYY-MM-DD (default: today)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Tonight's sweep of a scheduled tuning job, and the morning verdict.

    Exit status: 0 fine, 1 worse than recent nights (or no result), 2 bad input, 3 already running.
    """
    from hpsearch.nightly import Busy, EXIT_BUSY, load_config, parse_date, run_nightly

    try:
        outcome = run_nightly(load_config(config), parse_date(date), progress=progress,
                              log=lambda m: out.print(m, markup=False, highlight=False))
    except ValueError as exc:
        _fail(str(exc))
    except Busy as exc:
        err.print(f"hpsearch nightly: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BUSY)
    raise typer.Exit(outcome.exit_code)


def print_tracking(result) -> None:
    if not result.tracking:
        return
    t = result.tracking
    if t.get("pending"):
        err.print(f"hpsearch: MLflow was unreachable: {t['pending']['writes']} writes kept in {t['pending']['path']}; "
                  f"send them with: hpsearch replay {result.name}", markup=False)
    out.print(f"MLflow: experiment {t['experiment_id']}, sweep run {t['parent_run_id']} in {t['uri']}")
    if t["uri"].startswith("sqlite:///"):
        out.print(f"Open the UI: mlflow/serve, then http://127.0.0.1:5000/#/experiments/{t['experiment_id']}/runs")
    elif t["uri"].startswith("http"):
        out.print(f"Open the UI: {t['uri']}/#/experiments/{t['experiment_id']}/runs")


def print_result(result) -> None:
    table = Table(title=f"{result.name}: {len(result.trials)} trials in {_duration(result.wall_s)}, "
                        f"{result.total_epochs} epochs")
    keys = sorted({k for t in result.trials for k in t.config if len({str(x.config.get(k)) for x in result.trials}) > 1})
    for col in ["trial", "status", "epochs", result.metric, *keys]:
        table.add_column(col)
    order = sorted(result.trials, key=lambda t: (t.metric is None, -(t.metric or 0) if result.mode == "max" else (t.metric or 0)))
    for t in order:
        status = t.status + (f" ({t.error})" if t.error else "")
        table.add_row(t.trial_id, status, str(t.epochs), "-" if t.metric is None else f"{t.metric:.4g}",
                      *[_fmt(t.config.get(k)) for k in keys])
    out.print(table)
    if result.best is None:
        out.print(f"No trial reported {result.metric} (failed: {sum(t.status == 'failed' for t in result.trials)}).")
        return
    if result.stopped_by:
        pending = sum(t.status == "pending" for t in result.trials)
        out.print(f"Ended early: the {result.stopped_by.replace('_', ' ')} was reached; running trials were stopped"
                  + (f", {pending} never started." if pending else "."))
    out.print(f"[bold]Best trial {result.best.trial_id}[/]: {result.metric} = {result.best_metric:.4g}")
    out.print(json.dumps(result.best_config, indent=None))


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line and exit status 2 for user mistakes, before any compute."""
    _quiet_libraries()
    try:
        code = app(args=argv, prog_name="hpsearch", standalone_mode=False)
    except UserError as exc:
        err.print(f"hpsearch: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("hpsearch: interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # a bad option value or an unknown option
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err.print(f"hpsearch: error: {message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
