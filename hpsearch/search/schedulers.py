"""Schedulers share the epoch budget: fifo, asha, hyperband. Ray Tune's schedulers make the
decisions (``hpsearch.ray.schedulers.make_scheduler`` builds them); this module is their arithmetic.

The rung and bracket arithmetic used by ``hpsearch plan`` lives here as pure functions that
mirror Ray's own (``ray/tune/schedulers/async_hyperband.py`` and ``hyperband.py``), so the plan
says what Ray will actually do, and can be tested with numbers.

Synchronous successive halving is not offered: Ray Tune has no scheduler for it (its
``HyperBandScheduler`` always runs several brackets and ``ASHAScheduler`` is asynchronous), and
we do not hand-write schedulers. ``asha`` with one bracket is the successive-halving rule applied
asynchronously, which on a busy cluster is what people want anyway.

Example:
    >>> asha_rungs(max_epochs=81, grace_period=1, reduction_factor=3)
    [1, 3, 9, 27, 81]
    >>> plan_budget("asha", trials=27, max_epochs=81, grace_period=1, reduction_factor=3).total_epochs
    135
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpsearch.settings import check_budget
from hpsearch.vocab import Scheduler


@dataclass(frozen=True)
class Rung:
    """Trials reach ``epoch`` in expectation ``trials`` times (before the cut made there)."""

    epoch: int
    trials: int


@dataclass(frozen=True)
class Bracket:
    """One successive-halving bracket: its index ``s``, its trials and its rungs."""

    s: int
    trials: int
    rungs: tuple[Rung, ...]

    @property
    def epochs(self) -> int:
        total, previous = 0, 0
        for rung in self.rungs:
            total += rung.trials * (rung.epoch - previous)
            previous = rung.epoch
        return total


@dataclass(frozen=True)
class BudgetPlan:
    """What a scheduler will do with ``trials`` trials, in epochs."""

    scheduler: str
    trials: int
    max_epochs: int
    brackets: tuple[Bracket, ...]

    @property
    def total_epochs(self) -> int:
        return sum(b.epochs for b in self.brackets)

    @property
    def full_epochs(self) -> int:
        """Epochs if every trial ran to the end (what FIFO spends)."""
        return self.trials * self.max_epochs

    @property
    def saving(self) -> float:
        """Fraction of the full budget the scheduler does not spend."""
        return 1.0 - self.total_epochs / self.full_epochs if self.full_epochs else 0.0


def asha_rung_count(max_epochs: int, grace_period: int, reduction_factor: float) -> int:
    """How many rungs Ray's ASHA makes: ``grace * rf**k`` for k below this count."""
    return int(math.log(max_epochs / grace_period) / math.log(reduction_factor) + 1)


def hyperband_brackets(max_epochs: int, reduction_factor: float) -> int:
    """How many brackets (``s`` = 0 .. count-1) one band of Ray's HyperBand has."""
    return int(round(math.log(max_epochs) / math.log(reduction_factor))) + 1


