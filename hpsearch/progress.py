"""The live progress bar of a sweep (rich), fed by ``hpsearch.ray.callbacks.ProgressCallback``
instead of Ray's tables."""

from __future__ import annotations

import threading
from typing import Any, Mapping

from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from hpsearch.settings import SweepSettings
from hpsearch.vocab import Mode, TrialStatus, plain_number

_ENDED = (TrialStatus.COMPLETED, TrialStatus.STOPPED, TrialStatus.FAILED)


class Progress:
    """Epochs done against the plan's expected epochs, trial counts and the best metric so far."""

    def __init__(self, settings: SweepSettings, expected_epochs: int, enabled: bool = True) -> None:
        self.settings, self.expected = settings, max(expected_epochs, 1)
        self.enabled = enabled
        self.epochs = 0
        self.counts = {s: 0 for s in _ENDED}
        self.running: set[str] = set()
        self.best: float | None = None
        self.forecast = ""  # a budgeted sweep's forecast, as the bar shows it
        self._lock = threading.Lock()
        self._bar = None

    def on_result(self, result: Mapping[str, Any]) -> None:
        with self._lock:
            self.epochs += 1
            value = plain_number(result.get(self.settings.metric))
            if value is not None:
                better = self.best is None or Mode(self.settings.mode).better(value, self.best)
                self.best = value if better else self.best
        self.refresh()

    def on_end(self, trial, status: TrialStatus) -> None:
        with self._lock:
            self.running.discard(trial.trial_id)
            self.counts[status if status in self.counts else TrialStatus.STOPPED] += 1
        self.refresh()

    def note(self, forecast: str) -> None:
        """Show a budgeted sweep's latest forecast (``hpsearch.ray.callbacks.BudgetWatch``)."""
        with self._lock:
            self.forecast = forecast
        self.refresh()

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.settings.name, total=self.expected, status="starting")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self.refresh()
            self._bar.stop()

    def state(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "counts": {str(k): v for k, v in self.counts.items()},
                "running": sorted(self.running), "best": self.best, "forecast": self.forecast}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take another Progress's ``state`` (a sweep's driver on the cluster, relayed)."""
        with self._lock:
            self.epochs, self.best, self.running = state["epochs"], state["best"], set(state["running"])
            self.counts = {s: state["counts"].get(str(s), 0) for s in _ENDED}
            self.forecast = state.get("forecast", "")
        self.refresh()

    def refresh(self) -> None:
        if self._bar is None:
            return
        c = self.counts
        done = sum(c.values())
        best = "-" if self.best is None else f"{self.best:.4g}"
        status = (f"{done}/{self.settings.trials} trials: {len(self.running)} running, {c[TrialStatus.COMPLETED]} "
                  f"completed, {c[TrialStatus.STOPPED]} stopped early, {c[TrialStatus.FAILED]} failed | "
                  f"best {self.settings.metric} {best}" + (f" | {self.forecast}" if self.forecast else ""))
        # Expected epochs come from the plan; schedulers may spend a little more, so grow the total.
        total = max(self.expected, self.epochs)
        self._bar.update(self._task, completed=self.epochs, total=total, status=status)


class RelayedProgress(Progress):
    """A sweep's progress on the cluster, sent to the ray:// client that shows it: each change puts
    the state on ``relay`` (a Ray queue), dropped when the queue is full (the next one catches up)."""

    def __init__(self, settings: SweepSettings, expected_epochs: int, relay) -> None:
        super().__init__(settings, expected_epochs, enabled=False)
        self.relay = relay

    def refresh(self) -> None:
        try:
            self.relay.put_nowait(self.state())
        except Exception:  # noqa: BLE001 - Full, or the client gone: progress is never worth a sweep
            pass
