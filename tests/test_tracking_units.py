"""The tracker's pieces without Ray: Buffers, and reconcile after a resume against a real store."""

import json
import os
import threading
from types import SimpleNamespace

from hpsearch.settings import SweepSettings
from hpsearch.space import Choice, Float, Space
from hpsearch.tracking.buffers import Buffers
from hpsearch.tracking.reconcile import reconcile
from hpsearch.tracking.tracker import SweepTracker
from hpsearch.tracking.writer import _fits, children_of
from hpsearch.vocab import (
    ROLE_SWEEP,
    TAG_ERROR,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STATUS,
    TAG_STOPPED_AT,
    TAG_STOPPED_BY,
    TAG_SWEEP,
    TAG_TRIAL,
)

# -- Buffers ------------------------------------------------------------------------------------


def test_one_runs_params_metrics_and_tags_come_out_as_one_batch():
    b = Buffers()
    b.add("trial:1", metrics=[("acc", 0.1, 10, 1)], params={"lr": "0.1", "width": "16"})
    b.add("trial:1", metrics=[("acc", 0.2, 20, 2)], params={"lr": "0.2"}, tags={"status": 3, "long": "x" * 6000})
    assert b.take() == [{"op": "log_batch", "ref": "trial:1", "params": {"lr": "0.2", "width": "16"},
                         "metrics": [("acc", 0.1, 10, 1), ("acc", 0.2, 20, 2)],
                         "tags": {"status": "3", "long": "x" * 5000}}]
    assert b.take() == []  # emptied


def test_take_of_one_run_leaves_the_others():
    b = Buffers()
    b.add("trial:1", metrics=[("acc", 0.1, 0, 1)])
    b.add("trial:2", params={"lr": "0.1"})
    b.add("parent", tags={"t": "x"})
    assert [op["ref"] for op in b.take("trial:2")] == ["trial:2"]
    assert b.take("trial:2") == [] and b.take("nothing") == []
    assert sorted(op["ref"] for op in b.take()) == ["parent", "trial:1"]


def test_large_buffers_are_split_within_mlflows_limits_and_keep_everything_in_order():
    b = Buffers()
    params = {f"p{i:03}": str(i) for i in range(250)}
    tags = {f"t{i:03}": str(i) for i in range(130)}
    metrics = [("loss", float(i), i, i) for i in range(2500)]
    b.add("trial:1", metrics=metrics, params=params, tags=tags)
    ops = b.take("trial:1")
    assert all(op["ref"] == "trial:1" and _fits(len(op["metrics"]), len(op["params"]), len(op["tags"])) for op in ops)
    assert [len(op["params"]) for op in ops] == [100, 100, 50]
    assert [len(op["tags"]) for op in ops] == [100, 30, 0]
    assert [len(op["params"]) + len(op["tags"]) + len(op["metrics"]) for op in ops] == [1000, 1000, 880]
    assert [m for op in ops for m in op["metrics"]] == metrics
    assert {k: v for op in ops for k, v in op["params"].items()} == params
    assert {k: v for op in ops for k, v in op["tags"].items()} == tags


# -- reconcile after a resume ------------------------------------------------------------------

SPACE = Space(Float("lr", 1e-3, 1e-1, log=True), Choice("optimizer", ["adamw", "sgd"]))
MAX_EPOCHS = 4


def ray_trial(tmp_path, trial_id, status, epochs, error=None, nan_at=None):
    """A trial as Ray restores it: its status, last result and a result.json with one line an epoch
    (``nan_at``: the epoch whose val_acc was NaN)."""
    folder = tmp_path / f"trial_{trial_id}"
    folder.mkdir()
    rows = [{"epoch": e, "val_acc": float("nan") if e == nan_at else e / 10, "train_loss": 1 / e,
             "timestamp": 1_700_000_000 + e, "training_iteration": e} for e in range(1, epochs + 1)]
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    error_file = None
    if error:
        error_file = folder / "error.txt"
        error_file.write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=rows[-1] if rows else {},
                           config={"lr": 0.01, "optimizer": "adamw"}, path=str(folder), local_path=str(folder),
                           error_file=str(error_file) if error_file else None)


