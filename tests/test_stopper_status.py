"""When a sweep stops (SweepStop), and how a Ray trial reads as a row (status, best, results)."""

import math
import time
from types import SimpleNamespace

import pytest

import hpsearch.ray.stopper
from hpsearch.ray.stopper import SweepStop
from hpsearch.results import TrialRecord, pick_best, read_results, started, status_of
from hpsearch.settings import SweepSettings
from hpsearch.vocab import StopReason, TrialStatus

# -- SweepStop ----------------------------------------------------------------------------------


def settings(**kw):
    return SweepSettings(**{"metric": "acc", "mode": "max", "max_epochs": 3, **kw})


@pytest.mark.parametrize("mode, short, reached", [("max", 0.89, 0.9), ("min", 0.11, 0.1)])
def test_goal_stops_every_trial_once_a_result_reaches_it(mode, short, reached):
    goal = 0.9 if mode == "max" else 0.1
    stop = SweepStop(settings(mode=mode, goal=goal))
    assert stop("t1", {"epoch": 1, "acc": 1 - short if mode == "max" else 1.0}) is False  # the wrong way
    assert stop("t1", {"epoch": 2, "acc": short}) is False and not stop.stop_all() and stop.reached is None
    assert stop("t2", {"epoch": 1, "acc": reached}) is False  # the trial itself goes on...
    assert stop.stop_all() and stop.reached == StopReason.GOAL  # ...until Ray asks about the whole sweep


def test_goal_ignores_missing_and_non_numeric_values_and_no_goal_never_stops_all():
    stop = SweepStop(settings(goal=0.5))
    for result in ({"epoch": 1}, {"epoch": 1, "acc": True}, {"epoch": 1, "acc": "0.9"}, {"epoch": 1, "acc": None}):
        stop("t", result)
    assert not stop.stop_all()
    free = SweepStop(settings())
    free("t", {"epoch": 1, "acc": 1e9})
    assert not free.stop_all() and free.reached is None


def test_a_trial_stops_at_its_epoch_budget():
    stop = SweepStop(settings(max_epochs=3))
    assert [stop("t", {"epoch": e, "acc": 0.1}) for e in (1, 2, 3, 4)] == [False, False, True, True]
    assert stop("t", {"acc": 0.1}) is False and stop("t", {"epoch": None}) is False
    assert not stop.stop_all()  # one trial at its budget does not end the sweep


def test_a_deadline_in_the_past_stops_all_and_one_ahead_does_not():
    assert not SweepStop(settings(), deadline=time.time() + 3600).stop_all()
    stop = SweepStop(settings(), deadline=time.time() - 1)
    assert stop.stop_all() and stop.reached == StopReason.DEADLINE


def test_the_earlier_of_deadline_and_time_budget_stops_the_sweep(monkeypatch):
    now = time.time()
    stop = SweepStop(settings(time_budget_s=3600), deadline=now - 1)  # the deadline comes first
    assert stop.stop_all() and stop.reached == StopReason.DEADLINE

    stop = SweepStop(settings(time_budget_s=3600), deadline=now + 86400)  # the budget comes first
    assert now + 3600 <= stop.deadline < now + 86400 and not stop.stop_all()
    monkeypatch.setattr(hpsearch.ray.stopper, "time", SimpleNamespace(time=lambda: now + 3601 + 60))
    assert stop.stop_all() and stop.reached == StopReason.TIME_BUDGET


def test_the_first_reason_to_stop_is_the_one_kept():
    stop = SweepStop(settings(goal=0.5), deadline=time.time() - 1)
    stop("t", {"epoch": 1, "acc": 0.9})
    assert stop.stop_all() and stop.reached == StopReason.GOAL
    late = SweepStop(settings(goal=0.5), deadline=time.time() - 1)
    assert late.stop_all() and late.reached == StopReason.DEADLINE
    late("t", {"epoch": 1, "acc": 0.9})
    assert late.reached == StopReason.DEADLINE


# -- results ------------------------------------------------------------------------------------

def trial(status, epoch=None, **kw):
    return SimpleNamespace(status=status, last_result=None if epoch is None else {"epoch": epoch}, **kw)


@pytest.mark.parametrize("status, epoch, ended, expected", [
    ("TERMINATED", 4, False, TrialStatus.COMPLETED),
    ("TERMINATED", 5, False, TrialStatus.COMPLETED),
    ("TERMINATED", 3, False, TrialStatus.STOPPED),
    ("TERMINATED", None, False, TrialStatus.STOPPED),  # stopped by the goal or deadline before any epoch
    ("ERROR", 4, False, TrialStatus.FAILED),
    ("ERROR", 4, True, TrialStatus.FAILED),
    ("RUNNING", 4, True, TrialStatus.COMPLETED),  # on_trial_complete, before Ray says TERMINATED
    ("RUNNING", 2, True, TrialStatus.STOPPED),
    ("RUNNING", 2, False, TrialStatus.RUNNING),
    ("PAUSED", 2, False, TrialStatus.RUNNING),
    ("PENDING", None, False, TrialStatus.PENDING),
])
def test_status_of(status, epoch, ended, expected):
    assert status_of(trial(status, epoch), max_epochs=4, ended=ended) == expected


