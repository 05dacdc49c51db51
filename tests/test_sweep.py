"""Real sweeps on a real local Ray cluster, training real MLPs on MNIST-1D."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ray.tune import Callback

import hpsearch
from hpsearch.results import read_results
from hpsearch.trial.train import train as reference_train
from tests.conftest import TINY

pytestmark = pytest.mark.slow


def _sweep(storage, mnist1d, **kw):
    kw.setdefault("metric", "val_acc")
    kw.setdefault("mode", "max")
    return hpsearch.sweep(TINY, train=reference_train, data=mnist1d, storage=storage, progress=False, **kw)


def _key(config):
    return json.dumps(config, sort_keys=True)


def _history(record):
    """Epochs as reported, from Ray's per-trial result.json."""
    return [int(r["epoch"]) for r in read_results(record.path)]


def _check_consistent(result, max_epochs):
    for t in result.trials:
        assert t.status in ("completed", "stopped"), (t.trial_id, t.status, t.error)
        assert 1 <= t.epochs <= max_epochs
        assert (t.status == "completed") == (t.epochs == max_epochs)
        assert t.metric is not None and 0.0 <= t.metric <= 1.0
    best = max(result.trials, key=lambda t: t.metric)
    assert result.best_metric == best.metric and result.best_config == best.config


@pytest.mark.parametrize("scheduler", ["fifo", "asha"])
def test_grid_visits_exactly_the_grid(ray_session, storage, mnist1d, scheduler):
    result = _sweep(storage, mnist1d, strategy="grid", scheduler=scheduler, max_epochs=4, grace_period=1,
                    reduction_factor=2)
    grid = list(TINY.grid())
    assert len(grid) == 12
    assert sorted(_key(t.config) for t in result.trials) == sorted(_key(c) for c in grid)
    _check_consistent(result, 4)
    if scheduler == "fifo":
        assert all(t.status == "completed" for t in result.trials)
        assert result.total_epochs == 12 * 4
    else:
        stopped = [t for t in result.trials if t.status == "stopped"]
        assert stopped and all(t.epochs < 4 for t in stopped)
        assert result.total_epochs < 12 * 4


@pytest.mark.parametrize("scheduler", ["fifo", "asha"])
def test_random_search_runs_the_seeded_samples(ray_session, storage, mnist1d, scheduler):
    result = _sweep(storage, mnist1d, strategy="random", scheduler=scheduler, trials=8, max_epochs=4,
                    reduction_factor=2, seed=5)
    assert sorted(_key(t.config) for t in result.trials) == sorted(_key(c) for c in TINY.sample(8, seed=5))
    _check_consistent(result, 4)
    if scheduler == "asha":
        assert any(t.status == "stopped" for t in result.trials)


@pytest.mark.parametrize("scheduler", ["fifo", "asha"])
def test_tpe_proposes_valid_configs(ray_session, storage, mnist1d, scheduler):
    result = _sweep(storage, mnist1d, strategy="tpe", scheduler=scheduler, trials=8, max_epochs=3,
                    reduction_factor=2, seed=1)
    assert len(result.trials) == 8
    for t in result.trials:
        assert TINY.validate_config(t.config) == t.config
        assert ("momentum" in t.config) == (t.config["optimizer"] == "sgd")
    _check_consistent(result, 3)


class PauseLog(Callback):
    """A driver callback that records each trial's reported epochs and when Ray had it PAUSED.

    Ray applies a scheduler's PAUSE (after saving the trial) inside a step, and a resumed trial
    only starts again in a later step, so ``on_step_end`` sees every pause. Plain data: Ray
    pickles callbacks into its experiment state.
    """

    def __init__(self):
        self.epochs: dict[str, list[int]] = {}  # trial id -> epochs in the order reported
        self.paused: dict[str, list[int]] = {}  # trial id -> how many results it had reported at each pause

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs.setdefault(trial.trial_id, []).append(result.get("epoch"))

    def on_step_end(self, iteration, trials, **info):
        for trial in trials:
            if trial.status == "PAUSED":
                seen = len(self.epochs.get(trial.trial_id, ()))
                at = self.paused.setdefault(trial.trial_id, [])
                if seen not in at:
                    at.append(seen)