def test_reconcile_backfills_what_mlflow_lacks_and_ends_the_runs_ray_ended(mlflow_uri, tmp_path):
    from mlflow.entities import Metric

    from mlflow import MlflowClient

    settings = SweepSettings(metric="val_acc", mode="max", max_epochs=MAX_EPOCHS, name="killed-sweep",
                             tracking_uri=mlflow_uri, experiment="reconcile-units")
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.create_experiment(settings.experiment, artifact_location=(tmp_path / "art").as_uri())
    # What the killed driver left in MLflow: the parent, and trial a's child with epochs 1-2 of 4.
    parent = client.create_run(exp, run_name=settings.name, tags={TAG_SWEEP: settings.name, TAG_ROLE: ROLE_SWEEP})
    parent_id = parent.info.run_id
    a_run = client.create_run(exp, run_name="trial-a", tags={TAG_PARENT: parent_id, TAG_TRIAL: "a"}).info.run_id
    client.log_batch(a_run, metrics=[Metric(k, v, 0, e) for e in (1, 2) for k, v in (("val_acc", e / 10), ("train_loss", 1 / e))])
    # Trial e diverged at epoch 2 and ended there; the live driver logged all of it (no val_acc at 2:
    # MLflow holds no NaN) but died before ending the run.
    e_run = client.create_run(exp, run_name="trial-e", tags={TAG_PARENT: parent_id, TAG_TRIAL: "e"}).info.run_id
    client.log_batch(e_run, metrics=[Metric("val_acc", 0.1, 0, 1), Metric("train_loss", 1.0, 0, 1), Metric("train_loss", 0.5, 0, 2)])
    # Trial f was started after Ray's last snapshot: the resumed experiment does not know it.
    f_run = client.create_run(exp, run_name="trial-f", tags={TAG_PARENT: parent_id, TAG_TRIAL: "f"}).info.run_id

    trials = [
        ray_trial(tmp_path, "a", "TERMINATED", 4),  # ran to the end: completed
        ray_trial(tmp_path, "b", "TERMINATED", 2),  # cut at epoch 2 while the driver was down: stopped, no run yet
        ray_trial(tmp_path, "c", "PENDING", 0),  # never started: no run
        ray_trial(tmp_path, "d", "ERROR", 1, error="ValueError: loss is nan"),
        ray_trial(tmp_path, "e", "TERMINATED", 2, nan_at=2),  # in MLflow already: nothing to add
    ]
    # The real tracker: it finds the parent (so needs no Ray) and its child runs.
    tracker = SweepTracker(settings, SPACE)
    assert tracker.continued and tracker.parent_id == parent_id and tracker.knows("a") and not tracker.knows("b")
    assert reconcile(tracker, trials) == 2 + 2 + 1  # a: epochs 3-4; b: 1-2; d: 1; e: none
    assert tracker.writer.close(30) == []

    children = children_of(client, exp, parent_id)
    assert set(children) == {"trial:a", "trial:b", "trial:d", "trial:e", "trial:f"} and children["trial:a"] == a_run
    f = client.get_run(f_run)  # lost at the kill: ended, not left RUNNING for ever
    assert (f.info.status, f.data.tags[TAG_STATUS]) == ("KILLED", "interrupted")
    e = client.get_run(e_run)
    assert e.info.status == "FINISHED"  # ended, and its curves not written twice
    assert sorted(m.step for m in client.get_metric_history(e_run, "train_loss")) == [1, 2]
    assert sorted(m.step for m in client.get_metric_history(e_run, "val_acc")) == [1]
    expected = {"a": ("FINISHED", "completed", 4), "b": ("FINISHED", "stopped", 2), "d": ("FAILED", "failed", 1)}
    for t, (status, tag, epochs) in expected.items():
        run = client.get_run(children[f"trial:{t}"])
        assert (run.info.status, run.data.tags[TAG_STATUS]) == (status, tag), t
        for key in ("val_acc", "train_loss"):
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert [s for s, _ in history] == list(range(1, epochs + 1)), (t, key)  # one point an epoch
        assert "training_iteration" not in run.data.metrics  # Ray's own keys are not curves
    b = client.get_run(children["trial:b"])
    assert b.data.tags[TAG_STOPPED_AT] == "2" and b.data.tags[TAG_STOPPED_BY] == "asha"
    assert b.data.params == {"lr": "0.01", "optimizer": "adamw"}
    assert [m.timestamp for m in client.get_metric_history(b.info.run_id, "val_acc")] == [1_700_000_001_000, 1_700_000_002_000]
    assert client.get_run(children["trial:d"]).data.tags[TAG_ERROR] == "ValueError: loss is nan"

    # Resumed again: everything is in MLflow already, so nothing is written.
    again = SweepTracker(settings, SPACE)
    sent = []
    submit = again.writer.submit
    again.writer.submit = lambda op: (sent.append(op), submit(op))
    assert reconcile(again, trials) == 0
    assert again.writer.close(30) == [] and sent == []
    assert len(client.search_runs([exp])) == 6  # parent, a, b, d, e, f


