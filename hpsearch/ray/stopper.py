"""When a whole sweep ends early: a goal reached, a time budget or a deadline passed.

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
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ray.tune import Stopper

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
        self.metric, self.mode, self.goal = settings.metric, settings.mode, settings.goal
        self.reached: StopReason | None = None  # set once it has stopped everything

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        if self.meets_goal(result):
            self.reached = self.reached or StopReason.GOAL
        return int(result.get("epoch", 0) or 0) >= self.max_epochs

    def meets_goal(self, result: Mapping[str, Any]) -> bool:
        value = result.get(self.metric)
        return self.goal is not None and is_number(value) and \
            Mode(self.mode).reaches(value, self.goal)

    def stop_all(self) -> bool:
        if self.reached is None and self.deadline is not None and time.time() >= self.deadline:
            self.reached = self.why
        return self.reached is not None
