"""The tracker's pieces without Ray: Buffers, and reconcile after a resume against a real store."""

import json
import threading
from types import SimpleNamespace

from hpsearch.settings import SweepSettings
from hpsearch.space import Choice, Float, Space
from hpsearch.tracking.reconcile import reconcile
from hpsearch.tracking.tracker import Buffers, SweepTracker
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


def test_reconcile_backfills_what_mlflow_lacks_and_ends_the_runs_ray_ended(mlflow_uri, tmp_path, monkeypatch):
    from mlflow.entities import Metric

    from mlflow import MlflowClient

    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "15"),
                        ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
        monkeypatch.setenv(name, value)  # open_client sets these for good; undone after this test

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
