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
import logging
import math
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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


log = logging.getLogger(__name__)
_running: set[SweepEnd] = set()  # the ends running in this process (wait_for_ends)
_running_lock = threading.Lock()


class SweepEnd:
    """The slow part of a tracked sweep's end (the best model, the report, the last MLflow writes)
    running after ``sweep()`` has returned its result, on a thread of its own.

    The thread is not a daemon, so the interpreter joins it before it exits (before ``atexit``,
    where Ray shuts down): what the end writes is complete when the process ends, even if nobody
    waits. While one runs, a new sweep of this process waits for it first (``wait_for_ends``): one
    writer to MLflow at a time. A failure is logged when it happens, kept in ``error``, and raised
    again by ``wait``; what the end had written before it stays.
    """

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self.error: BaseException | None = None
        self._work = work
        self.thread = threading.Thread(target=self._run, name=f"hpsearch-end-{name}", daemon=False)
        with _running_lock:
            _running.add(self)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - kept for wait(), said now: nobody may ever wait
            self.error = exc
            log.error("the sweep's end failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        finally:
            with _running_lock:
                _running.discard(self)

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end; False if ``timeout`` passed first. From the end's own thread: at once."""
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)
        return self.done() or threading.current_thread() is self.thread


def wait_for_ends() -> None:
    """Wait until every sweep end running in this process is done (a new sweep calls this before
    it writes to MLflow: the one-writer rule holds across sweeps of one process)."""
    with _running_lock:
        running = list(_running)
    for end in running:
        end.join()


class _AfterEnd:
    """A field of ``SweepResult`` the sweep's end fills in: reading it waits for the end (see
    ``SweepResult.wait``), so what a caller reads is complete, never half-written."""

    def __init__(self, default: Any = None, factory: Callable[[], Any] | None = None) -> None:
        self.default, self.factory = default, factory

    def __set_name__(self, owner, name: str) -> None:
        self.key = "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:  # the dataclass's default (a factory's value is made per instance in __set__)
            return self.default
        end = obj.__dict__.get("_end")
        if end is not None:
            end.join()
        return obj.__dict__[self.key]

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.key] = self.factory() if value is None and self.factory is not None else value


@dataclass
class SweepResult:
    """What a sweep returns: the best trial and a table of all of them.

    The trials, the best trial, the wall time and what stopped the sweep are complete when
    ``sweep()`` returns. With tracking, the best model, the report and the last MLflow writes may
    still be running (``ending``): ``tracking``, ``registered``, ``expected`` and ``end_errors``
    wait for them when read, and ``wait()`` waits explicitly. The process does not exit before
    they are done.
    """

    name: str
    path: str
    metric: str
    mode: str
    max_epochs: int
    trials: list[TrialRecord]
    wall_s: float
    best: TrialRecord | None
    # uri, experiment_id, parent_run_id, children (trial id -> run id), refused, pending
    tracking: dict[str, Any] | None = _AfterEnd()  # type: ignore[assignment]
    # models:/NAME/VERSION, when the best model was registered (register_model)
    registered: str | None = _AfterEnd()  # type: ignore[assignment]
    stopped_by: StopReason | None = None  # set when the sweep ended before its trials did
    signal: str | None = None  # SIGINT or SIGTERM, when one interrupted the sweep (stopped_by INTERRUPTED)
    # Plan against actual, logged on the parent run: planned_epochs (plan's arithmetic) and, where
    # recorded curves of the space exist, simulated_epochs (hpsearch.simulate.explain.expected)
    expected: dict[str, float] = _AfterEnd(factory=dict)  # type: ignore[assignment]
    # A line per step of the end that failed ("best model: ...", "report: ..."); what it wrote stays
    end_errors: list[str] = _AfterEnd(factory=list)  # type: ignore[assignment]

    def end_in_background(self, work: Callable[[], None]) -> None:
        """Run ``work`` (the end's slow part, which fills in the fields above) on ``SweepEnd``'s thread."""
        self.__dict__["_end"] = SweepEnd(work, self.name)

    @property
    def ending(self) -> bool:
        """Whether the end (best model, report, last MLflow writes) is still running; never waits."""
        end = self.__dict__.get("_end")
        return end is not None and not end.done()

    def wait(self, timeout: float | None = None) -> SweepResult:
        """Wait for the sweep's end (best model, report, last MLflow writes); returns the result.

        Raises TimeoutError if ``timeout`` seconds pass first, and the end's own exception if it
        failed as a whole (a step that failed on its own is a line of ``end_errors``).

        Example:
            >>> hpsearch.sweep("mlp", trials=4, max_epochs=3).wait().registered  # doctest: +SKIP
        """
        end = self.__dict__.get("_end")
        if end is None:
            return self
        if not end.join(timeout):
            raise TimeoutError(f"the end of sweep {self.name} is still running after {timeout} s")
        if end.error is not None:
            raise end.error
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a ray:// driver's result) once its end is done, without the thread."""
        end = self.__dict__.get("_end")
        if end is not None:
            end.join()
        return {k: v for k, v in self.__dict__.items() if k != "_end"}

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
