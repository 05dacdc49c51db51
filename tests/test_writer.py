"""The MLflow writer: merging queued batches, delivering in order, and keeping writes on disk."""

import json
import uuid

import pytest

from hpsearch.tracking.writer import Writer, _fits, children_of, merge_head, spill, sync
from hpsearch.vocab import TAG_PARENT, TAG_TRIAL
from tests.conftest import free_port


def batch(ref, metrics=0, params=(), tags=(), start=0):
    return {"op": "log_batch", "ref": ref, "metrics": [["m", float(i), 0, i] for i in range(start, start + metrics)],
            "params": {k: "v" for k in params}, "tags": {k: "v" for k in tags}}


# -- merge_head ---------------------------------------------------------------------------------

def test_merge_head_sends_a_non_batch_head_alone():
    q = [{"op": "create_run", "ref": "a", "name": "a", "tags": {}}, batch("a", 1), batch("a", 1)]
    assert merge_head(q) == (q[0], [0])


def test_merge_head_takes_later_batches_of_its_run_until_another_op_of_that_run():
    q = [batch("a", 2, params=["p1"]), batch("b", 5), {"op": "set_status", "ref": "b", "status": "FINISHED"},
         batch("a", 3, params=["p2"], tags=["t"], start=2), {"op": "set_status", "ref": "a", "status": "FINISHED"},
         batch("a", 1, start=5)]
    op, taken = merge_head(q)
    assert taken == [0, 3]  # b's operations are passed over; a's set_status ends the merge
    assert [m[3] for m in op["metrics"]] == [0, 1, 2, 3, 4]
    assert op["params"] == {"p1": "v", "p2": "v"} and op["tags"] == {"t": "v"}
    assert len(q[0]["metrics"]) == 2 and q[0]["params"] == {"p1": "v"}  # the queued operation is untouched


def test_merge_head_keeps_the_later_value_of_a_tag_set_twice():
    q = [{"op": "log_batch", "ref": "a", "tags": {"s": "running"}}, {"op": "log_batch", "ref": "a", "tags": {"s": "done"}}]
    op, taken = merge_head(q)
    assert taken == [0, 1] and op["tags"] == {"s": "done"}


@pytest.mark.parametrize("first, second", [
    (batch("a", 600), batch("a", 401)),  # 1001 metrics
    (batch("a", params=[f"p{i}" for i in range(60)]), batch("a", params=[f"q{i}" for i in range(41)])),  # 101 params
    (batch("a", tags=[f"t{i}" for i in range(60)]), batch("a", tags=[f"u{i}" for i in range(41)])),  # 101 tags
    (batch("a", 950, tags=[f"t{i}" for i in range(40)]), batch("a", params=[f"p{i}" for i in range(11)])),  # 1001 items
    (batch("a", 1, params=["lr"]), batch("a", 1, params=["lr"])),  # the same param twice, even with one value
])
def test_merge_head_never_exceeds_mlflows_limits_nor_sets_a_param_twice(first, second):
    op, taken = merge_head([first, second, batch("a", 1)])
    assert taken == [0] and op is first


def test_merge_head_merges_right_up_to_the_limits():
    q = [batch("a", 600, tags=[f"t{i}" for i in range(100)]), batch("a", 300, tags=[f"t{i}" for i in range(100)]),
         batch("a", 1, start=900)]
    op, taken = merge_head(q)
    assert taken == [0, 1]  # 900 metrics + 100 tags (the same 100 keys twice) fill the call exactly
    assert _fits(len(op["metrics"]), len(op["params"]), len(op["tags"]))
    assert not _fits(len(op["metrics"]) + 1, len(op["params"]), len(op["tags"]))


# -- Writer against a real SQLite store ---------------------------------------------------------

class Recording:
    """A real MlflowClient whose calls are noted, in order."""

    def __init__(self, client):
        self.client, self.calls = client, []

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)
        return call


def new_experiment(client, tmp_path):
    return client.create_experiment(f"writer-{uuid.uuid4().hex[:8]}", artifact_location=(tmp_path / "art").as_uri())