def test_hyperband_pauses_and_resumes_from_checkpoints(ray_session, storage, mnist1d):
    log = PauseLog()
    result = _sweep(storage, mnist1d, strategy="random", scheduler="hyperband", trials=10, max_epochs=9,
                    reduction_factor=3, seed=2, callbacks=[log])
    _check_consistent(result, 9)
    assert {t.status for t in result.trials} == {"completed", "stopped"}
    for t in result.trials:
        # A paused trial that resumed from its checkpoint reports 1, 2, 3, ... with no restart.
        assert _history(t) == list(range(1, t.epochs + 1))
    # Bracket s=1 of Ray's HyperBand holds 5 trials paused at 3 epochs until all reach it, then
    # keeps 2: at least one of them was paused, so it resumed and reported epoch 4 next.
    resumed = [(trial_id, n) for trial_id, pauses in log.paused.items() for n in pauses
               if 0 < n < len(log.epochs[trial_id])]
    assert resumed, f"no trial was paused and then resumed: paused {log.paused}, epochs {log.epochs}"
    for trial_id, n in resumed:
        epochs = log.epochs[trial_id]
        assert epochs[n] == epochs[n - 1] + 1, (trial_id, n, epochs)  # from its checkpoint, not epoch 1


def test_goal_ends_the_sweep_once_a_trial_reaches_it(ray_session, storage, mnist1d, mlflow_uri):
    from mlflow import MlflowClient

    # FIFO over 40 configurations would train 160 epochs; 0.3 val_acc comes within a few trials.
    result = _sweep(storage, mnist1d, strategy="random", scheduler="fifo", trials=40, max_epochs=4, seed=3,
                    goal=0.3, tracking_uri=mlflow_uri, experiment="goal")
    assert result.stopped_by == "goal" and result.best_metric >= 0.3
    started = [t for t in result.trials if t.status != "pending"]
    assert 1 <= len(started) < 40 and result.total_epochs < 40 * 4
    # Trials still running when the goal was reached were stopped, and say by what.
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([result.tracking["experiment_id"]], f"tags.`hpsearch.sweep` = '{result.name}'")
    parent = next(r for r in runs if r.data.tags["hpsearch.role"] == "sweep")
    assert parent.data.tags["hpsearch.stopped_by"] == "goal" and parent.data.params["goal"] == "0.3"
    children = [r for r in runs if r.data.tags["hpsearch.role"] == "trial"]
    assert len(children) == len(started) and all(r.info.status == "FINISHED" for r in children)
    for r in children:
        if r.data.tags["hpsearch.status"] == "stopped":
            assert r.data.tags["hpsearch.stopped_by"] == "goal"


def test_time_budget_ends_the_sweep(ray_session, storage, tmp_path, monkeypatch):
    from hpsearch.ray import stopper

    # The first trial finishes at once; the others say they run, then wait for a file nobody
    # writes. The clock the sweep's stopper reads passes the budget once two of them run, so the
    # budget, not the machine's speed, ends them: two stopped while running (2 CPUs), one never started.
    never, running = str(tmp_path / "never"), tmp_path / "running"
    running.mkdir()

    class BudgetClock:
        @staticmethod
        def time():
            return time.time() + (3600 if len(list(running.iterdir())) >= 2 else 0)

    monkeypatch.setattr(stopper, "time", BudgetClock)

    def train(config):
        import os
        import pathlib
        import time

        if config["kind"] != "quick":
            pathlib.Path(str(running), config["kind"]).touch()
        while config["kind"] != "quick" and not os.path.exists(never):
            time.sleep(0.05)
        for epoch in (1, 2):
            hpsearch.report(epoch=epoch, score=1.0)

    space = hpsearch.Space(hpsearch.Choice("kind", ["quick", "waits-1", "waits-2", "waits-3"]))
    result = hpsearch.sweep(space, train=train, metric="score", mode="max", strategy="grid", scheduler="fifo",
                            max_epochs=2, storage=storage, progress=False, time_budget_s=600)
    assert result.stopped_by == "time_budget"
    assert {t.config["kind"]: t.status for t in result.trials} == {
        "quick": "completed", "waits-1": "stopped", "waits-2": "stopped", "waits-3": "pending"}


def test_without_a_goal_every_trial_runs(ray_session, storage, mnist1d):
    result = _sweep(storage, mnist1d, strategy="random", scheduler="fifo", trials=4, max_epochs=2, seed=3)
    assert result.stopped_by is None and [t.status for t in result.trials] == ["completed"] * 4


def test_diverged_trial_fails_with_its_reason_and_the_sweep_goes_on(ray_session, storage, mnist1d):
    space = hpsearch.Space(hpsearch.Fixed("model", "mlp"), hpsearch.Fixed("optimizer", "sgd"),
                           hpsearch.Fixed("width", 16), hpsearch.Fixed("norm", "none"),
                           hpsearch.Choice("lr", [0.05, 1e12]))
    result = hpsearch.sweep(space, train=reference_train, data=mnist1d, metric="val_acc", mode="max",
                            strategy="grid", scheduler="fifo", max_epochs=3, storage=storage, progress=False)
    by_lr = {t.config["lr"]: t for t in result.trials}
    assert by_lr[0.05].status == "completed"
    assert by_lr[1e12].status == "failed" and "diverged" in by_lr[1e12].error
    assert by_lr[1e12].epochs < 3
    assert result.best.trial_id == by_lr[0.05].trial_id


