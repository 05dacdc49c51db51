"""--budget: settings chosen by simulation to fit a wall-clock, epochs or worker-hours, and a sweep
that ends when its budget is spent."""

from __future__ import annotations

import re
import time

import pytest
from conftest import run_here
from test_cli import TINY_MODULE  # the tiny space: 6 grid points, 3 epochs

import hpsearch
from hpsearch.budget import Budget
from hpsearch.ray.stopper import SweepStop
from hpsearch.settings import SweepSettings
from hpsearch.simulate.budget import Scored
from hpsearch.simulate.events import Costs, Run, Setting


def test_budgets_read_as_people_write_them():
    assert Budget.parse("90m") == Budget("wall", 5400.0) and str(Budget.parse("90m")) == "1.5h"
    assert Budget.parse("500epochs") == Budget("epochs", 500.0) and Budget.parse("1 epoch").kind == "epochs"
    assert Budget.parse("16 GPU-h") == Budget("gpu-h", 16.0) and Budget.parse("8 cpu-hours") == Budget("cpu-h", 8.0)
    for bad in ("4", "4 weeks", "h", "", "nan h"):
        with pytest.raises(ValueError, match="^budget: give a wall-clock"):
            Budget.parse(bad)
    for bad in ("0h", "-3 epochs", "-1 gpu-h"):
        with pytest.raises(ValueError, match="^budget: must be > 0"):
            Budget.parse(bad)


def _settings(**kw):
    return SweepSettings(metric="acc", mode="max", max_epochs=9, **kw)


def test_the_stopper_ends_the_sweep_when_epochs_or_worker_hours_are_spent():
    stop = SweepStop(_settings(budget="5 epochs"))
    for epoch in (1, 2):
        for trial in ("a", "b"):
            stop(trial, {"epoch": epoch, "acc": 0.5})
    assert not stop.stop_all() and stop.reached is None  # 4 of 5 epochs
    stop("a", {"epoch": 3, "acc": 0.5})
    assert stop.stop_all() and str(stop.reached) == "budget"

    # Worker-hours: each result's time_this_iter_s, times what a trial holds (2 workers of 2 CPUs).
    stop = SweepStop(_settings(budget="1 cpu-h", cpus_per_trial=2, workers_per_trial=2))
    stop("a", {"epoch": 1, "acc": 0.5, "time_this_iter_s": 800.0})
    assert not stop.stop_all()  # 3,200 of 3,600 CPU-seconds
    stop("a", {"epoch": 2, "acc": 0.5, "time_this_iter_s": 100.0})
    assert stop.stop_all() and str(stop.reached) == "budget"


def test_a_sweep_the_budget_ends_pays_its_end_for_the_trials_it_started_and_one_that_ends_first_keeps_its_own():
    # Three trials' first epochs end at 2, 3 and 7 s; the last epoch at 9 s; the sweep at 12 s.
    run = Run(Setting(), 0, wall_s=12.0, epochs=6, epoch_times=[2, 3, 5, 7, 8, 9], firsts=[2, 3, 7])
    scored = lambda amount: Scored(Setting(), [run], Budget("wall", amount), 1.0, 1.0, "max",  # noqa: E731
                                   end_s=2.0, end_trial_s=0.5)
    assert scored(6.0).cut(run) == (6.0 + 2.0 + 2 * 0.5, 3)  # two trials started by 6 s
    assert scored(9.0).cut(run) == (12.0, 6)  # its training ended by then: its own end
    costs = Costs.measured([(1, 3), (1, 4), (3.5, 6), (4.5, 7), (6.5, 9), (7.5, 10)], 15.0, end_trial_s=0.5)
    assert costs.end_s == pytest.approx(15.0 - 10 - 6 * 0.5) and costs.end_trial_s == 0.5