def test_writer_delivers_in_order_and_merges_what_queued_up(mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = new_experiment(client, tmp_path)
    rec = Recording(client)
    writer = Writer(rec, exp, {})
    ops = [{"op": "create_run", "ref": "trial:1", "name": "trial-1", "tags": {TAG_TRIAL: "1"}}]
    ops += [{"op": "log_batch", "ref": "trial:1", "metrics": [["acc", e / 10, 1000 + e, e]],
             "params": {"lr": "0.1"} if e == 1 else {}, "tags": {"stage": str(e)}} for e in range(1, 6)]
    ops += [{"op": "log_text", "ref": "trial:1", "text": "boom", "file": "traceback.txt"},
            {"op": "set_status", "ref": "trial:1", "status": "FAILED"}]
    with writer.cond:  # queued before the thread takes any: it is "behind" and merges the five batches
        for op in ops:
            writer.submit(op)
    assert writer.drain(30)
    assert writer.close(5) == []
    assert rec.calls == ["create_run", "log_batch", "log_text", "set_terminated"]

    run = client.get_run(writer.runs["trial:1"])
    assert run.info.run_name == "trial-1" and run.info.status == "FAILED"
    assert run.data.params == {"lr": "0.1"} and run.data.tags["stage"] == "5" and run.data.tags[TAG_TRIAL] == "1"
    history = client.get_metric_history(run.info.run_id, "acc")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [(e, e / 10, 1000 + e) for e in range(1, 6)]
    assert (tmp_path / "art" / run.info.run_id / "artifacts" / "traceback.txt").read_text() == "boom"


def test_writer_creates_a_run_once_for_a_known_reference(mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = new_experiment(client, tmp_path)
    existing = client.create_run(exp, run_name="already-there").info.run_id
    writer = Writer(client, exp, {"trial:7": existing})
    writer.submit({"op": "create_run", "ref": "trial:7", "name": "again", "tags": {}})
    writer.submit({"op": "log_batch", "ref": "trial:7", "metrics": [["acc", 1.0, 0, 1]]})
    assert writer.drain(30) and writer.close(5) == []
    assert [r.info.run_id for r in client.search_runs([exp])] == [existing]
    assert client.get_run(existing).data.metrics == {"acc": 1.0}


def test_a_write_mlflow_refuses_is_dropped_and_said_and_the_rest_delivered(mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = new_experiment(client, tmp_path)
    writer = Writer(client, exp, {})
    ops = [{"op": "create_run", "ref": "trial:1", "name": "trial-1", "tags": {}},
           {"op": "log_batch", "ref": "trial:1", "metrics": [["acc", 0.1, 0, 1]], "params": {"lr": "0.1"}},
           # MLflow refuses to change a logged parameter (INVALID_PARAMETER_VALUE): retrying cannot help.
           {"op": "log_batch", "ref": "trial:1", "metrics": [["acc", 0.2, 0, 2]], "params": {"lr": "0.2"}},
           {"op": "log_batch", "ref": "trial:1", "metrics": [["acc", 0.3, 0, 3]]},
           {"op": "set_status", "ref": "trial:1", "status": "FINISHED"},
           {"op": "log_batch", "ref": "trial:9", "metrics": [["acc", 1.0, 0, 1]]}]  # a run never created
    with writer.cond:  # all queued before the thread starts: the three batches are merged, refused, sent apart
        for op in ops:
            writer.submit(op)
    assert writer.drain(30) and writer.close(5) == []
    run = client.get_run(writer.runs["trial:1"])
    assert run.data.params == {"lr": "0.1"} and run.info.status == "FINISHED"
    # Only the refused part is lost: its parameter and the metric that came with it.
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "acc")) == [1, 3]
    assert len(writer.refused) == 2 and writer.refused[0].startswith("log_batch for trial:1")
    assert "trial:9" in writer.refused[1] and writer.outages == 0


# -- the writer's own process ------------------------------------------------------------------

@pytest.mark.slow  # two processes that import MLflow: seconds of CPU each
def test_busy_writes_move_to_a_process_that_ignores_ctrl_c_and_is_started_again_if_killed(mlflow_uri, tmp_path):
    import os
    import signal

    from hpsearch.tracking.process import StoreProcess
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = new_experiment(client, tmp_path)
    writer = Writer(client, exp, {"trial:gone": uuid.uuid4().hex}, apart=lambda: StoreProcess(mlflow_uri))
    writer.move_share = writer.move_window = 0.0  # any share of a core, measured over any time: moves at once

    def epoch(e):
        return {"op": "log_batch", "ref": "trial:1", "metrics": [["acc", e / 10, 1000 + e, e]]}

    writer.submit({"op": "create_run", "ref": "trial:1", "name": "trial-1", "tags": {TAG_TRIAL: "1"}})
    writer.submit(epoch(1))
    assert writer.drain(120)
    store = writer.moved  # moved after the first write (create_run, from this process)
    first = store._proc
    assert writer.client is store and first.pid != os.getpid() and first.poll() is None

    os.kill(first.pid, signal.SIGINT)  # Ctrl-C reaches the whole terminal group: the driver decides the end
    writer.submit(epoch(2))
    assert writer.drain(120) and store._proc is first and first.poll() is None

    first.kill()
    first.wait()
    writer.submit(epoch(3))
    writer.submit({"op": "log_text", "ref": "trial:1", "text": "done", "file": "note.txt"})
    writer.submit({"op": "set_status", "ref": "trial:1", "status": "FINISHED"})
    writer.submit({"op": "log_batch", "ref": "trial:gone", "metrics": [["acc", 1.0, 0, 1]]})  # refused: no such run
    assert writer.drain(120)
    second = store._proc
    assert writer.close(5) == [] and store._proc is None

    assert second is not first and second.poll() is not None  # started again, then ended by the writer's close
    assert writer.outages == 0  # found ended before the next call: started again, no write failed
    assert len(writer.refused) == 1 and "trial:gone" in writer.refused[0]
    run = client.get_run(writer.runs["trial:1"])
    assert run.info.status == "FINISHED" and run.data.tags[TAG_TRIAL] == "1"
    history = client.get_metric_history(run.info.run_id, "acc")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3)]  # nothing lost
    assert (tmp_path / "art" / run.info.run_id / "artifacts" / "note.txt").read_text() == "done"