def test_groundwork_runs_its_work_once_on_a_thread_from_the_first_result_or_at_the_end():
    from hpsearch.ray.callbacks import Groundwork

    seen = []

    def work():
        seen.append(threading.current_thread().name)
        return {"simulated_epochs": 12.0}

    ended_early = Groundwork(work)  # no trial ever reported: the work is done when asked for
    assert seen == [] and ended_early.result() == {"simulated_epochs": 12.0}
    assert seen == [threading.main_thread().name]

    seen.clear()
    ground = Groundwork(work)
    ground.on_trial_result(0, [], None, {})
    ground.on_trial_result(1, [], None, {})  # later results start nothing more
    assert ground.result() == {"simulated_epochs": 12.0}
    assert seen == ["hpsearch-groundwork"]
    # Pickled into Ray's experiment state it carries nothing, and a restored copy does nothing.
    import pickle

    restored = pickle.loads(pickle.dumps(ground))
    restored.on_trial_result(2, [], None, {})
    assert not restored.live


# -- run names, stopped trials, the parent's live figures ---------------------------------------

def test_child_names_are_readable_short_and_unique_per_trial():
    from hpsearch.space import Fixed, PowerOfTwo
    from hpsearch.tracking.names import run_name, stopped_name

    space = Space(Fixed("model", "mlp"), Choice("lr", [0.05, 1e-5]), PowerOfTwo("width", 16, 32),
                  Float("weight_decay", 1e-6, 1e-2, log=True), Choice("optimizer", ["adamw", "sgd"]),
                  Float("label_smoothing_factor", 0.0, 0.2), Fixed("api_token", "x"))
    config = {"model": "mlp", "lr": 1e-5, "width": 32, "weight_decay": 0.000123, "optimizer": "adamw",
              "label_smoothing_factor": 0.1, "api_token": "x"}
    names = [run_name(config, space, f"ab12c_{i:05d}") for i in (1, 12)]
    assert names == ["lr=1e-5 wd=1.2e-4 opt=adamw w=32 · #1", "lr=1e-5 wd=1.2e-4 opt=adamw w=32 · #12"]
    assert all(len(n.split(" · ")[0]) <= 40 for n in names)  # fixed parameters and secrets stay out
    assert run_name({"lr": 0.05}, Space(Fixed("lr", 0.05)), "7c1e2f3a") == "trial · 2f3a"
    assert stopped_name(names[0], 2) == "[stopped@2] " + names[0]


def _tracker(mlflow_uri, tmp_path, name):
    settings = SweepSettings(metric="val_acc", mode="max", max_epochs=MAX_EPOCHS, name=name, tracking_uri=mlflow_uri,
                             experiment=f"units-{name}", storage=str(tmp_path / "runs"), scheduler="asha")
    return settings, SweepTracker(settings, SPACE)


