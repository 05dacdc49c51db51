"""Ray Tune's schedulers for a sweep (``make_scheduler``), and what Ray Tune does not keep of them
across a driver crash: their decision state, saved with the experiment (``SchedulerState``).

Ray Tune pickles its experiment state without the scheduler (``TuneController.__getstate__``
drops it; ray-project/ray#30838), so a resumed sweep used to start ASHA with empty rungs and
HyperBand with brackets rebuilt from whatever trials came back first: it pruned differently from
the sweep that was interrupted. Ray does save every callback's ``get_state()`` beside each
experiment snapshot (the same ``save_to_dir`` call, the same upload), and hands it back through
``set_state`` on restore, before the restored trials are queued again. ``SchedulerState`` uses that
channel: the scheduler's state travels with the snapshot it belongs to, so rungs, brackets and the
trials they hold match the trials Ray restores. (Replaying the recorded results through a fresh
scheduler, the other way, cannot rebuild HyperBand: its brackets depend on when each trial was
added and paused, not only on the results.)

Driver side only: imports Ray Tune.
"""

from __future__ import annotations

import io
import logging
import pickle
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler

from hpsearch.ray import compat
from hpsearch.ray.callbacks import DriverCallback
from hpsearch.settings import check_budget
from hpsearch.vocab import Scheduler

log = logging.getLogger(__name__)


def make_scheduler(scheduler: str, max_epochs: int, grace_period: int, reduction_factor: float):
    """The Ray Tune scheduler for a name; the budget is counted in the reported ``epoch``.

    Metric and mode are given to ``TuneConfig`` once, not here: Ray refuses them in both places.
    """
    check_budget(max_epochs, grace_period, reduction_factor)
    scheduler = Scheduler.parse(scheduler)
    if scheduler == "fifo":
        return FIFOScheduler()
    if scheduler == "asha":
        return ASHAScheduler(
            time_attr="epoch", max_t=max_epochs,
            grace_period=grace_period, reduction_factor=reduction_factor, brackets=1,
        )
    return HyperBandScheduler(time_attr="epoch", max_t=max_epochs, reduction_factor=reduction_factor)


class _TrialsOut(pickle.Pickler):
    """Pickles a Trial as its id (and status): on restore, the state must point at the Trial
    objects Ray rebuilt, not at copies."""

    def __init__(self, buf) -> None:
        super().__init__(buf, protocol=pickle.HIGHEST_PROTOCOL)
        self.trials: dict[str, str] = {}

    def persistent_id(self, obj):
        if isinstance(obj, Trial):
            self.trials[obj.trial_id] = obj.status
            return obj.trial_id
        return None


class _TrialsIn(pickle.Unpickler):
    def __init__(self, blob: bytes, trials: dict[str, Trial]) -> None:
        super().__init__(io.BytesIO(blob))
        self._trials = trials

    def persistent_load(self, pid):
        return self._trials[pid]


class Resumable:
    """Mixed in before Ray's ASHA or HyperBand scheduler: its decision state can be taken out
    (``snapshot``) and put back (``restore_later``) once Ray has rebuilt the trials it names.

    The decisions stay Ray's own; nothing here changes when a trial is stopped, paused or promoted.
    """

    KIND = ""  # the Ray scheduler class it extends (compat.SCHEDULER_STATE names its state)
    _pending: dict | None = None
    _held: dict[str, Trial]

    def snapshot(self) -> dict[str, Any]:
        buf = io.BytesIO()
        out = _TrialsOut(buf)
        out.dump(compat.scheduler_state(self, self.KIND))
        return {"blob": buf.getvalue(), "trials": out.trials}

    def restore_later(self, saved: dict[str, Any]) -> None:
        """Ray calls this (through ``SchedulerState.set_state``) before it queues the restored
        trials; the state is put back at the first decision, or when a new trial comes."""
        self._pending, self._held = saved, {}

    def _restore(self, tune_controller) -> None:
        saved, held = self._pending, self._held
        self._pending, self._held = None, {}
        known = {t.trial_id: t for t in tune_controller.get_trials()} | held
        missing = set(saved["trials"]) - set(known)
        if missing:  # not expected: the state and the trials come from the same snapshot
            log.warning("scheduler state not restored: trials %s are not in the experiment", sorted(missing))
            for trial in held.values():
                super().on_trial_add(tune_controller, trial)
            return
        compat.set_scheduler_state(self, _TrialsIn(saved["blob"], known).load())
        for trial_id, status in saved["trials"].items():
            trial = known[trial_id]
            # Ray requeues every unfinished trial as PENDING; one HyperBand had paused at a
            # milestone waits there again (else it would train one epoch past it first).
            if status == Trial.PAUSED and trial.status == Trial.PENDING:
                compat.set_trial_status(tune_controller, trial, Trial.PAUSED)

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if self._pending is not None:
            if trial.trial_id in self._pending["trials"]:
                # Its place is in the saved state, put back at the first decision: by then Ray
                # has queued every restored trial (and set their statuses, which it does after
                # this call).
                self._held[trial.trial_id] = trial
                return
            self._restore(tune_controller)  # a new trial: the restored ones are all in
        super().on_trial_add(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        if self._pending is not None:
            self._restore(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if self._pending is not None:
            self._restore(tune_controller)
        return super().on_trial_result(tune_controller, trial, result)


class ResumableASHA(Resumable, AsyncHyperBandScheduler):
    KIND = "AsyncHyperBandScheduler"


class ResumableHyperBand(Resumable, HyperBandScheduler):
    KIND = "HyperBandScheduler"


def resumable(scheduler):
    """The same scheduler (same settings, same state) with its state kept across a crash; FIFO,
    which decides nothing, as it is."""
    for base, cls in ((HyperBandScheduler, ResumableHyperBand), (AsyncHyperBandScheduler, ResumableASHA)):
        if type(scheduler) is base:
            twin = cls.__new__(cls)
            twin.__dict__.update(scheduler.__dict__)
            return twin
    return scheduler


class SchedulerState(DriverCallback):
    """Saves the sweep's scheduler state with every experiment snapshot Ray takes, and gives it
    back on resume (see the module's docstring)."""

    KEY = "hpsearch.scheduler"

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    @property
    def live(self) -> bool:
        return hasattr(self, "scheduler")

    def get_state(self) -> dict | None:
        if not self.live or not isinstance(self.scheduler, Resumable):
            return None
        return {self.KEY: self.scheduler.snapshot()}

    def set_state(self, state: dict) -> None:
        if self.live and isinstance(self.scheduler, Resumable) and isinstance(state, dict) and self.KEY in state:
            self.scheduler.restore_later(state[self.KEY])
