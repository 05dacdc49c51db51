"""The words every module shares: trial statuses, stop reasons, choices, MLflow tag names, and
the few small checks written once. (How values are shown to people, and secrets masked, is
``hpsearch.text``.)

This module imports nothing else of hpsearch (and no Ray, MLflow or torch), so every layer can
use it. States and reasons are ``str`` enums: they compare equal to their text, print as it, and
go into JSON and MLflow tags as plain strings.

Example:
    >>> TrialStatus.STOPPED == "stopped", str(Strategy.TPE), Scheduler.parse("asha")
    (True, 'tpe', <Scheduler.ASHA: 'asha'>)
    >>> sqlite_path("sqlite:////tmp/mlflow.db"), sqlite_path("http://127.0.0.1:5000")
    ('/tmp/mlflow.db', None)
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any

VERSION = "0.1.0"  # hpsearch's version (pyproject.toml says the same; recorded on every sweep)


class Words(str, Enum):
    """A ``str`` enum that prints as its value and parses with a one-line error."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: Any):
        """The member for ``value`` (a member or its text); ``ValueError`` naming the option if none."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            # The option is named after the enum: Strategy -> strategy.
            raise ValueError(f"{cls.__name__.lower()}: must be one of {choices}, got {value!r}") from None


class Strategy(Words):
    """How configurations are proposed."""

    GRID = "grid"
    RANDOM = "random"
    TPE = "tpe"


class Scheduler(Words):
    """How the epoch budget is shared between trials."""

    FIFO = "fifo"
    ASHA = "asha"
    HYPERBAND = "hyperband"


class Mode(Words):
    """Whether the metric is maximised or minimised, and what "better" means under it.

    Example:
        >>> Mode("min").better(0.1, 0.2), Mode.MAX.reaches(0.9, 0.9), Mode.MIN.best([3, 1, 2])
        (True, True, 1)
    """

    MAX = "max"
    MIN = "min"

    def better(self, a: float, b: float) -> bool:
        """``a`` strictly better than ``b``."""
        return a > b if self is Mode.MAX else a < b

    def reaches(self, value: float, target: float) -> bool:
        """``value`` at or beyond ``target``."""
        return value >= target if self is Mode.MAX else value <= target

    @property
    def sign(self) -> int:
        """+1 where larger is better, -1 where smaller is: ``sign * (a - b)`` > 0 when a is better."""
        return 1 if self is Mode.MAX else -1

    @property
    def direction(self) -> str:
        """Optuna's word for the mode."""
        return "maximize" if self is Mode.MAX else "minimize"

    def best(self, items, key=None):
        """The best of ``items`` (by ``key``)."""
        return (max if self is Mode.MAX else min)(items, key=key)

    def rank(self, value: float) -> float:
        """A sort key that puts the best value first."""
        return -value if self is Mode.MAX else value


class TrialStatus(Words):
    """Where a trial ended up (in the trials table, ``hpsearch.status`` tags and the report)."""

    COMPLETED = "completed"  # ran to max_epochs
    STOPPED = "stopped"  # cut early: by the scheduler, the goal, the time budget or the deadline
    FAILED = "failed"
    RUNNING = "running"
    PENDING = "pending"  # never started
    INTERRUPTED = "interrupted"  # in MLflow: the sweep ended while the trial was still running


class StopReason(Words):
    """What ended a whole sweep before its trials did (``SweepResult.stopped_by``), or what stopped
    one trial early (``hpsearch.stopped_by``: these, or the scheduler's name)."""

    GOAL = "goal"
    TIME_BUDGET = "time_budget"
    BUDGET = "budget"  # --budget spent: its wall-clock, epochs or worker-hours
    DEADLINE = "deadline"
    DRIVER = "driver"
    INTERRUPTED = "interrupted"  # SIGINT or SIGTERM: the sweep stopped where it was, to be resumed


# -- MLflow tag names -------------------------------------------------------------------------

