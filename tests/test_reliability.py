"""Faults injected for real: tracking outages, failing trials, concurrent sweeps."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

import hpsearch
from hpsearch.engine import default_experiment
from tests.conftest import free_port, run_here, start_mlflow_server, stop_process_group

pytestmark = pytest.mark.slow

TRIALS, EPOCHS = 6, 10


def _slow_train():
    # Built in a function so Ray ships it by value (workers cannot import this test module by name).
    def slow_train(config):
        state = hpsearch.load_checkpoint() or {"epoch": 0}
        for epoch in range(state["epoch"] + 1, EPOCHS + 1):
            time.sleep(0.3)
            hpsearch.report(epoch=epoch, score=config["x"] * epoch, checkpoint={"epoch": epoch})

    return slow_train


SPACE = hpsearch.Space(hpsearch.Int("x", 1, TRIALS))


def _sweep_in_thread(uri, storage, name):
    box = {}

    def run():
        try:
            box["result"] = hpsearch.sweep(SPACE, train=_slow_train(), metric="score", mode="max", strategy="grid",
                                           scheduler="fifo", max_epochs=EPOCHS, storage=storage, name=name,
                                           tracking_uri=uri, experiment="outage", progress=False)
        except BaseException as exc:  # reported by the test
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _wait_for_first_metrics(uri, timeout=60):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    deadline = time.time() + timeout
    while time.time() < deadline:
        exp = client.get_experiment_by_name("outage")
        if exp and any(r.data.metrics for r in client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'")):
            return
        time.sleep(0.5)
    raise AssertionError("no metric reached MLflow")


def _check_everything_is_in_mlflow(uri, result):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([result.tracking["experiment_id"]], f"tags.`hpsearch.sweep` = '{result.name}'")
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == TRIALS and all(c.info.status == "FINISHED" for c in children)
    total = 0
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "score")]
        assert steps == list(range(1, EPOCHS + 1)), (child.data.tags["hpsearch.trial_id"], steps)
        total += len(steps)
    assert total == TRIALS * EPOCHS
    assert parents[0].data.metrics["best_score"] == TRIALS * EPOCHS
    return total


def _points_reported_between(uri, result, start, end):
    """How many of the trials' ``score`` points in MLflow carry a report time in [start, end] (seconds)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return sum(start <= m.timestamp / 1000 <= end for run_id in result.tracking["children"].values()
               for m in client.get_metric_history(run_id, "score"))


# Longer than one write's own HTTP retries (hpsearch.tracking.store.HTTP_RETRIES with MLflow's
# backoff: about 5 s against a closed port), so writes fail outright and the writer's queue and
# backoff must carry them; the restart adds seconds more.
OUTAGE_S = 10


def test_tracking_outage_longer_than_a_writes_retries_loses_nothing(ray_session, tmp_path):
    store, port = tmp_path / "store", free_port()
    store.mkdir()
    server, uri = start_mlflow_server(store, port)
    try:
        thread, box = _sweep_in_thread(uri, str(tmp_path / "runs"), "outage")
        _wait_for_first_metrics(uri)
        stop_process_group(server)
        down = time.time()
        time.sleep(OUTAGE_S)
        assert thread.is_alive() or "result" in box, box.get("error")  # the sweep was not stopped
        up = time.time()  # the server is down until at least here
        server, _ = start_mlflow_server(store, port)
        thread.join(timeout=300)
        assert "error" not in box, box.get("error")
        result = box["result"]
        assert [t.status for t in result.trials] == ["completed"] * TRIALS
        assert result.tracking["pending"] is None
        assert _check_everything_is_in_mlflow(uri, result) == 60
        # The outage hit the sweep's writes: epochs reported while the server was down are in MLflow.
        # (Ray stamps a report with its whole second, so a stamp in [down, up - 1] was in the outage.)
        assert _points_reported_between(uri, result, down, up - 1) > 0
    finally:
        stop_process_group(server)


