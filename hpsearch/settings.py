"""One validated object for every option of a sweep: ``SweepSettings``.

The Python API (``sweep(...)``), the ``hpsearch`` command, ``resume`` and the nightly config all
build this object and pass it down. Each option is checked on its own when the object is built,
with one line naming the option, the rule and the value. Options that depend on the space module
(``metric``, ``mode``, ``max_epochs``, the default ``name``...) start as None and are filled in by
``engine.prepare``, which returns the settings with every field resolved; that resolved object is
what a sweep records beside Ray's results and what ``resume`` reads back.

A new option is one field here (with its ``help``) plus its flag in ``cli.SWEEP_OPTIONS``.

Example:
    >>> s = SweepSettings(strategy="tpe", trials=27, reduction_factor=3.0)
    >>> s.strategy, s.trials, s.reduction_factor
    (<Strategy.TPE: 'tpe'>, 27, 3)
    >>> SweepSettings(trials=0)
    Traceback (most recent call last):
    ...
    ValueError: trials: must be a whole number >= 1, got 0
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hpsearch.schedulers import check_budget
from hpsearch.vocab import NAME, SETTINGS_FILE, Mode, Scheduler, Strategy, is_number, sqlite_path, whole


@dataclass(frozen=True)
class Resources:
    """What one trial gets. With ``workers`` above 1 the trial trains under PyTorch DDP on that many
    workers, and ``cpus`` / ``gpus`` are what each worker holds. Fractional ``gpus`` pack several
    single-worker trials on one GPU.

    Example:
        >>> Resources(cpus=1, gpus=0.25)
        Resources(cpus=1, gpus=0.25, workers=1)
        >>> Resources(workers=2, gpus=0.5)
        Traceback (most recent call last):
        ...
        ValueError: gpus_per_trial: with several workers per trial each worker needs whole GPUs (NCCL cannot run two ranks of one trial on one GPU), got 0.5 with workers_per_trial=2
    """

    cpus: float = 1.0
    gpus: float = 0.0
    workers: int = 1

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if not is_number(value) or value < 0 or math.isnan(value):
                raise ValueError(f"{name}_per_trial: must be a number >= 0, got {value!r}")
        whole("workers_per_trial", self.workers, 1)
        if self.cpus == 0 and self.gpus == 0:
            raise ValueError("cpus_per_trial: a trial needs some CPU or GPU, got cpus=0 and gpus=0")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"gpus_per_trial: above 1 must be a whole number of GPUs, got {self.gpus!r}")
        if self.workers > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"gpus_per_trial: with several workers per trial each worker needs whole GPUs (NCCL "
                             f"cannot run two ranks of one trial on one GPU), got {self.gpus!r} with "
                             f"workers_per_trial={self.workers}")


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SweepSettings:
    """Every option of a sweep, validated. None means "the space module's, or a default"."""

    metric: str | None = _opt(None, "Reported metric to optimise (default: the module's METRIC).")
    mode: Mode | None = _opt(None, "max or min (default: the module's MODE).")
    strategy: Strategy = _opt(Strategy.RANDOM, "How configurations are proposed.")
    scheduler: Scheduler = _opt(Scheduler.ASHA, "How the epoch budget is shared between trials.")
    trials: int | None = _opt(None, "Number of trials (grid: default the whole grid; else 20).")
    max_epochs: int | None = _opt(None, "Epoch budget per trial (default: the module's MAX_EPOCHS).")
    grace_period: int = _opt(1, "Epochs before a trial can be cut (asha).")
    reduction_factor: float = _opt(3, "Keep 1/eta of trials at each rung (>= 2).")
    seed: int = _opt(0, "Seeds the strategy's proposals.")
    cpus_per_trial: float = _opt(1, "CPUs each trial holds.")
    gpus_per_trial: float = _opt(0, "GPUs each trial holds; fractions pack several trials on one GPU.")
    workers_per_trial: int = _opt(
        1, "Workers per trial: above 1, each trial trains under PyTorch DDP on this many Ray Train workers, "
           "and cpus/gpus per trial are per worker.")
    concurrency: int | None = _opt(None, "At most this many trials at once.")
    max_failures: int = _opt(0, "Retries of a failed trial, from its last checkpoint.")
    dataset: str | None = _opt(None, "Dataset name (default: the module's DATASET).")
    name: str | None = _opt(None, "Sweep name (default: SPACE-strategy-scheduler-time).")
    storage: str | None = _opt(None, "Where Ray keeps results (default ~/ray_results or $HPSEARCH_STORAGE).")
    tracking_uri: str | bool | None = _opt(
        None, "MLflow store (default $MLFLOW_TRACKING_URI, else sqlite mlflow/mlflow.db); 'off' disables.")
    experiment: str | None = _opt(None, "MLflow experiment (default: the space module's name).")
    register_model: str | None = _opt(
        None, "Register the best trial's model in the MLflow Model Registry under this name (a new version "
              "each sweep, loadable as models:/NAME/latest).")
    goal: float | None = _opt(None, "End the sweep once a trial reports the metric at or beyond this value.")
    time_budget_s: float | None = _opt(None, "End the sweep this many seconds after it starts (or resumes).")
    wait_for_resources_s: float | None = _opt(
        None, "An autoscaling cluster: wait this many seconds for a node that fits a trial (default: fail at "
              "once when no node has the resources a trial asks for).")
    checkpoint_every_s: float = _opt(
        60, "A trial keeps its checkpoint where the scheduler may pause or stop it, at its last epoch, and "
            "otherwise at most this often (seconds; 0: every epoch). After a crash, at most this much of a "
            "trial's work repeats.")

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        if self.metric is not None and (not isinstance(self.metric, str) or not self.metric):
            raise ValueError(f"metric: name the reported metric to optimise (e.g. metric='val_acc'), got {self.metric!r}")
        if self.mode is not None:
            set_("mode", Mode.parse(self.mode))
        set_("strategy", Strategy.parse(self.strategy))
        set_("scheduler", Scheduler.parse(self.scheduler))
        if self.trials is not None:
            whole("trials", self.trials, 1)
        check_budget(self.max_epochs, self.grace_period, self.reduction_factor)
        whole("seed", self.seed, 0)
        if self.concurrency is not None:
            whole("concurrency", self.concurrency, 1)
        whole("max_failures", self.max_failures, 0)
        Resources(self.cpus_per_trial, self.gpus_per_trial, self.workers_per_trial)
        for key in ("reduction_factor", "cpus_per_trial", "gpus_per_trial"):  # 3.0 from the CLI prints as 3
            value = getattr(self, key)
            if isinstance(value, float) and value.is_integer():
                set_(key, int(value))
        for key in ("dataset", "storage", "experiment", "register_model"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{key}: must be a non-empty name, got {value!r}")
        if self.name is not None and (not isinstance(self.name, str) or not NAME.match(self.name)):
            raise ValueError(f"name: letters, digits and _ . = - only (max 128), got {self.name!r}")
        if self.tracking_uri == "off":
            set_("tracking_uri", False)
        if self.register_model is not None and self.tracking_uri is False:
            raise ValueError(f"register_model: registering a model needs MLflow tracking, but tracking_uri is off, "
                             f"got {self.register_model!r}")
        if not (self.tracking_uri is None or isinstance(self.tracking_uri, bool) or
                (isinstance(self.tracking_uri, str) and self.tracking_uri)):
            raise ValueError(f"tracking_uri: give a URI such as http://127.0.0.1:5000 or sqlite:///path, "
                             f"or false for none, got {self.tracking_uri!r}")
        if self.goal is not None and (not is_number(self.goal) or not math.isfinite(self.goal)):
            raise ValueError(f"goal: must be a finite number (the metric's value that ends the sweep), got {self.goal!r}")
        if not is_number(self.checkpoint_every_s) or not 0 <= self.checkpoint_every_s < math.inf:
            raise ValueError(f"checkpoint_every_s: must be a number of seconds >= 0, got {self.checkpoint_every_s!r}")
        if self.wait_for_resources_s is not None and (
                not is_number(self.wait_for_resources_s) or not 0 <= self.wait_for_resources_s < math.inf):
            raise ValueError(f"wait_for_resources_s: must be a number of seconds >= 0, got {self.wait_for_resources_s!r}")
        if self.time_budget_s is not None and (not is_number(self.time_budget_s) or not 0 < self.time_budget_s < math.inf):
            raise ValueError(f"time_budget_s: must be a number of seconds > 0, got {self.time_budget_s!r}")

    def replace(self, **changes: Any) -> "SweepSettings":
        """A copy with some options changed, validated again."""
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], where: str = "") -> "SweepSettings":
        """Settings from plain keys (keyword options, JSON); an unknown key is one line naming it
        and the nearest option."""
        known = option_names()
        for key in values:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                raise ValueError(f"{key}: not an option of a sweep{where}" + (f" (did you mean {near[0]}?)" if near else "")
                                 + f"; options: {', '.join(known)}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, (Strategy, Scheduler, Mode)) else v) for k, v in asdict(self).items()}


def option_names() -> list[str]:
    """The options a sweep takes, in the order of the fields."""
    return [f.name for f in fields(SweepSettings)]


def option_field(name: str) -> Field:
    """The field of one option: its default, and its ``help`` in ``metadata``."""
    return next(f for f in fields(SweepSettings) if f.name == name)


def option_help(name: str) -> str:
    return option_field(name).metadata["help"]


# -- where things are kept ------------------------------------------------------------------

def default_storage() -> str:
    return str(Path(os.environ.get("HPSEARCH_STORAGE", "~/ray_results")).expanduser())


def embedded_uri() -> str:
    """SQLite at ``mlflow/mlflow.db`` under the current directory (the repository, for the scripts)."""
    return "sqlite:///" + str(Path.cwd() / "mlflow" / "mlflow.db")


def resolve_tracking_uri(uri: str | bool | None) -> str | None:
    """False turns tracking off; None means $MLFLOW_TRACKING_URI, else the embedded store.

    Example:
        >>> resolve_tracking_uri(False) is None
        True
    """
    if uri is False:
        return None
    if uri is None or uri is True:
        return os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"tracking_uri: give a URI such as http://127.0.0.1:5000 or sqlite:///path, got {uri!r}")
    return uri


def drain_seconds() -> float:
    """How long the end of a sweep waits for an unreachable MLflow before keeping writes on disk
    ($HPSEARCH_MLFLOW_DRAIN_S, default 120)."""
    text = os.environ.get("HPSEARCH_MLFLOW_DRAIN_S", "120")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValueError(f"HPSEARCH_MLFLOW_DRAIN_S: must be a number of seconds >= 0, got {text!r}")
    return seconds


def check_environment() -> None:
    """The environment variables hpsearch reads, checked like the options they stand for: one
    line naming the variable, the rule and the value. ($MLFLOW_TRACKING_URI is checked with the
    tracking store, $RAY_ADDRESS when the cluster is joined.)"""
    env = os.environ
    drain_seconds()
    if "HPSEARCH_STORAGE" in env and not env["HPSEARCH_STORAGE"].strip():
        raise ValueError("HPSEARCH_STORAGE: must be a folder for Ray's results, got ''")
    for folder in filter(None, env.get("HPSEARCH_SPACES", "").split(os.pathsep)):
        if not Path(folder).expanduser().is_dir():
            raise ValueError(f"HPSEARCH_SPACES: each entry must be a folder of space modules, got {folder!r}")
    cache = env.get("HPSEARCH_CACHE")
    if cache is not None:
        try:
            Path(cache).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"HPSEARCH_CACHE: must be a folder hpsearch can create ({exc.strerror}), got {cache!r}") from None


# The stores MLflow's tracking client opens (its store registry's schemes; a SQLAlchemy URI may
# name a driver after a '+', as in postgresql+psycopg2://).
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def tracking_uri_name(value: str | bool | None) -> str:
    """What to call the tracking URI in a message: the variable it came from, or the option."""
    return "MLFLOW_TRACKING_URI" if value in (None, True) and os.environ.get("MLFLOW_TRACKING_URI") else "tracking_uri"


def check_reachable(uri: str, name: str = "tracking_uri") -> None:
    """Fail with one line, before any trial runs, when the tracking store cannot be used. ``name``:
    where the URI came from (the option, or ``$MLFLOW_TRACKING_URI``)."""
    path = sqlite_path(uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else uri.split(":", 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise ValueError(f"{name}: not a tracking store MLflow opens (a URI starting with "
                         f"{', '.join(s + '://' for s in TRACKING_SCHEMES[:5])} or file://), got {uri!r}")
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=5)
        except requests.RequestException as exc:
            raise ValueError(f"{name}: cannot reach the MLflow server at {uri} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ValueError(f"{name}: {uri}/health answered HTTP {response.status_code}, not an MLflow server")
    elif path is not None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{name}: cannot create {str(Path(path).parent)!r} for the SQLite store ({exc.strerror})") from None
    elif scheme == "sqlite":
        raise ValueError(f"{name}: a SQLite store is sqlite:/// and a path (sqlite:////abs/path.db), got {uri!r}")


def store_to_read(tracking_uri: str | None, reader: str) -> str:
    """The MLflow store a command reads a finished sweep from (``reader`` names the command in the
    message); one line if it is off, an absent SQLite file, or unreachable."""
    if tracking_uri == "off":
        raise ValueError(f"tracking_uri: {reader} reads a sweep back from MLflow, so it needs a store, got 'off'")
    uri = resolve_tracking_uri(tracking_uri)
    if sqlite_path(uri) is not None and not Path(sqlite_path(uri)).exists():
        raise ValueError(f"tracking_uri: no MLflow store at {sqlite_path(uri)}")
    check_reachable(uri, tracking_uri_name(tracking_uri))
    return uri


# -- the record of a sweep ------------------------------------------------------------------

@dataclass(frozen=True)
class SweepRecord:
    """What a sweep writes beside Ray's results (``hpsearch.json``): its resolved settings, the
    space module it came from, and the space as it was, so ``resume`` rebuilds the same sweep."""

    settings: SweepSettings
    space_path: str | None
    space: dict[str, Any]

    @property
    def folder(self) -> Path:
        return Path(self.settings.storage, self.settings.name)

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"settings": self.settings.to_json(), "space_path": self.space_path, "space": self.space}
        (self.folder / SETTINGS_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, name: str, storage: str | None = None) -> "SweepRecord":
        """The record of a sweep, by name."""
        root = Path(storage or default_storage()).expanduser()
        path = root / name / SETTINGS_FILE
        if not path.exists():
            known = sorted(p.parent.name for p in root.glob(f"*/{SETTINGS_FILE}")) if root.is_dir() else []
            raise ValueError(f"name: no sweep {name!r} under {str(root)!r} (known: {', '.join(known[-5:]) or 'none'})")
        data = json.loads(path.read_text())
        if "settings" not in data:  # written before November 2026: one flat object
            data = {"space_path": data.pop("space_path"), "space": data.pop("space"), "settings": data}
            data["settings"]["tracking_uri"] = data["settings"]["tracking_uri"] or False  # None meant off
        return cls(SweepSettings.from_mapping(data["settings"], f" in {path}"), data["space_path"], data["space"])