def record(trial_id, metric, status=TrialStatus.COMPLETED):
    return TrialRecord(trial_id=trial_id, config={}, status=status, epochs=1, metric=metric, metrics={})


def test_pick_best_skips_failed_missing_and_non_finite_metrics():
    records = [record("low", 0.2), record("high", 0.8), record("failed", 0.99, TrialStatus.FAILED),
               record("none", None), record("nan", math.nan), record("inf", math.inf), record("-inf", -math.inf),
               record("stopped", 0.5, TrialStatus.STOPPED)]
    assert pick_best(records, "max").trial_id == "high"
    assert pick_best(records, "min").trial_id == "low"
    assert pick_best([record("f", 1.0, TrialStatus.FAILED), record("n", None)], "max") is None
    assert pick_best([], "min") is None


def test_read_results_skips_a_line_cut_short_by_a_kill(tmp_path):
    (tmp_path / "result.json").write_text('{"epoch": 1, "acc": 0.1}\n{"epoch": 2, "acc": 0.2}\n{"epoch": 3, "ac')
    assert read_results(tmp_path) == [{"epoch": 1, "acc": 0.1}, {"epoch": 2, "acc": 0.2}]
    assert read_results(tmp_path / "missing") == [] and read_results(None) == []


def test_started_is_whether_ray_ever_ran_the_trial():
    assert started(SimpleNamespace(run_metadata=SimpleNamespace(start_time=1_700_000_000.0)))
    assert not started(SimpleNamespace(run_metadata=SimpleNamespace(start_time=None)))
    assert not started(SimpleNamespace())


# -- the checkpoint policy --------------------------------------------------------------------

def test_checkpoint_policy_keeps_rungs_the_last_epoch_and_one_every_period(monkeypatch):
    from hpsearch import session
    from hpsearch.search.schedulers import decision_epochs

    clock = [100.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: clock[0])
    policy = session.CheckpointPolicy(decision_epochs("asha", 20, 1, 3), last=20, every_s=10)
    kept = []
    for epoch in range(1, 21):
        clock[0] += 3  # an epoch takes 3 s
        if policy.due(epoch):
            kept.append(epoch)
            policy.kept()
    # Rungs 1, 3, 9; then one whenever 10 s have passed since the last kept (every 4th epoch here);
    # and the last epoch. No stretch of work without a checkpoint is longer than 10 s + one epoch.
    assert kept == [1, 3, 7, 9, 13, 17, 20]


@pytest.mark.parametrize("every_s, seconds", [(10, [3] * 30), (5, [1, 7, 2, 2, 9, 1, 1, 1, 4, 6] * 3), (60, [11, 2] * 15)])
def test_no_stretch_without_a_checkpoint_is_longer_than_the_period_and_one_epoch(monkeypatch, every_s, seconds):
    from hpsearch import session

    clock = [0.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: clock[0])
    policy = session.CheckpointPolicy(frozenset(), last=len(seconds), every_s=every_s, since=0.0)
    kept_at = [0.0]
    for epoch, took in enumerate(seconds, start=1):
        clock[0] += took
        if policy.due(epoch):
            kept_at.append(clock[0])
            policy.kept()
    assert kept_at[-1] == clock[0]  # the last epoch
    longest = max(seconds)
    assert max(b - a for a, b in zip(kept_at, kept_at[1:])) <= every_s + longest
    assert len(kept_at) - 1 < len(seconds)  # and not every epoch


def test_checkpoint_policy_of_zero_seconds_keeps_every_epoch():
    from hpsearch.trial.session import CheckpointPolicy

    policy = CheckpointPolicy(frozenset(), last=5, every_s=0)
    assert all(policy.due(e) for e in range(1, 6))


def test_decision_epochs_follow_rays_rungs_and_brackets():
    from hpsearch.search.schedulers import decision_epochs

    assert sorted(decision_epochs("asha", 81, 1, 3)) == [1, 3, 9, 27]
    assert sorted(decision_epochs("asha", 20, 2, 2)) == [2, 4, 8, 16]
    assert sorted(decision_epochs("asha", 10, 1, 2.5)) == [1, 3, 7]  # 2.5 and 6.25 are decided at 3 and 7
    # Ray's HyperBand, max 9, eta 3: brackets start at 9, 3 and 1 epochs and pause at 1 and 3.
    assert sorted(decision_epochs("hyperband", 9, 1, 3)) == [1, 3]
    assert decision_epochs("fifo", 50) == frozenset()
