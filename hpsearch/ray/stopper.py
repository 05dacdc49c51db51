"""When a whole sweep ends early: a goal reached, a time budget, a deadline passed, or ``--budget`` spent.

Ray's own ``time_budget_s`` counts seconds from each (re)start of the driver; a nightly run
needs a time of day that also holds for a sweep resumed the next morning. Ray has no stopper
that ends the whole experiment on a metric value (its dict form stops single trials). Hence one
``Stopper`` of our own, which Ray calls on the driver.

Example:
    >>> from hpsearch.settings import SweepSettings
    >>> stop = SweepStop(SweepSettings(metric="acc", mode="max", max_epochs=3, goal=0.9))
    >>> stop("t1", {"epoch": 1, "acc": 0.5}), stop.stop_all()
    (False, False)
    >>> stop("t1", {"epoch": 3, "acc": 0.95}), stop.stop_all(), str(stop.reached)
    (True, True, 'goal')
    >>> stop = SweepStop(SweepSettings(metric="acc", mode="max", max_epochs=3, budget="4 epochs"))
    >>> [stop("t1", {"epoch": e, "acc": 0.5}) for e in (1, 2, 3)], stop("t2", {"epoch": 1, "acc": 0.6}), stop.stop_all()
    ([False, False, True], False, True)
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ray.tune import Stopper

from hpsearch.budget import Budget
from hpsearch.settings import SweepSettings
from hpsearch.vocab import Mode, StopReason, is_number


class SweepStop(Stopper):
    """A trial stops at the epoch budget; every trial stops at the deadline (a nightly's, or the
    end of the time budget) or once a trial reaches the goal, if there is one."""

    def __init__(self, settings: SweepSettings, deadline: float | None = None) -> None:
        self.max_epochs, self.deadline, self.why = settings.max_epochs, deadline, StopReason.DEADLINE
        if settings.time_budget_s is not None:  # counted from this start, as Ray's time_budget_s
            end = time.time() + settings.time_budget_s
            if deadline is None or end < deadline:
                self.deadline, self.why = end, StopReason.TIME_BUDGET
        # --budget: a wall-clock is a deadline; epochs and worker-hours are counted from the results.
        self.budget = Budget.parse(settings.budget) if settings.budget else None
        self.units = self.budget.units_per_trial(settings.cpus_per_trial, settings.gpus_per_trial,
                                                 settings.workers_per_trial) if self.budget else 1.0
        self.epochs, self.worker_s = 0, 0.0
        if self.budget is not None and self.budget.kind == "wall":
            end = time.time() + self.budget.amount
            if self.deadline is None or end < self.deadline:
                self.deadline, self.why = end, StopReason.BUDGET
        self.metric, self.mode, self.goal = settings.metric, settings.mode, settings.goal
        self.reached: StopReason | None = None  # set once it has stopped everything

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        if self.meets_goal(result):
            self.reached = self.reached or StopReason.GOAL
        self.epochs += 1
        self.worker_s += float(result.get("time_this_iter_s", 0.0) or 0.0)
        if self.budget is not None and self.budget.kind != "wall" and \
                self.budget.spent(0.0, self.epochs, self.worker_s, self.units) >= self.budget.amount:
            self.reached = self.reached or StopReason.BUDGET
        return int(result.get("epoch", 0) or 0) >= self.max_epochs

    def meets_goal(self, result: Mapping[str, Any]) -> bool:
        value = result.get(self.metric)
        return self.goal is not None and is_number(value) and \
            Mode(self.mode).reaches(value, self.goal)

    def stop_all(self) -> bool:
        if self.reached is None and self.deadline is not None and time.time() >= self.deadline:
            self.reached = self.why
        return self.reached is not None