def test_stopped_trial_is_renamed_with_a_marker_and_carries_the_epoch_it_stopped_at(mlflow_uri, tmp_path):
    from hpsearch.vocab import TrialStatus
    from mlflow import MlflowClient

    settings, first = _tracker(mlflow_uri, tmp_path, "stopped-names")
    client = MlflowClient(tracking_uri=mlflow_uri)
    # A child of an earlier version, named trial-<id>: found by its tag, continued, not duplicated.
    old = client.create_run(first.experiment_id, run_name="trial-old",
                            tags={TAG_PARENT: first.parent_id, TAG_TRIAL: "old"}).info.run_id
    assert first.writer.close(30) == []
    tracker = SweepTracker(settings, SPACE)
    config = {"lr": 0.0031, "optimizer": "sgd"}
    done = SimpleNamespace(trial_id="ab12c_00001", config=config, last_result={"epoch": MAX_EPOCHS})
    cut = SimpleNamespace(trial_id="ab12c_00002", config=config, last_result={"epoch": 1})
    earlier = SimpleNamespace(trial_id="old", config={"lr": 0.05, "optimizer": "adamw"}, last_result={"epoch": 2})
    for trial in (done, cut, earlier):
        tracker.add_result(trial, {"epoch": 1, "val_acc": 0.5})
    tracker.end_trial(done, TrialStatus.COMPLETED)
    tracker.end_trial(cut, TrialStatus.STOPPED)
    tracker.end_trial(earlier, TrialStatus.STOPPED)
    assert tracker.writer.close(30) == []
    runs = {r.data.tags[TAG_TRIAL]: r for r in client.search_runs([tracker.experiment_id],
                                                                    f"tags.`{TAG_PARENT}` = '{tracker.parent_id}'")}
    assert set(runs) == {"ab12c_00001", "ab12c_00002", "old"} and runs["old"].info.run_id == old
    assert runs["ab12c_00001"].info.run_name == "lr=3.1e-3 opt=sgd · #1"
    assert runs["ab12c_00002"].info.run_name == "[stopped@1] lr=3.1e-3 opt=sgd · #2"
    assert runs["old"].info.run_name == "[stopped@2] lr=0.05 opt=adamw · old"
    assert {r.info.status for r in runs.values()} == {"FINISHED"}  # a stop by the scheduler is no crash
    assert "stopped_at_epoch" not in runs["ab12c_00001"].data.metrics
    assert [(m.step, m.value) for m in client.get_metric_history(runs["ab12c_00002"].info.run_id, "stopped_at_epoch")] \
        == [(1, 1.0)]


def test_parent_carries_live_figures_throttled_and_the_final_ones_replace_them(mlflow_uri, tmp_path, monkeypatch):
    from hpsearch.results import SweepResult, TrialRecord
    from hpsearch.tracking import tracker as tracker_module
    from hpsearch.tracking.tracker import live_figures
    from hpsearch.vocab import TrialStatus
    from mlflow import MlflowClient

    _, tracker = _tracker(mlflow_uri, tmp_path, "live-figures")
    sent = []
    submit = tracker.writer.submit
    tracker.writer.submit = lambda op: (sent.append(op), submit(op))
    trials = [SimpleNamespace(status="TERMINATED", last_result={"epoch": 1, "val_acc": 0.3}),
              SimpleNamespace(status="RUNNING", last_result={"epoch": 2, "val_acc": 0.6})]
    assert tracker.live(live_figures(trials, "val_acc", "max", MAX_EPOCHS))
    trials[1].last_result = {"epoch": 3, "val_acc": 0.7}
    assert not tracker.live(live_figures(trials, "val_acc", "max", MAX_EPOCHS))  # within LIVE_SECONDS: held back
    monkeypatch.setattr(tracker_module, "LIVE_SECONDS", 0.0)
    assert tracker.live(live_figures(trials, "val_acc", "max", MAX_EPOCHS))
    assert not tracker.live(live_figures(trials, "val_acc", "max", MAX_EPOCHS))  # nothing changed: nothing sent
    assert len(sent) == 2 and all(op["ref"] == "parent" for op in sent)
    assert tracker.writer.drain(30)
    client = MlflowClient(tracking_uri=tracker.uri)
    live = client.get_run(tracker.parent_id).data.metrics
    assert (live["trials_stopped"], live["trials_running"], live["total_epochs"], live["best_val_acc"]) == (1, 1, 4, 0.7)
    assert "wall_seconds" in live and client.get_run(tracker.parent_id).info.status == "RUNNING"
    assert [m.step for m in client.get_metric_history(tracker.parent_id, "best_val_acc")] == [3, 4]

    # The end: every count replaced (none of the live ones left standing), at a step no lower.
    records = [TrialRecord("a", {}, TrialStatus.STOPPED, 1, 0.3, {"val_acc": 0.3}),
               TrialRecord("b", {}, TrialStatus.COMPLETED, MAX_EPOCHS, 0.8, {"val_acc": 0.8})]
    tracker.finish(SweepResult("live-figures", str(tmp_path), "val_acc", "max", MAX_EPOCHS, records, 12.5, records[1]))
    assert tracker.writer.close(30) == []
    final = client.get_run(tracker.parent_id)
    m = final.data.metrics
    assert final.info.status == "FINISHED"
    assert (m["trials_running"], m["trials_stopped"], m["trials_completed"], m["total_epochs"], m["best_val_acc"],
            m["wall_seconds"]) == (0, 1, 1, 5, 0.8, 12.5)


