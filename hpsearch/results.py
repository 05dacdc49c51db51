"""What a sweep returns, and how a Ray trial becomes a row of it: status, error, folder, results.

Shared by the engine (the trials table at the end) and tracking (endings, reconcile after a
resume), so it lives below both. Trials are Ray's ``Trial`` objects, read duck-typed: ``trial_id``,
``status``, ``last_result``, ``config``, ``path`` / ``local_path``, ``error_file``, ``checkpoint``.

Example:
    >>> from types import SimpleNamespace as Trial
    >>> status_of(Trial(status="TERMINATED", last_result={"epoch": 2}), max_epochs=4)
    <TrialStatus.STOPPED: 'stopped'>
"""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hpsearch.ray.compat import trial_started
from hpsearch.space import Space
from hpsearch.storage import Location, as_location
from hpsearch.vocab import Mode, StopReason, TrialStatus, is_number


@dataclass
class TrialRecord:
    """One row of the trials table."""

    trial_id: str
    config: dict[str, Any]
    status: TrialStatus
    epochs: int
    metric: float | None
    metrics: dict[str, Any]
    error: str | None = None
    node: str | None = None
    path: str | None = None
    checkpoint: str | None = None  # directory of the trial's latest checkpoint


@dataclass
class SweepResult:
    """What a sweep returns: the best trial and a table of all of them."""

    name: str
    path: str
    metric: str
    mode: str
    max_epochs: int
    trials: list[TrialRecord]
    wall_s: float
    best: TrialRecord | None
    tracking: dict[str, Any] | None = None  # uri, experiment_id, parent_run_id, children (trial id -> run id)
    registered: str | None = None  # models:/NAME/VERSION, when the best model was registered (register_model)
    stopped_by: StopReason | None = None  # set when the sweep ended before its trials did
    signal: str | None = None  # SIGINT or SIGTERM, when one interrupted the sweep (stopped_by INTERRUPTED)
    # Plan against actual, logged on the parent run: planned_epochs (plan's arithmetic) and, where
    # recorded curves of the space exist, simulated_epochs (hpsearch.simulate.explain.expected)
    expected: dict[str, float] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        """Stopped by SIGINT or SIGTERM: unfinished trials continue with ``resume_sweep(name)``."""
        return self.stopped_by == StopReason.INTERRUPTED

    @property
    def signal_exit(self) -> int:
        """The exit status for an interrupted sweep, as a shell reports a process a signal ended:
        128 + its number (130 for SIGINT, 143 for SIGTERM)."""

        return 128 + signal.Signals[self.signal or "SIGINT"].value

    @property
    def deadline_hit(self) -> bool:
        return self.stopped_by == StopReason.DEADLINE

    @property
    def best_config(self) -> dict[str, Any] | None:
        return None if self.best is None else self.best.config

    @property
    def best_metric(self) -> float | None:
        return None if self.best is None else self.best.metric

    @property
    def total_epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[str(t.status)] = out.get(str(t.status), 0) + 1
        return out


def status_of(trial, max_epochs: int, ended: bool = False) -> TrialStatus:
    """A Ray trial's status in our words. ``ended``: called from ``on_trial_complete``, before Ray
    marks the trial TERMINATED.

    Example:
        >>> from types import SimpleNamespace as Trial
        >>> [str(status_of(Trial(status=s, last_result={"epoch": 4}), 4)) for s in ("TERMINATED", "ERROR", "PAUSED", "PENDING")]
        ['completed', 'failed', 'running', 'pending']
    """
    last = trial.last_result or {}
    if trial.status == "ERROR":
        return TrialStatus.FAILED
    if trial.status == "TERMINATED" or ended:
        return TrialStatus.COMPLETED if last.get("epoch", 0) >= max_epochs else TrialStatus.STOPPED
    return TrialStatus.RUNNING if trial.status in ("RUNNING", "PAUSED") else TrialStatus.PENDING


def started(trial) -> bool:
    """Whether Ray ever ran the trial (it notes the time it first set it RUNNING). A trial started
    just before the goal or deadline may end with no epoch: it is stopped, not pending, and has its
    child run."""
    return trial_started(trial)


def error_text(trial) -> str | None:
    """The last line of a failed trial's error file (Ray writes the traceback there)."""
    path = getattr(trial, "error_file", None) or (
        os.path.join(trial.local_path, "error.txt") if getattr(trial, "local_path", None) else None
    )
    if path and os.path.exists(path):
        text = Path(path).read_text(errors="replace").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1][:500] if lines else text[:500]
    return None


def trial_dir(trial) -> str | None:
    """The trial's folder in the sweep's storage."""
    # After a restore, Ray's local_path can name its staging folder rather than the storage.
    for folder in (getattr(trial, "path", None), getattr(trial, "local_path", None)):
        if folder and Path(folder, "result.json").exists():
            return folder
    return getattr(trial, "local_path", None)


def read_results(folder: str | os.PathLike | Location | None) -> list[dict[str, Any]]:
    """Every result Ray persisted for a trial (its result.json, one JSON object a line), from a
    local folder or the trial's folder in the sweep's storage."""
    if not folder:
        return []
    path = as_location(folder) / "result.json"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return out


def records_from_trials(trials, space: Space, metric: str, max_epochs: int,
                        storage: Location | None = None) -> list[TrialRecord]:
    """A row per Ray trial; ``storage``: the sweep's folder, so that a checkpoint's path is a URI
    a later process can open (Ray names it by its path inside the storage's filesystem)."""
    out = []
    for t in trials:
        last = dict(t.last_result or {})
        status = status_of(t, max_epochs)
        out.append(TrialRecord(
            trial_id=t.trial_id, config=space.complete(t.config), status=status,
            epochs=int(last.get("epoch", 0) or 0),
            metric=last.get(metric) if is_number(last.get(metric)) else None,
            metrics={k: last[k] for k in ("train_loss", "val_loss", "val_acc", metric) if k in last},
            error=error_text(t) if status == TrialStatus.FAILED else None,
            node=last.get("node_id"), path=trial_dir(t),
            checkpoint=(storage.at(t.checkpoint.path).uri if storage is not None else t.checkpoint.path)
            if getattr(t, "checkpoint", None) is not None else None,
        ))
    return out


def pick_best(records: Sequence[TrialRecord], mode: str) -> TrialRecord | None:
    scored = [r for r in records if r.metric is not None and r.status != TrialStatus.FAILED and math.isfinite(r.metric)]
    if not scored:
        return None
    return Mode(mode).best(scored, key=lambda r: r.metric)
