"""The simulator on a hand-made table: exact decisions of Ray's FIFO and ASHA, hand-computed.

Four configurations on a grid of one parameter, x in {0, 1/3, 2/3, 1}, each recorded for four
epochs of one second. Run in grid order (what the grid strategy does), with ASHA's rungs at
epochs 1 and 2 (grace 1, reduction factor 2, 4 epochs; Ray cuts below the median of the values
already recorded at a rung):
- x=0    0.1 0.2 0.3 0.4  first at each rung: nothing to compare with -> runs to epoch 4
- x=1/3  0.5 0.6 0.7 0.8  rung 1: 0.5 >= 0.1, rung 2: 0.6 >= 0.2 -> epoch 4
- x=2/3  0.2 0.3 0.4 0.5  rung 1: median(0.1, 0.5) = 0.3 > 0.2 -> stopped after epoch 1
- x=1    0.6 0.7 0.8 0.9  rung 1: median(0.1, 0.5, 0.2) = 0.2, rung 2: median(0.2, 0.6) = 0.4 -> epoch 4
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from hpsearch import cli
from hpsearch.simulate.curves import CurveTable, epoch_seconds
from hpsearch.simulate.events import Costs, Setting, simulate
from hpsearch.simulate.many import compare, expand
from hpsearch.simulate.sources import earlier_sweep
from hpsearch.space import Float, Space

SPACE = Space(Float("x", 0.0, 1.0, grid=4))
CURVES = {0.0: [0.1, 0.2, 0.3, 0.4], 1 / 3: [0.5, 0.6, 0.7, 0.8], 2 / 3: [0.2, 0.3, 0.4, 0.5], 1.0: [0.6, 0.7, 0.8, 0.9]}
FREE = Costs(start_s=0, trial_s=0, epoch_s=0, end_s=0)


def table(failed_last: bool = False) -> CurveTable:
    configs = [{"x": x} for x in CURVES]
    curves = [list(c) for c in CURVES.values()]
    if failed_last:
        curves[-1] = curves[-1][:2]  # x=1 diverges in its third epoch
    return CurveTable.build(SPACE, "acc", "max", configs, curves, [[1.0] * len(c) for c in curves],
                            failed=[False, False, False, failed_last])


def setting(scheduler: str, workers: int = 1, **kw) -> Setting:
    return Setting("grid", scheduler, trials=4, max_epochs=4, grace_period=1, reduction_factor=2, workers=workers, **kw)


def test_fifo_trains_every_trial_to_the_end_one_after_another():
    run = simulate(table(), setting("fifo"), seed=0, costs=FREE)
    assert (run.epochs, run.trials, run.wall_s) == (16, 4, 16.0)
    assert run.rows == [0, 1, 2, 3] and max(run.distances) < 1e-9  # the grid rounds its points a little
    assert run.best[-1] == (16.0, 0.9) and run.time_to(0.8, "max") == 8.0


def test_fifo_on_two_workers_with_measured_costs():
    costs = Costs(start_s=2.0, trial_s=0.5, epoch_s=0.25, end_s=1.0)
    run = simulate(table(), setting("fifo", workers=2), seed=0, costs=costs)
    # two rounds of two trials: 2 + 2 x (0.5 + 4 x 1.25) + 1
    assert run.wall_s == pytest.approx(2 + 2 * (0.5 + 4 * 1.25) + 1)
    assert run.epochs == 16


@pytest.mark.parametrize("workers, wall", [(1, 13.0), (2, 8.0)])
def test_asha_stops_exactly_the_trials_ray_stops(workers, wall):
    run = simulate(table(), setting("asha", workers=workers), seed=0, costs=FREE)
    assert run.epochs == 4 + 4 + 1 + 4
    assert run.reached == {1: 4, 2: 3, 3: 3, 4: 3}
    assert run.wall_s == wall
    assert run.best_value == 0.9


def test_a_goal_ends_the_sweep_when_a_trial_reports_it():
    run = simulate(table(), setting("asha", goal=0.8), seed=0, costs=FREE)
    assert (run.wall_s, run.epochs, run.best_value) == (8.0, 8, 0.8)


def test_a_recorded_failure_fails_the_replayed_trial_in_the_same_epoch():
    run = simulate(table(failed_last=True), setting("fifo"), seed=0, costs=FREE)
    assert run.failed == 1 and run.epochs == 4 + 4 + 4 + 2
    assert run.wall_s == 15.0  # the failing third epoch still takes its second


def test_a_configuration_the_table_lacks_is_answered_by_the_nearest_with_its_distance():
    t = table()
    assert t.nearest({"x": 0.3}) == (1, pytest.approx(1 / 3 - 0.3))
    run = simulate(t, Setting("random", "fifo", trials=6, max_epochs=4, workers=2), seed=3, costs=FREE)
    assert len(run.distances) == 6 and all(0 <= d <= 1 / 6 + 1e-9 for d in run.distances)


def test_hyperband_and_tpe_run_on_the_real_ray_and_optuna_objects():
    t = table()
    hb = simulate(t, Setting("random", "hyperband", trials=8, max_epochs=4, reduction_factor=2, workers=2), 0, FREE)
    assert 0 < hb.epochs < 8 * 4 and hb.trials == 8
    tpe = simulate(t, Setting("tpe", "asha", trials=8, max_epochs=4, reduction_factor=2, workers=2), 0, FREE)
    assert tpe.trials == 8 and tpe.best_value is not None
    opt = simulate(t, Setting("optuna", "sha", trials=8, max_epochs=4, reduction_factor=2, workers=2), 0, FREE)
    assert opt.trials == 8 and 8 <= opt.epochs <= 8 * 4


def test_same_seed_same_run_and_seeds_differ():
    s = Setting("random", "asha", trials=12, max_epochs=4, reduction_factor=2, workers=2)
    a, b, c = (simulate(table(), s, seed, FREE) for seed in (1, 1, 2))
    assert (a.rows, a.epochs, a.wall_s) == (b.rows, b.epochs, b.wall_s)
    assert a.rows != c.rows


def test_compare_gives_a_target_and_speed_ups_over_seeds():
    settings = expand(Setting("random", "asha", trials=6, max_epochs=4, workers=1), reduction_factor=[2, 3],
                      scheduler=["asha", "fifo"])
    assert len(settings) == 3  # fifo has no reduction factor: one fifo setting
    summaries, ref = compare(table(), settings, seeds=4, costs=FREE)
    assert ref.setting.scheduler == "fifo" and ref.target in {0.8, 0.9}
    assert all(len(s.runs) == 4 for s in summaries)
    assert all(math.isfinite(s.wall[0]) for s in summaries)


def test_table_round_trips_through_a_file(tmp_path):
    t = table(failed_last=True)
    back = CurveTable.load(t.save(tmp_path / "t.curves.npz", command="test"))
    assert back.configs == t.configs and back.metric == "acc" and back.failed.tolist() == [False, False, False, True]
    assert np.allclose(np.nan_to_num(back.values, nan=-1), np.nan_to_num(t.values, nan=-1))


def test_epoch_seconds_from_report_times():
    assert epoch_seconds(0, [3000, 4000, 5500]) == [1.25, 1.0, 1.5]
    assert epoch_seconds(1000, [1500]) == [0.5]


@pytest.mark.parametrize("kw, message", [
    (dict(trials=0), "trials: must be a whole number >= 1"),
    (dict(workers=0), "workers"),
    (dict(reduction_factor=1), "reduction_factor: must be >= 2"),
    (dict(grace_period=9, max_epochs=4), "grace_period: must be <= max_epochs"),
    (dict(strategy="bayes"), "strategy"),
])
def test_bad_settings_get_one_line(kw, message):
    with pytest.raises(ValueError, match=message):
        Setting(**{**dict(strategy="random", scheduler="asha", trials=4, max_epochs=4), **kw})


def _tell(alg, trial_id: str, values: list[float], complete: bool = True) -> None:
    alg.suggest(trial_id)
    for epoch, v in enumerate(values[:-1], 1):
        alg.on_trial_result(trial_id, {"acc": v, "epoch": epoch, "training_iteration": epoch})
    last = len(values)  # Tune passes the result that carried STOP to on_trial_complete only
    alg.on_trial_complete(trial_id, {"acc": values[-1], "epoch": last, "training_iteration": last})


@pytest.mark.parametrize("max_epochs, state_of_stopped", [(4, "PRUNED"), (None, "COMPLETE")])
def test_tpe_is_told_a_trial_stopped_early_was_pruned_with_its_values(max_epochs, state_of_stopped):
    """hpsearch's TPE (max_epochs given, as sweeps give it) against Ray's OptunaSearch as is."""
    from hpsearch.ray.searchers import make_search_alg

    alg = make_search_alg("tpe", SPACE, "acc", "max", 4, seed=0, max_epochs=max_epochs)
    _tell(alg, "stopped", [0.1, 0.2])  # ASHA stopped it after epoch 2 of 4
    _tell(alg, "whole", [0.3, 0.4, 0.5, 0.6])
    stopped, whole = alg._ot_study.get_trials(deepcopy=False)
    assert stopped.state.name == state_of_stopped and whole.state.name == "COMPLETE" and whole.value == 0.6
    if state_of_stopped == "PRUNED":  # Optuna keeps a pruned trial's last intermediate value as its value
        assert stopped.intermediate_values == {1: 0.1, 2: 0.2}


def test_simulate_command_compares_settings_and_recommends_one(tmp_path, capsys):
    from hpsearch import cli
    from tests.test_cli import TINY_MODULE, tiny_table

    module = tmp_path / "tiny.py"
    module.write_text(TINY_MODULE)
    table = tiny_table(str(module), tmp_path / "t.npz")
    with pytest.raises(SystemExit) as e:
        cli.main(["simulate", str(module), "--table", str(table), "--scheduler", "asha,fifo", "--reduction-factor", "2,3",
                  "--trials", "6", "--seeds", "3", "--workers", "2", "--plot", str(tmp_path / "best.png")])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for label in ("random/asha rf=2", "random/asha rf=3", "random/fifo"):
        assert label in text
    assert "Random-search target: val_acc" in text and "Recommended: random/" in text
    assert (tmp_path / "best.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_table_read_from_a_real_sweep_predicts_a_real_asha_sweep(ray_session, mnist1d, tmp_path, mlflow_uri, capsys):
    """Record curves with a real FIFO sweep, read them back from MLflow, then run a real ASHA sweep
    of the same configurations: the simulation on the table trains as many epochs, within 20%."""
    import hpsearch
    from hpsearch.trial.train import train as reference_train
    from mlflow import MlflowClient
    from tests.conftest import TINY

    def sweep(name, scheduler):
        # wait(): the parent run is FINISHED (what earlier_sweep looks for) once the sweep's end is written
        return hpsearch.sweep(TINY, train=reference_train, data=mnist1d, storage=str(tmp_path / "ray"), progress=False,
                              metric="val_acc", mode="max", strategy="grid", scheduler=scheduler, max_epochs=9,
                              grace_period=1, reduction_factor=3, name=name).wait()

    sweep(f"table-{tmp_path.name}", "fifo")
    recorded = CurveTable.from_sweep(MlflowClient(tracking_uri=mlflow_uri), f"table-{tmp_path.name}")
    grid = len(TINY.grid())
    assert len(recorded) == grid and recorded.max_epochs == 9 and (recorded.lengths == 9).all()
    assert np.isfinite(recorded.seconds).all() and (recorded.seconds > 0).all()

    # Found again without its name: the newest finished sweep of the same space in the store.
    client = MlflowClient(tracking_uri=mlflow_uri)
    earlier = earlier_sweep(client, TINY, "val_acc", 9)
    assert earlier is not None and earlier.source == recorded.source and len(earlier) == grid
    assert earlier_sweep(client, TINY, "val_acc", 10) is None and earlier_sweep(client, TINY, "val_loss", 9) is None

    real = sweep(f"asha-{tmp_path.name}", "asha")
    setting = Setting("grid", "asha", trials=grid, max_epochs=9, grace_period=1, reduction_factor=3, workers=2)
    runs = [simulate(recorded, setting, seed) for seed in range(3)]
    assert all(max(r.distances) < 1e-9 for r in runs)  # the table holds the very configurations
    predicted = float(np.median([r.epochs for r in runs]))
    # ASHA decides as results arrive, so the order of two workers' results moves a trial or two.
    assert abs(predicted - real.total_epochs) <= max(0.2 * real.total_epochs, 3), (predicted, real.total_epochs)
    # The sweep's parent run recorded plan against actual from that earlier sweep (TINY ships no table).
    assert abs(real.expected["simulated_epochs"] - real.total_epochs) <= max(0.2 * real.total_epochs, 3), real.expected

    # plan finds it too, for a space module defining the same space.
    module = tmp_path / "same_space.py"
    module.write_text("from tests.conftest import TINY as SPACE\nMETRIC = 'val_acc'\nMODE = 'max'\nMAX_EPOCHS = 9\n"
                      "DATASET = 'mnist1d'\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["plan", str(module), "--strategy", "grid", "--scheduler", "asha", "--max-epochs", "9", "--grace-period", "1",
                  "--reduction-factor", "3", "--epoch-seconds", "0.1", "--workers", "2"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"from sweep asha-{tmp_path.name}" not in text  # an ASHA sweep has too few whole curves
    simulated = re.search(rf"Simulated on recorded curves \({grid} configurations of this space, from sweep "
                          rf"table-{tmp_path.name} .*?: (\d+) epochs", text)
    assert simulated, text
    assert abs(int(simulated.group(1)) - predicted) <= max(0.2 * predicted, 3)
