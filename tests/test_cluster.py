"""A sweep on a real multi-node Ray cluster with no shared disk: nodes started with ``ray start``,
each with its own temporary folder (no two share a file), results and checkpoints in a bucket of
a real S3-compatible server (moto in server mode), token authentication on as Ray 2.60 sets it,
and the sweep's driver run as the ``hpsearch`` command, killed, and resumed by another process
in another folder with no copy of anything.

Everything here is a real process the test starts and stops: the S3 server, each Ray node, each
driver. The nodes run on this machine (there is one), but nothing they need is on a path they
share: the space module reaches the workers as the job's working_dir, its sibling module only
through it, and every checkpoint goes to the bucket.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpsearch.engine import default_experiment
from hpsearch.vocab import TAG_BEST_MODEL
from tests.conftest import free_port, start_mlflow_server, stop_process_group

RAY = str(Path(sys.executable).with_name("ray"))

# A space module whose TRAIN imports a module beside it (shipped with it, nowhere else on a
# worker's path), trains a tiny network, checkpoints it every epoch, and holds each trial after
# epoch 3 until a file "release" exists beside the module.
HELD_SPACE = '''
import time
from pathlib import Path

from hpsearch.space import Fixed, Float, Space

SPACE = Space(Float("lr", 1e-3, 1e-1, log=True), Fixed("width", 4))
METRIC, MODE, MAX_EPOCHS = "val_acc", "max", 6
RELEASE = Path(__file__).with_name("release")


def MODEL(config):
    import torch

    return torch.nn.Linear(2, config["width"])


def TRAIN(config):
    import torch

    import hpsearch
    from scoring import score  # the module beside this one: on a worker only through the shipped folder

    model = MODEL(config)
    state = hpsearch.load_checkpoint() or {"epoch": 0}
    if "model" in state:
        model.load_state_dict(state["model"].state_dict())
    for epoch in range(state["epoch"] + 1, MAX_EPOCHS + 1):
        while epoch > 3 and not RELEASE.exists():
            time.sleep(0.05)
        with torch.no_grad():
            model.weight.add_(config["lr"])
        print(f"trial lr={config['lr']:.5f} epoch {epoch}")
        hpsearch.report(epoch=epoch, val_acc=score(config, epoch), checkpoint={"epoch": epoch, "model": model})
'''

SCORING = '''
def score(config, epoch):
    return config["lr"] * epoch
'''


class RayNodes:
    """Ray nodes started with ``ray start --block`` (each its own process group and temporary
    folder), on free ports of this machine, with token authentication on. Stopped by killing
    each group: never ``ray stop``, which would stop every Ray of this user."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.procs = root, env, {}
        self.token = secrets.token_hex(32)
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.gcs = self.client = None

    def _start(self, name: str, args: list[str]) -> Path:
        folder = Path(f"/tmp/hps-{secrets.token_hex(3)}")  # short: Ray's socket paths have a length limit
        folder.mkdir()
        log = open(self.root / f"{name}.log", "w")
        env = {**self.env, "TMPDIR": str(folder)}  # what the node's processes write goes to its own folder
        self.procs[name] = (subprocess.Popen([RAY, "start", "--block", f"--temp-dir={folder}", *args], cwd=folder,
                                             env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True),
                            folder)
        return folder

    def head(self, client_server: bool = False) -> str:
        port = free_port()
        args = ["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                "--node-ip-address=127.0.0.1"]
        if client_server:
            self.client = f"ray://127.0.0.1:{free_port()}"
            args.append(f"--ray-client-server-port={self.client.rsplit(':', 1)[1]}")
        self._start("head", args)
        self.gcs = f"127.0.0.1:{port}"
        from hpsearch.ray import compat

        self._until(lambda: compat.cluster_auth(self.gcs, self.token) == "ok", "the head's GCS")
        if self.client:
            self._until(lambda: compat.cluster_auth(self.client, self.token) == "ok", "the head's client server")
        return self.gcs

    def worker(self, name: str, cpus: int) -> None:
        self._start(name, [f"--address={self.gcs}", f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1"])
        self._until(lambda: "Ray runtime started" in (self.root / f"{name}.log").read_text(), f"node {name}")

    def _until(self, ready, what: str, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while not ready():
            for name, (proc, _) in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"ray node {name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError(f"{what} did not come up in {timeout:g} s")
            time.sleep(0.3)

    def kill(self, name: str, remove_folder: bool = True) -> None:
        proc, folder = self.procs.pop(name)
        stop_process_group(proc)
        if remove_folder:  # the node and its disk are gone
            shutil.rmtree(folder, ignore_errors=True)

    def folders(self) -> list[Path]:
        return [folder for _, folder in self.procs.values()]

    def logs(self, pattern: str) -> str:
        """The ends of the nodes' log files named like ``pattern`` (a failure's evidence)."""
        return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-1500:]}"
                         for folder in self.folders() for p in sorted(folder.rglob(pattern)))

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture()
def nodes(tmp_path, s3_server):
    cluster = RayNodes(tmp_path, {**os.environ, **s3_server["env"]})
    yield cluster
    cluster.close()


def _driver_env(home: Path, s3_server, token: str | None) -> dict[str, str]:
    """A driver's environment: its own HOME (no ~/.ray/auth_token, no ~/ray_results), the bucket's
    endpoint and credentials, the cluster's token only if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "MLFLOW_TRACKING"))}
    env.update(s3_server["env"], HOME=str(home))
    if token:
        env["RAY_AUTH_TOKEN"] = token
    return env


def _hpsearch(args: list[str], cwd: Path, env: dict[str, str], **kw) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "hpsearch.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _bucket(s3_server):
    import boto3

    return boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _keys(s3_server, prefix: str) -> list[str]:
    pages = _bucket(s3_server).get_paginator("list_objects_v2").paginate(Bucket=s3_server["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _epochs_in_bucket(s3_server, prefix: str) -> dict[str, list[int]]:
    """trial folder -> the epochs of its result.json in the bucket, in order."""
    out = {}
    for key in _keys(s3_server, prefix):
        if key.endswith("/result.json"):
            body = _bucket(s3_server).get_object(Bucket=s3_server["bucket"], Key=key)["Body"].read().decode()
            out[key.split("/")[-2]] = [json.loads(line)["epoch"] for line in body.splitlines() if line.strip()]
    return out


def _wait_until_two_held(s3_server, prefix: str, driver: subprocess.Popen, logs=lambda: "") -> None:
    """Until two trials are held at epoch 3 with it in the bucket (Ray uploads results and its
    experiment state together, after the checkpoint the report carried), and one more experiment
    snapshot (every second with --checkpoint-every 0) while nothing changes. ``logs()``: what the
    nodes logged, said if the driver ended."""
    deadline = time.time() + 240
    while time.time() < deadline:
        if sum(epochs[-1:] == [3] for epochs in _epochs_in_bucket(s3_server, prefix).values()) >= 2:
            time.sleep(2)
            return
        assert driver.poll() is None, (driver.communicate()[1][-3000:], logs())
        time.sleep(0.5)
    pytest.fail("two trials did not reach epoch 3 in time")


def _held_space(code: Path) -> Path:
    """A folder with HELD_SPACE as held.py and the module it imports beside it."""
    code.mkdir()
    (code / "held.py").write_text(HELD_SPACE)
    (code / "scoring.py").write_text(SCORING)
    return code


def _local_checkpoints(*roots: Path) -> list[str]:
    return [str(p) for root in roots if root.exists() for p in root.rglob("checkpoint_0*")]


@pytest.mark.slow
def test_a_sweep_survives_a_lost_node_and_its_driver_and_resumes_from_another_machine(tmp_path, nodes, s3_server,
                                                                                       monkeypatch):
    code = _held_space(tmp_path / "code")
    name = f"two-node-{secrets.token_hex(2)}"
    storage = f"s3://{s3_server['bucket']}/{name}-runs"
    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"

    nodes.head()
    nodes.worker("w1", cpus=1)
    nodes.worker("w2", cpus=1)
    first = _hpsearch(["run", str(code / "held.py"), "--address", nodes.gcs, "--storage", storage, "--name", name,
                       "--strategy", "random", "--trials", "4", "--scheduler", "asha", "--grace-period", "2",
                       "--reduction-factor", "2", "--concurrency", "2", "--checkpoint-every", "0",
                       "--tracking-uri", store, "--no-progress"],
                      tmp_path / "driver1", _driver_env(tmp_path / "home1", s3_server, nodes.token))
    _wait_until_two_held(s3_server, f"{name}-runs/{name}/", first)
    # The driver's machine and a worker node are lost together; the worker's disk with them.
    stop_process_group(first)
    nodes.kill("w1")
    nodes.worker("w3", cpus=1)
    (code / "release").write_text("")

    # Resumed from another folder and HOME: no local copy of the sweep, its record or its checkpoints.
    second = _hpsearch(["resume", name, "--storage", storage, "--address", nodes.gcs, "--no-progress"],
                       tmp_path / "driver2", _driver_env(tmp_path / "home2", s3_server, nodes.token))
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-4000:]
    assert f"{name}: 4 trials" in out, out

    # Ray's results, in the bucket: every trial's epochs exactly once, from 1, none repeated.
    epochs = _epochs_in_bucket(s3_server, f"{name}-runs/{name}/")
    assert len(epochs) == 4
    for trial, seen in epochs.items():
        assert seen == list(range(1, len(seen) + 1)), (trial, seen)
    assert max(len(e) for e in epochs.values()) == 6  # ASHA let at least one run to the budget

    # MLflow: one parent, a child per trial, each curve one point per epoch; the best model loads.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(default_experiment(code / "held.py"))
    runs = client.search_runs([exp.experiment_id], f"tags.`hpsearch.sweep` = '{name}'", max_results=100)
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 4
    by_length = sorted(len(e) for e in epochs.values())
    curves = sorted(len(client.get_metric_history(c.info.run_id, "val_acc")) for c in children)
    assert curves == by_length
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == sorted(set(steps)) and steps[0] == 1, steps
    model_uri = parents[0].data.tags[TAG_BEST_MODEL]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # where load_model looks the logged model up
    model = mlflow.pytorch.load_model(model_uri)
    assert tuple(model.weight.shape) == (4, 2)

    # Checkpoints only in the bucket: none on any node's disk, in either driver's folder or HOME.
    assert [k for k in _keys(s3_server, f"{name}-runs/{name}/") if "/checkpoint_0" in k]
    left = _local_checkpoints(tmp_path, *nodes.folders())
    assert not left, left
    assert not list(tmp_path.rglob("s3:*")), "a bucket URI became a local folder"


@pytest.fixture(scope="module")
def token_head(tmp_path_factory, s3_server):
    """A head with token authentication and a Ray client server, for the bad-input cases."""
    cluster = RayNodes(tmp_path_factory.mktemp("token-head"), {**os.environ, **s3_server["env"]})
    cluster.head(client_server=True)
    yield cluster
    cluster.close()


@pytest.mark.slow
@pytest.mark.parametrize("address, token, message", [
    ("gcs", None, "address: the Ray cluster requires an authentication token and none was found (set RAY_AUTH_TOKEN "
                  "or RAY_AUTH_TOKEN_PATH, or copy the head's ~/.ray/auth_token; `ray get-auth-token` on the head "
                  "prints it), got '127.0.0.1:"),
    ("client", None, "address: the Ray cluster requires an authentication token and none was found"),
    ("gcs", "not-the-token", "address: the Ray cluster refused this process's authentication token (from "
                             "RAY_AUTH_TOKEN): it is not the cluster's"),
    ("gcs-as-client", "ours", "address: the port answers, but not as a Ray client server (ray://); use host:port "
                              "for the head's GCS port, got 'ray://127.0.0.1:"),
], ids=["no-token", "no-token-ray-client", "wrong-token", "ray-client-to-the-gcs-port"])
def test_a_cluster_that_refuses_the_driver_is_one_line_exit_2_and_nothing_written(address, token, message, token_head,
                                                                                  tmp_path, s3_server):
    from tests.test_cli import TINY_MODULE

    (tmp_path / "tiny.py").write_text(TINY_MODULE)
    target = {"gcs": token_head.gcs, "client": token_head.client, "gcs-as-client": "ray://" + token_head.gcs}[address]
    env = _driver_env(tmp_path / "home", s3_server, token_head.token if token == "ours" else token)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    proc = _hpsearch(["run", str(tmp_path / "tiny.py"), "--address", target, "--storage", str(tmp_path / "runs")],
                     tmp_path / "cwd", env)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("hpsearch: error: " + message), lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store" / "mlflow.db").exists(), "something was written"


@pytest.mark.slow
def test_a_sweep_through_the_ray_client_is_interrupted_and_resumed_with_mlflow_artifacts_in_the_bucket(
        tmp_path, s3_server, monkeypatch):
    code = _held_space(tmp_path / "code")
    name = f"client-{secrets.token_hex(2)}"
    storage = f"s3://{s3_server['bucket']}/{name}-runs"
    # MLflow's artifacts proxied to the bucket, as a team points --artifacts-destination at one.
    server, store = start_mlflow_server(tmp_path, free_port(), artifacts=f"s3://{s3_server['bucket']}/{name}-mlflow",
                                        env={**os.environ, **s3_server["env"],
                                             "MLFLOW_S3_ENDPOINT_URL": s3_server["endpoint"]})
    cluster = RayNodes(tmp_path, {**os.environ, **s3_server["env"]})
    try:
        cluster.head(client_server=True)
        cluster.worker("w1", cpus=2)
        env = _driver_env(tmp_path / "home", s3_server, cluster.token)
        first = _hpsearch(["run", str(code / "held.py"), "--address", cluster.client, "--storage", storage,
                           "--name", name, "--trials", "3", "--scheduler", "fifo", "--concurrency", "2",
                           "--checkpoint-every", "0", "--tracking-uri", store],
                          tmp_path / "driver", env)
        _wait_until_two_held(s3_server, f"{name}-runs/{name}/", first, lambda: cluster.logs("ray_client_server*"))
        first.send_signal(signal.SIGINT)  # Ctrl-C in the client: the driver on the head ends the sweep, resumable
        out, err = first.communicate(timeout=300)
        assert first.returncode == 130, err[-3000:]
        assert f"interrupted: resume with hpsearch resume {name} --storage {storage}" in out, out + err[-2000:]
        assert re.search(r"\d/3 trials: \d running, \d completed", out), out  # the progress relayed from the head

        (code / "release").write_text("")
        second = _hpsearch(["resume", name, "--storage", storage, "--address", cluster.client, "--no-progress"],
                           tmp_path / "driver", env)
        out, err = second.communicate(timeout=600)
        assert second.returncode == 0, err[-4000:]
        assert f"{name}: 3 trials" in out, out
        cluster.close()

        epochs = _epochs_in_bucket(s3_server, f"{name}-runs/{name}/")
        assert sorted(epochs.values()) == [list(range(1, 7))] * 3  # FIFO: every trial whole, each epoch once
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=store)
        runs = client.search_runs([client.get_experiment_by_name(default_experiment(code / "held.py")).experiment_id],
                                  f"tags.`hpsearch.sweep` = '{name}'", max_results=100)
        parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "sweep"]
        children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 3
        for child in children:
            assert [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")] == list(range(1, 7))
        # The best model and the report went through the server into the bucket, not to a local folder.
        assert [k for k in _keys(s3_server, f"{name}-mlflow/") if k.endswith("MLmodel")]
        assert not list(tmp_path.rglob("MLmodel"))
    finally:
        cluster.close()
        stop_process_group(server)