def asha_rungs(max_epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Epochs at which ASHA compares trials: ``grace * rf**k`` up to ``max_epochs`` (Ray's rule)."""
    count = asha_rung_count(max_epochs, grace_period, reduction_factor)
    return [int(grace_period * reduction_factor**k) for k in range(count)]


def decision_epochs(scheduler: str, max_epochs: int, grace_period: int = 1, reduction_factor: float = 3) -> frozenset[int]:
    """The epochs at which a scheduler may pause or stop a trial: where a checkpoint pays.

    ASHA decides at the first report at or past each rung ``grace * rf**k`` (a fractional rung is
    decided at the next whole epoch); HyperBand pauses at its brackets' milestones, ``int(max *
    rf**-s)`` multiplied by ``rf`` up to ``max``; FIFO never cuts. The last epoch is not included:
    every trial ends there anyway.

    Example:
        >>> sorted(decision_epochs("asha", 27, 1, 3)), sorted(decision_epochs("hyperband", 27, 1, 3))
        ([1, 3, 9], [1, 3, 9])
        >>> sorted(decision_epochs("asha", 10, 1, 2.5)), sorted(decision_epochs("fifo", 10))
        ([1, 3, 7], [])
    """
    scheduler = Scheduler.parse(scheduler)
    out: set[int] = set()
    if scheduler == "asha":
        count = asha_rung_count(max_epochs, grace_period, reduction_factor)
        out = {math.ceil(grace_period * reduction_factor**k - 1e-9) for k in range(count)}
    elif scheduler == "hyperband":
        for s in range(hyperband_brackets(max_epochs, reduction_factor)):
            start = int(max_epochs * reduction_factor ** (-s))
            if start:  # the milestones of bracket s, as the plan's halving walks them
                out |= {rung.epoch for rung in _halving(s, 1, 1, start, max_epochs, reduction_factor)}
    return frozenset(e for e in out if 1 <= e < max_epochs)


def _halving(s: int, trials: int, nominal: int, start: int, max_epochs: int, rf: float) -> tuple[Rung, ...]:
    """Ray's bracket ``s``: ``s`` halvings from ``start`` epochs, keeping ``ceil(n / rf)`` of the
    bracket's nominal size each time (all of a partly filled bracket survive while they fit)."""
    rungs, keep, r = [], nominal, start
    for k in range(s + 1):
        rungs.append(Rung(int(r), int(min(trials, keep))))
        keep = math.ceil(keep / rf)
        r = int(min(r * rf, max_epochs))
    return tuple(rungs)


def asha_plan(trials: int, max_epochs: int, grace_period: int, reduction_factor: float) -> BudgetPlan:
    """ASHA's expected behaviour: a fraction ``1/rf`` of trials passes each rung, the rest stop there.

    Asynchronous promotion lets a few more trials through early on; this is the ideal count.
    """
    rungs = asha_rungs(max_epochs, grace_period, reduction_factor)
    out, n = [], trials
    for k, epoch in enumerate(rungs):
        out.append(Rung(epoch, n))
        n = math.ceil(trials / reduction_factor ** (k + 1))
    if rungs[-1] < max_epochs:
        out.append(Rung(max_epochs, n))
    return BudgetPlan("asha", trials, max_epochs, (Bracket(0, trials, tuple(out)),))


def hyperband_plan(trials: int, max_epochs: int, reduction_factor: float) -> BudgetPlan:
    """Ray's synchronous HyperBand: brackets s = 0, 1, ... filled in order as trials arrive.

    Bracket ``s`` holds ``ceil(s_max1 / (s + 1) * rf**s)`` trials starting at
    ``int(max_epochs * rf**-s)`` epochs; a partly filled last bracket halves from its nominal size.
    """
    s_max1 = hyperband_brackets(max_epochs, reduction_factor)
    brackets, left, s = [], trials, 0
    while left > 0:
        r0 = int(max_epochs * reduction_factor ** (-(s % s_max1)))
        if r0 == 0:
            s += 1
            continue
        nominal = math.ceil(s_max1 / (s % s_max1 + 1) * reduction_factor ** (s % s_max1))
        size = min(nominal, left)
        brackets.append(Bracket(s % s_max1, size, _halving(s % s_max1, size, nominal, r0, max_epochs, reduction_factor)))
        left -= size
        s += 1
    return BudgetPlan("hyperband", trials, max_epochs, tuple(brackets))


def plan_budget(
    scheduler: str, trials: int, max_epochs: int, grace_period: int = 1, reduction_factor: float = 3
) -> BudgetPlan:
    """The epochs a scheduler will spend on ``trials`` trials.

    Example:
        >>> p = plan_budget("hyperband", trials=27, max_epochs=27, reduction_factor=3)
        >>> [(b.s, b.trials, [r.epoch for r in b.rungs]) for b in p.brackets]
        [(0, 4, [27]), (1, 6, [9, 27]), (2, 12, [3, 9, 27]), (3, 5, [1, 3, 9, 27])]
    """
    check_budget(max_epochs, grace_period, reduction_factor)
    scheduler = Scheduler.parse(scheduler)
    if scheduler == "fifo":
        return BudgetPlan("fifo", trials, max_epochs, (Bracket(0, trials, (Rung(max_epochs, trials),)),))
    if scheduler == "asha":
        return asha_plan(trials, max_epochs, grace_period, reduction_factor)
    return hyperband_plan(trials, max_epochs, reduction_factor)
