"""One validated object for every option of a sweep: ``SweepSettings``.

The Python API (``sweep(...)``), the ``hpsearch`` command, ``resume`` and the nightly config all
build this object and pass it down. Each option is checked on its own when the object is built,
with one line naming the option, the rule and the value. Options that depend on the space module
(``metric``, ``mode``, ``max_epochs``, the default ``name``...) start as None and are filled in by
``engine.prepare``, which returns the settings with every field resolved; that resolved object is
what a sweep records beside Ray's results (``hpsearch.record``) and what ``resume`` reads back.
The environment variables hpsearch reads are checked in ``hpsearch.environment``; the tracking
store's address in ``hpsearch.tracking.uri``.

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
import math
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from hpsearch.budget import Budget
from hpsearch.runtime_env import check_runtime_env
from hpsearch.storage import Location, as_location
from hpsearch.vocab import NAME, Mode, Scheduler, Strategy, is_number, whole


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
    storage: str | None = _opt(None, "Where Ray keeps results: a folder, or a URI such as s3://bucket/prefix "
                                "(default ~/ray_results or $HPSEARCH_STORAGE).")
    tracking_uri: str | bool | None = _opt(
        None, "MLflow store (default: MLflow's own, $MLFLOW_TRACKING_URI else ./mlflow.db, where mlflow ui "
              "looks); 'off' disables.")
    experiment: str | None = _opt(None, "MLflow experiment (default: PROJECT/SPACE, the project being the space "
                                        "module's folder, or the one above a spaces/ folder).")
    register_model: str | None = _opt(
        None, "Register the best trial's model in the MLflow Model Registry under this name (a new version "
              "each sweep, loadable as models:/NAME/latest).")
    goal: float | None = _opt(None, "End the sweep once a trial reports the metric at or beyond this value.")
    time_budget_s: float | None = _opt(None, "End the sweep this long after it starts (or resumes): seconds in "
                                             "Python, a duration such as 90m or 4h on the command line.")
    budget: str | None = _opt(
        None, "What the sweep may spend: a wall-clock (4h), epochs (500 epochs) or worker-hours (16 gpu-h, 8 cpu-h). "
              "Trials, grace period, reduction factor and concurrency not set are chosen to fit it, by simulation "
              "on recorded curves of the space; the sweep ends when it is spent.")
    wait_for_resources_s: float | None = _opt(
        None, "An autoscaling cluster: wait this long for a node that fits a trial (seconds; 10m on the command "
              "line; default: fail at once when no node has the resources a trial asks for).")
    runtime_env: dict[str, Any] | None = _opt(
        None, "Ray runtime environment of the trials (working_dir, py_modules, pip, env_vars...; a YAML or JSON "
              "file on the command line). Default: the space module's folder is shipped as working_dir.")
    checkpoint_every_s: float = _opt(
        60, "A trial keeps its checkpoint where the scheduler may pause or stop it, at its last epoch, and "
            "otherwise at most this often (seconds; a duration such as 60s or 5m on the command line; 0: every "
            "epoch). After a crash, at most this much of a trial's work repeats.")

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
        if self.runtime_env is not None:
            check_runtime_env(self.runtime_env)
        if self.goal is not None and (not is_number(self.goal) or not math.isfinite(self.goal)):
            raise ValueError(f"goal: must be a finite number (the metric's value that ends the sweep), got {self.goal!r}")
        if not is_number(self.checkpoint_every_s) or not 0 <= self.checkpoint_every_s < math.inf:
            raise ValueError(f"checkpoint_every_s: must be a number of seconds >= 0, got {self.checkpoint_every_s!r}")
        if self.wait_for_resources_s is not None and (
                not is_number(self.wait_for_resources_s) or not 0 <= self.wait_for_resources_s < math.inf):
            raise ValueError(f"wait_for_resources_s: must be a number of seconds >= 0, got {self.wait_for_resources_s!r}")
        if self.budget is not None:
            set_("budget", str(Budget.parse(self.budget)))
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

    @property
    def folder(self) -> Location | None:
        """The sweep's folder in its storage (resolved settings: both known), local or in a bucket."""
        return as_location(self.storage) / self.name if self.storage and self.name else None

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


def check_budget(max_epochs: int | None, grace_period: int, reduction_factor: float) -> None:
    """Raise ``ValueError`` (one line naming the option) for an impossible budget.

    ``max_epochs`` None: not known yet (the space module's default); the rest is checked.
    """
    if max_epochs is not None:
        whole("max_epochs", max_epochs, 1)
    whole("grace_period", grace_period, 1)
    if max_epochs is not None and grace_period > max_epochs:
        raise ValueError(f"grace_period: must be <= max_epochs, got grace_period={grace_period}, max_epochs={max_epochs}")
    if not is_number(reduction_factor) or not reduction_factor >= 2 or math.isinf(reduction_factor):
        raise ValueError(f"reduction_factor: must be >= 2, got {reduction_factor!r}")
