"""Rung and bracket arithmetic (pure functions mirroring Ray's schedulers), checked with numbers."""

import pytest

from hpsearch.ray.schedulers import make_scheduler
from hpsearch.search.schedulers import asha_rungs, hyperband_plan, plan_budget
from hpsearch.settings import check_budget


def test_asha_rungs():
    assert asha_rungs(81, 1, 3) == [1, 3, 9, 27, 81]
    assert asha_rungs(100, 1, 3) == [1, 3, 9, 27, 81]
    assert asha_rungs(16, 2, 2) == [2, 4, 8, 16]
    assert asha_rungs(10, 10, 3) == [10]


def test_asha_plan_counts_and_epochs():
    p = plan_budget("asha", trials=27, max_epochs=81, grace_period=1, reduction_factor=3)
    assert [(r.epoch, r.trials) for r in p.brackets[0].rungs] == [(1, 27), (3, 9), (9, 3), (27, 1), (81, 1)]
    # 27*1 + 9*(3-1) + 3*(9-3) + 1*(27-9) + 1*(81-27)
    assert p.total_epochs == 135 and p.full_epochs == 2187
    assert p.total_epochs <= p.full_epochs / 3


def test_asha_plan_runs_survivors_to_the_end_when_the_last_rung_falls_short():
    p = plan_budget("asha", trials=10, max_epochs=10, grace_period=2, reduction_factor=2)
    assert [(r.epoch, r.trials) for r in p.brackets[0].rungs] == [(2, 10), (4, 5), (8, 3), (10, 2)]
    assert p.total_epochs == 20 + 10 + 12 + 4


def test_fifo_spends_everything():
    p = plan_budget("fifo", trials=7, max_epochs=9)
    assert p.total_epochs == p.full_epochs == 63 and p.saving == 0


def test_hyperband_brackets_follow_rays_order_and_sizes():
    p = hyperband_plan(trials=143, max_epochs=81, reduction_factor=3)
    # s_max+1 = 5 brackets; n0 = ceil(5/(s+1) * 3**s); r0 = 81 / 3**s
    assert [(b.s, b.trials, b.rungs[0].epoch) for b in p.brackets] == [
        (0, 5, 81), (1, 8, 27), (2, 15, 9), (3, 34, 3), (4, 81, 1)]
    assert [(r.epoch, r.trials) for r in p.brackets[4].rungs] == [(1, 81), (3, 27), (9, 9), (27, 3), (81, 1)]


def test_hyperband_partial_bracket_keeps_what_fits():
    p = plan_budget("hyperband", trials=27, max_epochs=27, reduction_factor=3)
    assert [(b.s, b.trials) for b in p.brackets] == [(0, 4), (1, 6), (2, 12), (3, 5)]
    # the last bracket holds 5 of a nominal 27: keep ceil(27/3)=9 -> all 5, then 3, then 1
    assert [(r.epoch, r.trials) for r in p.brackets[3].rungs] == [(1, 5), (3, 5), (9, 3), (27, 1)]
    assert p.total_epochs == 4 * 27 + (6 * 9 + 2 * 18) + (12 * 3 + 4 * 6 + 2 * 18) + (5 + 5 * 2 + 3 * 6 + 1 * 18)


def test_hyperband_last_rung_can_fall_short_of_max_like_ray():
    p = plan_budget("hyperband", trials=100, max_epochs=30, reduction_factor=3)
    b = p.brackets[3]  # r0 = int(30 / 27) = 1, three halvings: 1, 3, 9, 27
    assert [r.epoch for r in b.rungs] == [1, 3, 9, 27]


@pytest.mark.parametrize("args, message", [
    ((0, 1, 3), "max_epochs: must be a whole number >= 1, got 0"),
    ((9, 0, 3), "grace_period: must be a whole number >= 1, got 0"),
    ((9, 10, 3), "grace_period: must be <= max_epochs, got grace_period=10, max_epochs=9"),
    ((9, 1, 1.5), "reduction_factor: must be >= 2, got 1.5"),
])
def test_bad_budgets(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_budget(*args)


def test_unknown_scheduler():
    with pytest.raises(ValueError, match="scheduler: must be one of fifo, asha, hyperband, got 'sha'"):
        plan_budget("sha", 3, 9)


def test_make_scheduler_builds_rays_schedulers():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    assert isinstance(make_scheduler("fifo", 9, 1, 3), FIFOScheduler)
    asha = make_scheduler("asha", 81, 1, 3)
    assert isinstance(asha, ASHAScheduler)
    assert [m for m, _ in asha._brackets[0]._rungs] == list(reversed(asha_rungs(81, 1, 3)))
    assert isinstance(make_scheduler("hyperband", 81, 1, 3), HyperBandScheduler)