def test_a_wall_clock_budget_is_a_deadline_and_the_earlier_of_it_and_a_time_budget_wins():
    now = time.time()
    stop = SweepStop(_settings(budget="2h", time_budget_s=3600))
    assert str(stop.why) == "time_budget" and now + 3590 < stop.deadline < now + 3700
    stop = SweepStop(_settings(budget="30m", time_budget_s=3600))
    assert str(stop.why) == "budget" and now + 1790 < stop.deadline < now + 1900
    stop.deadline = now - 1  # as if the half hour had passed
    assert stop.stop_all() and str(stop.reached) == "budget"


def test_without_recorded_curves_the_trials_come_from_the_arithmetic_and_it_says_so(tmp_path, capsys):
    module = tmp_path / "tiny.py"
    module.write_text(TINY_MODULE)
    code, out, err = run_here(capsys, "plan", str(module), "--budget", "30 epochs", "--scheduler", "fifo",
                              "--epoch-seconds", "1", "--tracking-uri", "off")
    assert code == 0, err
    # FIFO trains every trial to its 3 epochs: 30 epochs are 10 trials.
    assert "Budget 30 epochs (30 epochs): no recorded curves of this space, so no bands; trials chosen by the plan's " \
           "arithmetic alone: 10." in out, out
    assert "Kept as given: scheduler." in out and ": 10 trials (random), scheduler fifo" in out, out


def _chosen(out: str) -> dict[str, dict[str, str]]:
    rows = {}
    for label in ("chosen", "runner-up", "defaults"):
        found = re.search(rf"^  {label}: +(.+?), (\d+) trials, (\d+) at once: wall .*?, epochs (\d+) \[(\d+)-(\d+)\].*?"
                          r"best val_acc ([\d.]+) \[([\d.]+)-([\d.]+)\]", out, re.M)
        assert found, (label, out)
        rows[label] = dict(zip(("how", "trials", "workers", "epochs", "epochs_lo", "epochs_hi", "best", "best_lo",
                                "best_hi"), found.groups()))
    return rows


@pytest.mark.slow
def test_plan_budget_picks_settings_whose_simulated_best_beats_the_defaults(capsys):
    # The recorded table shipped with spaces/mlp.py; a budget of 400 epochs on two workers.
    code, out, err = run_here(capsys, "plan", "mlp", "--budget", "400 epochs", "--epoch-seconds", "0.2", "--workers", "2",
                              "--tracking-uri", "off")
    assert code == 0, err
    assert "settings chosen by simulation on 300 recorded curves (mlp.curves.npz, shipped beside the space module)" in out
    rows = _chosen(out)
    assert float(rows["chosen"]["best"]) > float(rows["defaults"]["best"]), rows
    assert int(rows["chosen"]["epochs_hi"]) <= 400, rows  # 9 of 10 simulated sweeps fit
    assert rows["runner-up"] != rows["chosen"]
    # The plan that follows is the chosen setting's.
    assert f": {rows['chosen']['trials']} trials (random), scheduler {rows['chosen']['how'].split()[0].split('/')[1]}" in out, out

    # What the user sets is kept, and the rest is chosen around it.
    code, out, err = run_here(capsys, "plan", "mlp", "--budget", "5m", "--epoch-seconds", "0.2", "--workers", "2",
                              "--trials", "50", "--scheduler", "asha", "--tracking-uri", "off")
    assert code == 0, err
    rows = _chosen(out)
    assert "Kept as given: scheduler, trials." in out, out
    assert {r["trials"] for r in rows.values()} == {"50"} and all(r["how"].startswith("random/asha") for r in rows.values())