def test_checkpoints_are_kept_at_the_rungs_and_the_last_epoch_only(ray_session, storage, mnist1d):
    # No time-based checkpoint within an hour: what remains is the policy's epochs.
    result = _sweep(storage, mnist1d, strategy="grid", scheduler="asha", max_epochs=9, grace_period=1,
                    reduction_factor=3, checkpoint_every_s=3600)
    _check_consistent(result, 9)
    assert {t.status for t in result.trials} == {"completed", "stopped"}
    for t in result.trials:
        with open(Path(t.path) / "result.json") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        kept = sorted(r["epoch"] for r in rows if r.get("checkpoint_dir_name"))
        assert kept == [e for e in (1, 3, 9) if e <= t.epochs], (t.trial_id, t.status, t.epochs, kept)
        # All kept while the sweep ran (a resume may need any one a snapshot names); once it has
        # ended, only each trial's latest.
        held = [p for p in Path(t.path).glob("checkpoint_*")]
        assert len(held) == 1 and Path(t.checkpoint).name == held[0].name, (t.trial_id, held, t.checkpoint)
    best = result.best
    assert best.status == "completed" and best.checkpoint  # the winner's model is still there to log


USER_TRAIN = """
import hpsearch

def train(config):
    state = hpsearch.load_checkpoint() or {"epoch": 0}
    for epoch in range(state["epoch"] + 1, 6):
        hpsearch.report(epoch=epoch, score=config["x"] * epoch, checkpoint={"epoch": epoch})
"""


def test_user_trainable_needs_no_ray(ray_session, storage, tmp_path):
    # The same user module, written with hpsearch's API only: outside a sweep it runs as a plain
    # function and Ray is never imported; inside one, it reports and checkpoints through Ray.
    (tmp_path / "user_train.py").write_text(USER_TRAIN)
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, hpsearch, user_train; user_train.train({'x': 2}); "
                               "print([r['score'] for r in hpsearch.session.history], 'ray' in sys.modules)"],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    assert plain.stdout.split("]")[0] + "]" == "[2, 4, 6, 8, 10]" and plain.stdout.strip().endswith("False"), plain.stdout
    namespace: dict = {}
    exec(USER_TRAIN, namespace)
    train = namespace["train"]

    space = hpsearch.Space(hpsearch.Int("x", 1, 3))
    result = hpsearch.sweep(space, train=train, metric="score", mode="max", strategy="grid",
                            scheduler="fifo", max_epochs=5, storage=storage, progress=False)
    assert sorted((t.config["x"], t.metric) for t in result.trials) == [(1, 5), (2, 10), (3, 15)]
    assert result.best_config == {"x": 3}


def test_sweep_on_a_multi_node_cluster_places_trials_on_several_nodes(tmp_path):
    # ray.cluster_utils.Cluster needs its own Ray; a fresh interpreter keeps the session's intact.
    script = textwrap.dedent(f"""
        import json, ray
        from ray.cluster_utils import Cluster
        import hpsearch
        from hpsearch.trial.train import train

        # Two nodes of one CPU each, the head one of them (a node fewer to start than a CPU-less head and two).
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
        workers = [cluster.head_node, cluster.add_node(num_cpus=1)]
        cluster.wait_for_nodes()
        space = hpsearch.Space(hpsearch.Fixed("model", "mlp"), hpsearch.Fixed("width", 16),
                               hpsearch.Float("lr", 1e-3, 1e-1, log=True))
        result = hpsearch.sweep(space, train=train, data="mnist1d", metric="val_acc", mode="max",
                                strategy="random", scheduler="fifo", trials=6, max_epochs=2,
                                address=cluster.address, storage={str(tmp_path)!r}, progress=False)
        print(json.dumps({{"nodes": sorted({{t.node for t in result.trials}}),
                           "workers": sorted(n.node_id for n in workers),
                           "statuses": [t.status for t in result.trials]}}))
        ray.shutdown(); cluster.shutdown()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))  # Ray may log after it
    assert out["statuses"] == ["completed"] * 6
    assert len(out["nodes"]) >= 2 and set(out["nodes"]) <= set(out["workers"])
