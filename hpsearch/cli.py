"""The ``hpsearch`` command: run, plan, simulate, resume, report, sync, nightly.

User mistakes print one line, ``hpsearch: error: ...``, and exit with status 2 before Ray starts.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from typer.exceptions import TyperException  # typer vendors click: its errors derive from this

from hpsearch.console import err, out, print_result, print_tracking
from hpsearch.engine import prepare, resume_sweep, run_prepared
from hpsearch.environment import default_storage
from hpsearch.nightly import EXIT_BUSY, EXIT_CRASHED, Busy, load_config, parse_date, run_nightly
from hpsearch.nightly import dry_run as plan_night
from hpsearch.record import SweepRecord
from hpsearch.runtime_env import load_runtime_env
from hpsearch.settings import SweepSettings, option_field, option_help
from hpsearch.simulate.budget import fit_budget
from hpsearch.simulate.curves import check_table_fits
from hpsearch.simulate.events import Costs
from hpsearch.simulate.explain import comparison, plan_text
from hpsearch.simulate.many import settings_from_lists
from hpsearch.simulate.sources import find_table
from hpsearch.space.modules import load_space_module
from hpsearch.storage import as_location
from hpsearch.text import first_line, parse_duration, parse_list
from hpsearch.tracking.analysis import find_parent, load_sweep, write_report
from hpsearch.tracking.ui import serve
from hpsearch.tracking.uri import store_to_read
from hpsearch.tracking.writer import sync as send_pending
from hpsearch.vocab import PENDING_FILE, VERSION, Mode, Scheduler, Strategy, TrialStatus, whole

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Hyperparameter search for PyTorch on Ray Tune, with every trial in MLflow.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _quiet_libraries() -> None:
    """The command prints its own progress and results; silence the libraries' INFO chatter.

    (The Python API leaves logging alone: configuring it is the caller's business.)
    """

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow sets up its loggers
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import optuna  # it sets its own level on first use, so only its API sticks

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # pickle advice: we log our own model
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # failed trials are in our table instead



class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit status 2."""

def _fail(message: str) -> None:
    raise UserError(message)


class Duration:
    """The command-line type of an option in seconds: written with its unit (90s, 5m, 2h)."""


# Each sweep option's flag and type on the command line; its help and default come from its
# SweepSettings field. A new sweep option is one field in settings.py plus one line here.
SWEEP_OPTIONS: dict[str, tuple[str, Any]] = {
    "strategy": ("--strategy", Strategy),
    "scheduler": ("--scheduler", Scheduler),
    "trials": ("--trials", Optional[int]),
    "max_epochs": ("--max-epochs", Optional[int]),
    "grace_period": ("--grace-period", int),
    "reduction_factor": ("--reduction-factor", float),
    "seed": ("--seed", int),
    "cpus_per_trial": ("--cpus-per-trial", float),
    "gpus_per_trial": ("--gpus-per-trial", float),
    "workers_per_trial": ("--workers-per-trial", int),
    "concurrency": ("--concurrency", Optional[int]),
    "max_failures": ("--max-failures", int),
    "metric": ("--metric", Optional[str]),
    "mode": ("--mode", Optional[Mode]),
    "dataset": ("--dataset", Optional[str]),
    "name": ("--name", Optional[str]),
    "storage": ("--storage", Optional[str]),
    "tracking_uri": ("--tracking-uri", Optional[str]),
    "experiment": ("--experiment", Optional[str]),
    "register_model": ("--register-model", Optional[str]),
    "goal": ("--goal", Optional[float]),
    "time_budget_s": ("--time-budget", Duration),
    "budget": ("--budget", Optional[str]),
    "checkpoint_every_s": ("--checkpoint-every", Duration),
    "runtime_env": ("--runtime-env", Optional[str]),
    "wait_for_resources_s": ("--wait-for-resources", Duration),
}


def _parser(parse):
    """An option's parser whose ValueError is the same one line as the Python API gives (an enum's,
    a duration's), not click's own words around it."""

    def parsed(value):
        try:
            return parse(value)
        except ValueError as exc:
            raise UserError(str(exc)) from None

    return parsed


def _option(name: str) -> inspect.Parameter:
    flag, kind = SWEEP_OPTIONS[name]
    default = option_field(name).default
    enum = next((e for e in (Strategy, Scheduler, Mode) if kind in (e, Optional[e])), None)
    extra = {"parser": _parser(enum.parse), "metavar": "[" + "|".join(m.value for m in enum) + "]"} if enum else {}
    if kind is Duration:
        extra = {"parser": _parser(functools.partial(parse_duration, name)), "metavar": "DURATION"}
        default = None if default is None else f"{default:g}s"
    option = typer.Option(default.value if isinstance(default, Enum) else default, flag, help=option_help(name),
                          show_default=default is not None, **extra)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=Optional[str] if enum or kind is Duration else kind)