def test_writes_stay_in_the_driver_when_their_process_cannot_start(mlflow_uri, tmp_path, caplog):
    import sys

    from hpsearch.tracking.process import StoreProcess
    from mlflow import MlflowClient

    class Broken(StoreProcess):  # a child that exits before answering, as one that cannot import would
        def _start(self):
            import subprocess

            self._proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = new_experiment(client, tmp_path)
    made = []
    writer = Writer(client, exp, {}, apart=lambda: made.append(Broken(mlflow_uri)) or made[-1])
    writer.move_share = writer.move_window = 0.0
    writer.submit({"op": "create_run", "ref": "trial:1", "name": "trial-1", "tags": {}})
    for e in (1, 2, 3):
        writer.submit({"op": "log_batch", "ref": "trial:1", "metrics": [["acc", e / 10, 0, e]]})
    assert writer.drain(60) and writer.close(5) == []
    assert len(made) == 1 and writer.client is client and writer.apart is None  # tried once, then stayed
    assert writer.outages == 0 and "did not start" in caplog.text
    assert sorted(m.step for m in client.get_metric_history(writer.runs["trial:1"], "acc")) == [1, 2, 3]


# -- unreachable server: kept, spilled, synced ---------------------------------------------------

def test_unreachable_server_keeps_every_op_and_sync_delivers_them_later(mlflow_uri, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    store = MlflowClient(tracking_uri=mlflow_uri)
    exp = new_experiment(store, tmp_path)
    parent = store.create_run(exp, run_name="sweep").info.run_id
    # A resume created trial b's child run while the journal waited: sync must continue it, not add one.
    b_run = store.create_run(exp, run_name="trial-b", tags={TAG_PARENT: parent, TAG_TRIAL: "b"}).info.run_id
    assert children_of(store, exp, parent) == {"trial:b": b_run}

    def child_ops(t, acc):
        ref = f"trial:{t}"
        return [{"op": "create_run", "ref": ref, "name": f"trial-{t}", "tags": {TAG_PARENT: parent, TAG_TRIAL: t}},
                {"op": "log_batch", "ref": ref, "metrics": [["acc", acc, 5000, 1]], "params": {"lr": "0.1"}, "tags": {}},
                {"op": "set_status", "ref": ref, "status": "FINISHED"}]

    ops = child_ops("a", 0.5) + child_ops("b", 0.7) + [
        {"op": "log_batch", "ref": "parent", "metrics": [["best_acc", 0.7, 6000, 0]], "tags": {"best": "b"}},
        {"op": "set_status", "ref": "parent", "status": "FINISHED"}]
    away = f"http://127.0.0.1:{free_port()}"
    writer = Writer(MlflowClient(tracking_uri=away), exp, {"parent": parent})
    for op in ops:
        writer.submit(op)
    left = writer.close(timeout=1)
    assert left == ops  # every op, in order, none half-sent
    assert writer.outages == 1 and writer.last_error and "trial:a" not in writer.runs

    journal = tmp_path / "mlflow-pending.jsonl"
    header = {"tracking_uri": away, "experiment_id": exp, "parent_run_id": parent, "runs": {"parent": parent}}
    spill(journal, header, left)
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert lines == [{"header": header}] + ops

    assert sync(journal, tracking_uri=mlflow_uri, timeout=60) == len(ops)
    assert not journal.exists() and journal.with_suffix(".synced").exists()
    children = children_of(store, exp, parent)
    assert set(children) == {"trial:a", "trial:b"} and children["trial:b"] == b_run
    assert len(store.search_runs([exp])) == 3  # parent, a, b: nothing duplicated
    for ref, acc in (("trial:a", 0.5), ("trial:b", 0.7)):
        run = store.get_run(children[ref])
        assert run.info.status == "FINISHED" and run.data.metrics == {"acc": acc} and run.data.params == {"lr": "0.1"}
    run = store.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["best_acc"] == 0.7 and run.data.tags["best"] == "b"


def test_sync_of_an_unreachable_store_fails_and_keeps_the_journal(tmp_path):
    journal = tmp_path / "mlflow-pending.jsonl"
    spill(journal, {"tracking_uri": f"http://127.0.0.1:{free_port()}", "experiment_id": "1", "parent_run_id": "x",
                    "runs": {"parent": "x"}}, [{"op": "set_status", "ref": "parent", "status": "FINISHED"}])
    with pytest.raises(ValueError, match="cannot reach the MLflow server"):
        sync(journal)
    assert journal.exists() and not journal.with_suffix(".synced").exists()