@pytest.mark.slow
def test_a_budgeted_sweep_spends_what_it_promised_and_one_set_to_overrun_ends_at_the_budget(ray_session, tmp_path,
                                                                                              capsys, mlflow_uri):
    from mlflow import MlflowClient

    module = tmp_path / "tiny.py"
    module.write_text(TINY_MODULE)
    # FIFO on the tiny space: 24 epochs are 8 trials of 3 epochs, a promise of exactly 24 epochs.
    result = hpsearch.sweep(str(module), budget="24 epochs", scheduler="fifo", storage=str(tmp_path / "runs"),
                            progress=False, name="fits")
    assert len(result.trials) == 8 and result.stopped_by is None
    assert sum(t.epochs for t in result.trials) == 24
    parent = MlflowClient(tracking_uri=mlflow_uri).get_run(result.tracking["parent_run_id"])
    assert "Budget 24 epochs (24 epochs)" in parent.data.tags["mlflow.note.content"]
    assert parent.data.params["budget"] == "24 epochs"

    # Twelve trials asked for (kept as given) cannot fit 12 epochs: the sweep ends when they are spent.
    result = hpsearch.sweep(str(module), budget="12 epochs", scheduler="fifo", trials=12, storage=str(tmp_path / "runs"),
                            progress=False, name="overruns")
    assert result.stopped_by == "budget"
    spent = sum(t.epochs for t in result.trials)
    assert 12 <= spent <= 12 + 2 * 2, [(t.status, t.epochs) for t in result.trials]  # what the 2 running trials had in flight
    statuses = [str(t.status) for t in result.trials]
    assert "completed" in statuses and set(statuses) <= {"completed", "stopped", "pending"}, statuses
    assert statuses.count("completed") < 12  # the budget ended it: not every trial ran
    # Its promise took this machine's costs outside training from the sweep before it, not the defaults'.
    note = MlflowClient(tracking_uri=mlflow_uri).get_run(result.tracking["parent_run_id"]).data.tags["mlflow.note.content"]
    assert "Costs outside training as sweep fits of this space showed them" in note, note


@pytest.mark.slow
def test_epochs_that_slow_down_half_way_give_the_overrun_warning_before_the_budget_ends(ray_session, tmp_path):
    import logging

    from mlflow import MlflowClient

    # Epochs take 0.2 s (the shipped table's median), then 2 s once 30 have been trained, until
    # the warning has been given. A store of its own: the shipped table is the promise's source.
    counter, warned = tmp_path / "epochs", tmp_path / "warned"
    counter.write_text("")
    heard = []

    class Heard(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("budget: "):
                heard.append((record.getMessage(), len(counter.read_text()), time.monotonic()))
                warned.write_text("")

    def train(config):
        import math
        import os
        import time

        for epoch in range(1, 28):
            slow = os.path.getsize(counter) >= 30 and not os.path.exists(warned)
            time.sleep(2.0 if slow else 0.2)
            with open(counter, "a") as f:
                f.write("x")
            hpsearch.report(epoch=epoch, val_acc=0.9 - 0.05 * abs(math.log10(config["lr"]) + 3) - 0.3 / epoch)

    handler = Heard()
    logging.getLogger("hpsearch.ray.callbacks").addHandler(handler)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        started = time.monotonic()
        result = hpsearch.sweep("mlp", train=train, budget="60s", storage=str(tmp_path / "runs"), progress=False,
                                name="slows", tracking_uri=uri)
    finally:
        logging.getLogger("hpsearch.ray.callbacks").removeHandler(handler)
    assert len(heard) == 1, "\n".join(f"{m} @{e}" for m, e, _ in heard)
    message, epochs_then, when = heard[0]
    assert epochs_then > 30, heard  # after the slowdown, not before
    assert when - started < 60, heard  # before the budget ended the sweep
    assert "slows is now forecast to spend" in message and "beyond the" in message and "epochs take" in message
    assert re.search(r"--trials \d+ rather than \d+", message), message
    parent = MlflowClient(tracking_uri=uri).get_run(result.tracking["parent_run_id"])
    assert parent.data.tags["hpsearch.forecast"].startswith("forecast ")
    assert {"forecast_spend", "forecast_spend_p10", "forecast_spend_p90"} <= set(parent.data.metrics)