def sweep_options(*, exclude: tuple[str, ...] = ()):
    """Give a command every sweep option as a flag, collected into ``settings: SweepSettings``."""
    names = [n for n in SWEEP_OPTIONS if n not in exclude]

    def decorate(command):
        own = [p for p in inspect.signature(command).parameters.values() if p.name not in ("settings", "given")]
        wants_given = "given" in inspect.signature(command).parameters

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {n: kwargs.pop(n) for n in names}
            context = kwargs.pop("ctx")
            if wants_given:  # the options on the command line (a budget chooses only the others)
                kwargs["given"] = frozenset(n for n in names if getattr(context.get_parameter_source(n), "name", "DEFAULT")
                                            not in ("DEFAULT", "DEFAULT_MAP"))
            try:
                if values.get("runtime_env") is not None:
                    values["runtime_env"] = load_runtime_env(values["runtime_env"])
                settings = SweepSettings(**values)
            except ValueError as exc:
                _fail(str(exc))
            return command(settings=settings, **kwargs)

        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)] + \
            own + [_option(n) for n in names]
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must read the signature above, not the command's
        return wrapper

    return decorate


SpaceArg = typer.Argument(..., help="Space module: a path (spaces/mlp.py) or a short name (mlp).")
Address = typer.Option(None, "--address", help="Ray cluster: auto, host:port or ray://host:port (default: start one here).")
ShowProgress = typer.Option(True, "--progress/--no-progress", help="The live progress bar (off for logs and cron: "
                            "the tables at the end only).")
Storage = typer.Option(None, "--storage", help=option_help("storage"))
ShowTrialOutput = typer.Option(False, "--show-trial-output", help="Print what trials print (stdout, stderr) here as "
                               "they run, each line prefixed by its worker, as Ray does (with tracking, each trial's "
                               "MLflow run holds it as output/trial.log either way).")


def _prepare(space: str, settings: SweepSettings):

    try:
        return prepare(space, settings)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
@sweep_options()
def run(
    space: str = SpaceArg,
    address: Optional[str] = Address,
    progress: bool = ShowProgress,
    show_trial_output: bool = ShowTrialOutput,
    *, settings: SweepSettings, given: frozenset[str] = frozenset(),
) -> None:
    """Run a sweep on Ray and print the best trial and a table of all trials."""
    prep = _prepare(space, settings)
    if prep.settings.budget:
        _fit_budget(prep, given, tracking_uri=prep.settings.tracking_uri, experiment=prep.settings.experiment)

    try:
        result = run_prepared(prep, address=address, progress=progress, show_trial_output=show_trial_output)
    except ValueError as exc:  # the cluster: no answer at the address, or no node that fits a trial
        _fail(str(exc))
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: ended at once
        _interrupted(prep.settings.name, prep.settings.storage)
    _finish(result)


def _fit_budget(prep, given: frozenset[str], **sources) -> float | None:
    """Choose the settings ``--budget`` leaves open, print the choice; its seconds per epoch."""
    try:
        choice = fit_budget(prep, given, **sources)
    except ValueError as exc:
        _fail(str(exc))
    for line in prep.budget_lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    return choice.epoch_s