def test_server_that_never_comes_back_keeps_writes_on_disk_for_sync(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPSEARCH_MLFLOW_DRAIN_S", "5")
    store, port = tmp_path / "store", free_port()
    store.mkdir()
    server, uri = start_mlflow_server(store, port)
    thread, box = _sweep_in_thread(uri, str(tmp_path / "runs"), "outage-forever")
    _wait_for_first_metrics(uri)
    stop_process_group(server)
    thread.join(timeout=300)
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert [t.status for t in result.trials] == ["completed"] * TRIALS  # the sweep itself finished
    pending = result.tracking["pending"]
    assert pending is not None and pending["writes"] > 0 and os.path.exists(pending["path"])

    server, _ = start_mlflow_server(store, port)  # later, the server is back
    try:
        # The sync command in-process (a separate process adds nothing: it reads the writes from disk).
        code, out, err = run_here(capsys, "sync", result.name, "--storage", str(tmp_path / "runs"))
        assert code == 0, err[-2000:]
        assert f"Sent {pending['writes']} writes" in out
        assert not os.path.exists(pending["path"])
        assert _check_everything_is_in_mlflow(uri, result) == 60
    finally:
        stop_process_group(server)


def test_failing_trials_are_recorded_and_the_sweep_goes_on(ray_session, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    def train(config):
        hpsearch.report(epoch=1, score=1.0)
        if config["kind"] == "exception":
            raise KeyError("feature_42")
        if config["kind"] == "oom":  # what a trial sees when the GPU runs out of memory
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        hpsearch.report(epoch=2, score=2.0)

    space = hpsearch.Space(hpsearch.Choice("kind", ["ok", "exception", "oom"]))
    result = hpsearch.sweep(space, train=train, metric="score", mode="max", strategy="grid", scheduler="fifo",
                            max_epochs=2, storage=str(tmp_path), experiment="failures", progress=False)
    by_kind = {t.config["kind"]: t for t in result.trials}
    assert by_kind["ok"].status == "completed"
    assert by_kind["exception"].status == "failed" and "KeyError: 'feature_42'" in by_kind["exception"].error
    assert by_kind["oom"].status == "failed" and "CUDA out of memory" in by_kind["oom"].error
    client = MlflowClient(tracking_uri=mlflow_uri)
    for kind, needle in (("exception", "feature_42"), ("oom", "OutOfMemoryError")):
        run = client.get_run(result.tracking["children"][by_kind[kind].trial_id])
        assert run.info.status == "FAILED" and needle in run.data.tags["hpsearch.error"] + \
            open(client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))).read()