def test_report_draws_without_pyplot_or_a_backend_and_writes_interactive_pages(tmp_path):
    # In a fresh interpreter with a backend chosen, as a notebook has: the report must leave it as
    # it was and leave no figure in pyplot's state (where a notebook would show or keep it). Optuna's
    # visualization package imports pyplot itself; importing it changes neither.
    import subprocess
    import sys

    code = f"""
import json, sys, matplotlib
from pathlib import Path
from hpsearch.space import Choice, Float, Space
from hpsearch.tracking.analysis import SweepData, TrialRow, write_report
space = Space(Float("lr", 1e-3, 1e-1, log=True), Choice("optimizer", ["adamw", "sgd"]))
rows = [TrialRow(f"run{{i}}", f"t{{i}}", s, e, {{"lr": str(lr), "optimizer": o}}, c[-1][1], c)
        for i, (s, e, lr, o, c) in enumerate([
            ("completed", 3, 0.01, "adamw", [(1, 0.5), (2, 0.6), (3, 0.7)]),
            ("stopped", 1, 0.002, "sgd", [(1, 0.2)]),
            ("completed", 3, 0.05, "sgd", [(1, 0.4), (2, 0.5), (3, 0.65)]),
            ("failed", 1, 0.09, "adamw", [(1, float("nan"))])])]
data = SweepData("units", "parent", "val_acc", "max", 3, space, rows)
paths = write_report(data, Path({str(tmp_path)!r}))
figures = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else []
print(json.dumps([matplotlib.get_backend(), figures, [p.name for p in paths]]))
"""
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    backend, figures, names = json.loads(out.stdout.strip().splitlines()[-1])
    assert backend == "svg" and figures == []
    for png in ("parallel_coordinates", "metric_vs_params", "learning_curves", "param_importance"):
        assert (tmp_path / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    pages = {"optimization_history", "parallel_coordinate", "param_importances", "intermediate_values"}
    assert {f"{p}.html" for p in pages} <= set(names)
    for page in pages:
        assert "Plotly.newPlot" in (tmp_path / f"{page}.html").read_text()
    # The trials' values are in the pages: the best completed trial's value, and a stopped trial's curve.
    assert "0.7" in (tmp_path / "optimization_history.html").read_text()
    assert "0.2" in (tmp_path / "intermediate_values.html").read_text()


def test_opening_a_server_store_leaves_the_process_environment_alone(mlflow_server):
    # MLflow's retry and printing settings are the process's: a notebook's own MLflow calls keep
    # them. hpsearch bounds its own client (compat.bound_http) instead.
    from hpsearch.tracking.store import open_client

    before = dict(os.environ)
    client = open_client(mlflow_server["uri"])
    assert dict(os.environ) == before
    assert type(client._tracking_client).__name__.startswith("Bounded")


def test_live_figures_read_a_finished_trial_once_and_a_running_one_each_time():
    from hpsearch.tracking.tracker import live_figures

    class Trial:  # counts how often the figures read its last result (Ray's is a property that builds a set)
        def __init__(self, trial_id, status, last):
            self.trial_id, self.status, self.reads, self._last = trial_id, status, 0, last

        @property
        def last_result(self):
            self.reads += 1
            return self._last

    done, running = Trial("a", "TERMINATED", {"epoch": 1, "val_acc": 0.3}), Trial("b", "RUNNING", {"epoch": 2, "val_acc": 0.6})
    ended: dict = {}
    first = live_figures([done, running], "val_acc", "max", MAX_EPOCHS, ended)
    reads = (done.reads, running.reads)
    running._last = {"epoch": 3, "val_acc": 0.7}
    second = live_figures([done, running], "val_acc", "max", MAX_EPOCHS, ended)
    assert done.reads == reads[0] and running.reads > reads[1]  # the finished trial's part came from ``ended``
    assert (first["total_epochs"], first["best_val_acc"]) == (3, 0.6)
    assert (second["total_epochs"], second["best_val_acc"], second["trials_stopped"]) == (4, 0.7, 1)
    assert second == live_figures([done, running], "val_acc", "max", MAX_EPOCHS)  # as without the cache