def _finish(result) -> None:
    print_result(result)  # the trials are known: the table does not wait for the end's best model and report
    result.wait()
    for line in result.end_errors:
        err.print(f"hpsearch: {line}", markup=False, highlight=False, soft_wrap=True)
    print_tracking(result)
    if result.interrupted:
        _interrupted(result.name, as_location(result.path).parent.uri, result.signal_exit)
    _exit_if_nothing_reported(result)


def _interrupted(name: str, storage: str | None, code: int = 130) -> None:
    """The last line after an interrupt, and its exit status."""

    where = "" if storage is None or as_location(storage) == as_location(default_storage()) else f" --storage {storage}"
    out.print(f"interrupted: resume with hpsearch resume {name}{where}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
@sweep_options(exclude=("name", "storage", "register_model", "goal", "time_budget_s", "checkpoint_every_s",
                         "runtime_env", "wait_for_resources_s", "max_failures"))
def plan(
    space: str = SpaceArg,
    epoch_seconds: Optional[float] = typer.Option(None, "--epoch-seconds", help="Seconds per epoch (default: measure one epoch here)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Trials at once (default: CPUs here / cpus per trial)."),
    table: Optional[str] = typer.Option(None, "--table", help="Simulate on this curve table (default: the one shipped beside the space module)."),
    from_sweep: Optional[str] = typer.Option(None, "--from-sweep", help="Simulate on the curves of this finished sweep."),
    *, settings: SweepSettings, given: frozenset[str] = frozenset(),
) -> None:
    """Say what a sweep will do, before anything runs: trials, rungs, brackets, epochs, time; and,
    where recorded curves of the space exist, what a simulation of it on them expects. With
    --budget, first the settings chosen to fit it."""
    prep = _prepare(space, settings.replace(tracking_uri=False))  # a plan records nothing: no store is opened

    if epoch_seconds is not None and epoch_seconds <= 0:
        _fail(f"epoch_seconds: must be > 0, got {epoch_seconds}")
    if workers is not None and workers < 1:
        _fail(f"workers: must be a whole number >= 1, got {workers}")
    if prep.settings.budget:
        epoch_seconds = _fit_budget(prep, given, epoch_seconds=epoch_seconds, workers=workers, table=table,
                                    from_sweep=from_sweep, tracking_uri=settings.tracking_uri,
                                    experiment=settings.experiment) or epoch_seconds
        workers = prep.settings.concurrency or workers  # the concurrency the budget chose, if fewer
    try:  # printed as it comes: measuring an epoch and simulating take seconds each
        for line in plan_text(prep, epoch_seconds, workers, table, from_sweep, settings.tracking_uri, settings.experiment):
            if isinstance(line, str) and line.startswith("warning: "):
                err.print(f"hpsearch: {line}", markup=False, highlight=False, soft_wrap=True)
            else:
                out.print(line, **({} if not isinstance(line, str) or line.startswith("[bold]") else
                                   {"markup": False, "highlight": False, "soft_wrap": True}))
    except ValueError as exc:  # only where --table or --from-sweep asked for a curve source that fails
        _fail(str(exc))


@app.command()
def simulate(
    space: str = SpaceArg,
    from_sweep: Optional[str] = typer.Option(None, "--from-sweep", help="Replay the curves of this finished sweep (read from MLflow)."),
    table: Optional[str] = typer.Option(None, "--table", help="Replay a curve table file (.npz; default: the one shipped beside the space module)."),
    strategy: str = typer.Option("random", "--strategy", help="grid, random, tpe; a comma list compares them."),
    scheduler: str = typer.Option("asha", "--scheduler", help="fifo, asha, hyperband; a comma list compares them."),
    trials: int = typer.Option(27, "--trials", help="Trials per simulated sweep."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epochs per trial at most (default: the table's)."),
    grace_period: str = typer.Option("1", "--grace-period", help="ASHA's first rung; a comma list compares them."),
    reduction_factor: str = typer.Option("3", "--reduction-factor", help="A comma list compares them, e.g. 2,3,4."),
    workers: str = typer.Option("2", "--workers", help="Trials at once; a comma list compares them."),
    seeds: int = typer.Option(30, "--seeds", help="Simulated sweeps per setting (seeds 0..K-1)."),
    epoch_seconds: Optional[float] = typer.Option(None, "--epoch-seconds", help="Median seconds per epoch (default: the table's own; epochs keep their relative cost)."),
    trial_overhead: float = typer.Option(0.40, "--trial-overhead", help="Seconds between trials on a worker (default: measured by the benchmark)."),
    optuna: bool = typer.Option(False, "--optuna/--no-optuna", help="Also Optuna used directly: TPE with its Hyperband and successive-halving pruners."),
    plot: Path = typer.Option(Path("simulate.png"), "--plot", help="Where the best-so-far plot goes."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store for --from-sweep."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment of --from-sweep (default: search them all)."),
) -> None:
    """Predict wall-clock, epochs and the best found, for settings side by side, from recorded curves."""

    try:
        lists = {
            "strategy": parse_list("strategy", strategy, lambda v: str(Strategy.parse(v))),
            "scheduler": parse_list("scheduler", scheduler, lambda v: str(Scheduler.parse(v))),
            "grace_period": parse_list("grace_period", grace_period, int),
            "reduction_factor": parse_list("reduction_factor", reduction_factor, float),
            "workers": parse_list("workers", workers, int),
        }
        whole("seeds", seeds, 1)
        if epoch_seconds is not None and not epoch_seconds > 0:
            raise ValueError(f"epoch_seconds: must be > 0, got {epoch_seconds}")
        module = load_space_module(space)
        curves = find_table(module, table, from_sweep, tracking_uri, experiment, max_epochs=max_epochs)
        epochs = max_epochs if max_epochs is not None else curves.max_epochs
        check_table_fits(curves, module.space, module.metric, epochs)
        costs = Costs(trial_s=trial_overhead, epoch_scale=1.0 if epoch_seconds is None else epoch_seconds / curves.median_seconds)
        settings = settings_from_lists(lists, trials, epochs, optuna)
    except ValueError as exc:
        _fail(str(exc))
    for line in comparison(module, curves, settings, seeds, costs, epoch_seconds, plot):
        out.print(line, soft_wrap=True)


@app.command()
def resume(
    name: str = typer.Argument(..., help="The sweep's name."),
    storage: Optional[str] = Storage,
    address: Optional[str] = Address,
    progress: bool = ShowProgress,
    show_trial_output: bool = ShowTrialOutput,
) -> None:
    """Finish an interrupted sweep: completed trials are kept, unfinished ones continue."""

    try:
        result = resume_sweep(name, storage=storage, address=address, progress=progress,
                              show_trial_output=show_trial_output)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(name, storage)
    _finish(result)


def _exit_if_nothing_reported(result) -> None:
    if result.best is None and not any(t.status == TrialStatus.FAILED for t in result.trials):
        err.print(f"hpsearch: error: metric: no trial reported {result.metric!r}; does train() call "
                  f"hpsearch.report(epoch=..., {result.metric}=...)?", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def report(
    name: str = typer.Argument(..., help="The sweep's name."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store to read (default: MLflow's own, $MLFLOW_TRACKING_URI else ./mlflow.db)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment (default: search them all)."),
    out_dir: Path = typer.Option(Path("report"), "--out", help="Folder for trials.csv and the plots."),
) -> None:
    """Table and plots of a finished sweep, from what MLflow holds."""
    from mlflow import MlflowClient  # MLflow (~2 s): only when the store is used


    try:
        client = MlflowClient(tracking_uri=store_to_read(tracking_uri, "report"))
        data = load_sweep(client, find_parent(client, name, experiment))
    except ValueError as exc:
        _fail(str(exc))
    paths = write_report(data, out_dir / name)
    table = Table("trial", "status", "epochs", data.metric, title=f"{name}: {len(data.rows)} trials")
    for r in sorted(data.rows, key=lambda r: (r.value is None, Mode(data.mode).rank(r.value or 0))):
        table.add_row(r.trial_id, r.status, str(r.epochs), "-" if r.value is None else f"{r.value:.4g}")
    out.print(table)
    for p in paths:
        out.print(f"wrote {p}")


@app.command()
def ui(
    name: Optional[str] = typer.Argument(None, help="A sweep's name: print the address of its run (default: the newest sweep)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store (default: the one the sweep "
                                               "recorded, else MLflow's own: $MLFLOW_TRACKING_URI, else ./mlflow.db)."),
    storage: Optional[str] = Storage,
    experiment: Optional[str] = typer.Option(None, "--experiment", help="Look for the sweep in this experiment only."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but 127.0.0.1 lets other machines "
                             "read and delete runs: put authentication in front first."),
    port: int = typer.Option(5000, "--port", help="TCP port of the UI."),
) -> None:
    """Open the MLflow UI on the store a sweep wrote (started here for a local store) and print the
    address of the sweep's run; Ctrl-C stops it."""
    try:
        if tracking_uri is None and name is not None:
            try:  # the store this sweep recorded, wherever the command runs from
                recorded = SweepRecord.load(name, storage).settings.tracking_uri
                tracking_uri = recorded or None
            except (ValueError, FileNotFoundError):
                pass  # not in this storage: look in the default store
        code = serve(tracking_uri, name, experiment, host, port,
                     lambda m: out.print(m, markup=False, highlight=False, soft_wrap=True))
    except ValueError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command()
def sync(
    name: str = typer.Argument(..., help="The sweep's name."),
    storage: Optional[str] = Storage,
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Send to this store instead of the sweep's."),
) -> None:
    """Send to MLflow the writes a sweep kept on disk while the tracking server was unreachable."""

    try:
        path = SweepRecord.load(name, storage).folder / PENDING_FILE
        if not path.exists():
            _fail(f"name: sweep {name!r} has no writes waiting for MLflow ({path} does not exist)")
        sent = send_pending(path, tracking_uri)
    except ValueError as exc:
        _fail(str(exc))
    out.print(f"Sent {sent} writes of {name} to MLflow.")


@app.command()
def nightly(
    config: Path = typer.Argument(..., help="The nightly config (TOML), e.g. scripts/nightly/mlp.toml."),
    date: Optional[str] = typer.Option(None, "--date", help="The night, YYYY-MM-DD (default: today)."),
    progress: bool = ShowProgress,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the config fully and say what the night would "
                                 "do (reuse key, replays, warm start, epochs); write nothing, start nothing."),
    force: bool = typer.Option(False, "--force", help="Run the night again though the ledger says it is done; "
                               "the earlier entry stays in the ledger, marked superseded."),
) -> None:
    """Tonight's sweep of a scheduled tuning job, and the morning verdict.

    Exit status: 0 fine; 1 regression (worse than the best recent night by more than
    regression_threshold); 2 bad input (nothing started); 3 no result (no trial reported the
    metric); 4 crashed (recorded in the ledger; the next start tries the night again); 5 another
    copy is running (nothing done); 130 / 143 ended by SIGINT / SIGTERM (the next start resumes
    the night). --dry-run exits 0 or 2.
    """
    show = lambda m: out.print(m, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    try:
        cfg = load_config(config)
        if dry_run:
            plan_night(cfg, parse_date(date), force=force, log=show)
            raise typer.Exit(0)
        outcome = run_nightly(cfg, parse_date(date), force=force, progress=progress, log=show,
                              warn=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
    except ValueError as exc:
        _fail(str(exc))
    except Busy as exc:
        err.print(f"hpsearch nightly: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BUSY)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # before the night's own record (a check that broke, not bad input): one line
        err.print(f"hpsearch nightly: crashed: {type(exc).__name__}: {first_line(exc)}", markup=False,
                  highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CRASHED)
    raise typer.Exit(outcome.exit_code)


def _version(value: bool) -> None:
    if value:
        out.print(f"hpsearch {VERSION}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _common(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                         help="Print hpsearch's version and exit.")) -> None:
    """Hyperparameter search for PyTorch on Ray Tune, with every trial in MLflow."""


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