def test_two_sweeps_at_once_into_one_embedded_store(ray_session, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    # Two drivers in two processes: twin-b its own process (and Ray), twin-a this one, on the
    # session's Ray. Every trial waits at a gate until both sweeps have a trial running, so the two
    # write to the store at the same moments, whichever process started first.
    gate = tmp_path / "gate"
    gate.mkdir()
    module = tmp_path / "twin.py"
    module.write_text(
        "import pathlib, time, hpsearch\n"
        "from ray import tune\n"
        "from hpsearch.space import Int, Space\n"
        "SPACE = Space(Int('x', 1, 4))\nMETRIC = 'score'\nMODE = 'max'\nMAX_EPOCHS = 5\n"
        f"GATE = pathlib.Path({str(gate)!r})\n"
        "def TRAIN(config):\n"
        "    (GATE / tune.get_context().get_experiment_name()).touch()\n"
        "    deadline = time.time() + 300\n"
        "    while not all((GATE / name).exists() for name in ('twin-a', 'twin-b')):\n"
        "        if time.time() > deadline:\n"
        "            raise TimeoutError('the other sweep never ran a trial')\n"
        "        time.sleep(0.05)\n"
        "    for epoch in range(1, 6):\n"
        "        time.sleep(0.1)\n"
        "        hpsearch.report(epoch=epoch, score=config['x'] * epoch)\n")
    uri = "sqlite:///" + str(tmp_path / "shared" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    common = ["run", str(module), "--strategy", "grid", "--scheduler", "fifo", "--storage", str(tmp_path / "runs"),
              "--no-progress", "--cpus-per-trial", "0.5"]
    with open(tmp_path / "twin-b.out", "w+") as other_out, open(tmp_path / "twin-b.err", "w+") as other_err:
        # Its output to files: a pipe nobody reads while twin-a runs here could fill and stall it.
        other = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", *common, "--name", "twin-b"],
                                 stdout=other_out, stderr=other_err, text=True, env=dict(os.environ))
        try:
            code, out, err = run_here(capsys, *common, "--name", "twin-a")
            other.wait(timeout=400)
        finally:
            if other.poll() is None:
                other.kill()
                other.wait()
    other_out, other_err = (tmp_path / "twin-b.out").read_text(), (tmp_path / "twin-b.err").read_text()
    assert code == 0, err[-3000:]
    assert other.returncode == 0, other_err[-3000:]
    assert "database is locked" not in out + err + other_out + other_err
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(default_experiment(module))
    for name in ("twin-a", "twin-b"):
        runs = client.search_runs([exp.experiment_id], f"tags.`hpsearch.sweep` = '{name}'")
        parents = [r for r in runs if r.data.tags["hpsearch.role"] == "sweep"]
        children = [r for r in runs if r.data.tags["hpsearch.role"] == "trial"]
        assert len(parents) == 1 and len(children) == 4
        assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
        assert all(len(client.get_metric_history(c.info.run_id, "score")) == 5 for c in children)
    assert len(client.search_runs([exp.experiment_id])) == 2 * (1 + 4)


def test_lost_worker_node_trials_resume_from_their_checkpoints(tmp_path):
    # ray.cluster_utils.Cluster needs its own Ray; a fresh interpreter keeps the session's intact.
    # A checkpoint is kept at least every second (epochs take 0.25 s): the guarantee is in seconds.
    script = f"""
import csv, json, threading, time
import ray
from ray.cluster_utils import Cluster
import hpsearch

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 0}})
survivor, doomed = cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()

def train(config):
    state = hpsearch.load_checkpoint() or {{"epoch": 0}}
    for epoch in range(state["epoch"] + 1, 21):
        time.sleep(0.25)
        hpsearch.report(epoch=epoch, score=config["x"] * epoch, checkpoint={{"epoch": epoch}})

def remove_node_while_trials_run():
    import glob
    deadline = time.time() + 120
    while time.time() < deadline:  # once a trial on the doomed node is a few epochs in
        for path in glob.glob({str(tmp_path)!r} + "/*/*/result.json"):
            rows = [json.loads(line) for line in open(path) if line.strip()]
            kept = [r["epoch"] for r in rows if r.get("checkpoint_dir_name")]
            if rows and rows[-1]["node_id"] == doomed.node_id and kept and rows[-1]["epoch"] >= 12:
                cluster.remove_node(doomed, allow_graceful=False)
                return
        time.sleep(0.2)

threading.Thread(target=remove_node_while_trials_run, daemon=True).start()
result = hpsearch.sweep(hpsearch.Space(hpsearch.Int("x", 1, 4)), train=train, metric="score", mode="max",
                        strategy="grid", scheduler="fifo", max_epochs=20, max_failures=3, checkpoint_every_s=1,
                        address=cluster.address, storage={str(tmp_path)!r}, tracking_uri=False, progress=False)
trials = {{}}
for t in result.trials:
    with open(t.path + "/result.json") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    trials[t.trial_id] = {{"status": t.status, "epochs": [r["epoch"] for r in rows], "nodes": [r["node_id"] for r in rows],
                          "seconds": [r["time_this_iter_s"] for r in rows]}}
print(json.dumps({{"doomed": doomed.node_id, "survivor": survivor.node_id, "trials": trials}}))
ray.shutdown()
cluster.shutdown()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))  # Ray may log after it
    trials = out["trials"]
    assert [t["status"] for t in trials.values()] == ["completed"] * 4
    moved = [t for t in trials.values() if out["doomed"] in t["nodes"] and out["survivor"] in t["nodes"]]
    assert moved, "no trial was running on the removed node"
    for t in moved:
        # It continued from its checkpoint on the surviving node: epoch 1 ran once, all 20 reached.
        assert t["epochs"].count(1) == 1 and sorted(set(t["epochs"])) == list(range(1, 21))
        first_on_survivor = t["nodes"].index(out["survivor"])
        assert t["epochs"][first_on_survivor] > 1
        # The work lost with the node and done again: the epochs after the checkpoint it resumed
        # from. Bounded by the policy (one kept at least every second), plus the report in flight
        # when the node died (the driver may not have registered the newest checkpoint yet).
        repeated = [s for e, s in zip(t["epochs"][:first_on_survivor], t["seconds"])
                    if e >= t["epochs"][first_on_survivor]]
        assert sum(repeated) <= 2 * 1 + 2 * max(t["seconds"]), (t["epochs"], repeated)


def test_a_sweep_starts_its_own_ray_beside_another_running_here(tmp_path):
    # Left to itself, ray.init() joins the latest cluster started on the machine (`ray start`, or
    # as here ray.cluster_utils, both note it in /tmp/ray/ray_current_cluster) and then refuses
    # num_cpus; a sweep with no address starts its own, as documented.
    other = subprocess.Popen([sys.executable, "-c", "import sys; from ray.cluster_utils import Cluster; "
                              "c = Cluster(initialize_head=True, head_node_args={'num_cpus': 1}); "
                              "print('up', flush=True); sys.stdin.read(); c.shutdown()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert other.stdout.readline().strip() == "up"
        code = (
            "import hpsearch\n"
            "def train(config):\n"
            "    hpsearch.report(epoch=1, score=float(config['x']))\n"
            "r = hpsearch.sweep(hpsearch.Space(hpsearch.Int('x', 1, 2)), train=train, metric='score', mode='max',\n"
            f"                  strategy='grid', scheduler='fifo', max_epochs=1, tracking_uri=False, progress=False,\n"
            f"                  storage={str(tmp_path)!r})\n"
            "print('best', r.best_metric)\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().splitlines()[-1] == "best 2.0"
        assert other.poll() is None  # the other driver's Ray was left alone
    finally:
        other.stdin.close()  # the other cluster shuts down, and forgets its address
        try:
            other.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(other.pid, 9)
            other.wait()
            from ray._common.utils import reset_ray_address

            reset_ray_address()  # a stale address would misdirect every later plain ray.init()