TAG_SWEEP = "hpsearch.sweep"  # the sweep's name, on the parent and on every child
TAG_ROLE = "hpsearch.role"  # ROLE_SWEEP on the parent, ROLE_TRIAL on a child
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
TAG_TRIAL = "hpsearch.trial_id"
TAG_STATUS = "hpsearch.status"  # a TrialStatus
TAG_EPOCHS = "hpsearch.epochs"
TAG_CONFIG_HASH = "hpsearch.config_hash"
TAG_SPACE = "hpsearch.space"  # on the parent: Space.fingerprint(), so a later plan finds sweeps of the same space
TAG_STOPPED_AT = "hpsearch.stopped_at_epoch"
TAG_STOPPED_BY = "hpsearch.stopped_by"  # a StopReason or the scheduler's name
TAG_TPE_TOLD = "hpsearch.tpe_told"  # on a nightly's parent run: earlier trials TPE was told before its first
TAG_FORECAST = "hpsearch.forecast"  # a budgeted sweep's latest forecast of its spending, on the parent run
TAG_ERROR = "hpsearch.error"
TAG_RETRIES = "hpsearch.retries"
TAG_REUSED_FROM = "hpsearch.reused_from"
TAG_REUSED_EPOCHS = "hpsearch.reused_epochs"
TAG_VERSION = "hpsearch.version"
TAG_RAY_RESOURCES = "hpsearch.ray_resources"
TAG_BEST = "hpsearch.best_run_id"
TAG_BEST_TRIAL = "hpsearch.best_trial_id"
TAG_BEST_CONFIG = "hpsearch.best_config"
TAG_BEST_MODEL = "hpsearch.best_model_uri"
TAG_REGISTERED = "hpsearch.registered_model"  # models:/NAME/VERSION, when the sweep registered its best model
TAG_NIGHTLY = "hpsearch.nightly"
TAG_NIGHT = "hpsearch.night"
TAG_VERDICT = "hpsearch.verdict"
TAG_VERDICT_REUSED = "hpsearch.verdict.reused_trials"
TAG_VERDICT_CHANGE = "hpsearch.verdict.change"
TAG_VERDICT_REFERENCE = "hpsearch.verdict.reference_night"
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"
TAG_GIT_COMMIT = "mlflow.source.git.commit"

# -- keys in Ray's results and in our checkpoints -----------------------------------------------

# Keys Ray adds to every result; everything else a trial reports is a metric worth a curve.
RAY_KEYS = frozenset({
    "epoch", "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "node_id", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint", "experiment_tag",
    "timesteps_total", "episodes_total", "timesteps_since_restore", "config",
})
REUSED_KEY = "hpsearch_reused"  # in a replayed result: where the recorded result came from
REPLAY_MARK = "replay.json"  # in a checkpoint written while replaying a recorded curve
SETTINGS_FILE = "hpsearch.json"  # a sweep's settings, beside Ray's experiment state
PENDING_FILE = "mlflow-pending.jsonl"  # MLflow writes kept on disk while the store was away

# -- small checks --------------------------------------------------------------------------

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def whole(name: str, value: Any, low: int) -> int:
    """``value`` if it is a whole number >= ``low``; else ``ValueError`` naming ``name``.

    Example:
        >>> whole("trials", 0, 1)
        Traceback (most recent call last):
        ...
        ValueError: trials: must be a whole number >= 1, got 0
    """
    if not is_whole(value) or value < low:
        raise ValueError(f"{name}: must be a whole number >= {low}, got {value!r}")
    return value


def plain_number(value: Any) -> float | None:
    """A finite number as a float, else None (what MLflow can hold as a metric)."""
    return float(value) if is_number(value) and math.isfinite(value) else None


def sqlite_path(uri: str | None) -> str | None:
    """The file of a ``sqlite:///`` URI, None for any other store."""
    prefix = "sqlite:///"
    return uri[len(prefix):] if uri and uri.startswith(prefix) else None
