"""Trials on several workers (PyTorch DDP on Ray Train inside a Tune trial), and the best trial's
model handed on to the MLflow Model Registry. Real Ray, real MLflow (SQLite), real training on
MNIST-1D; the session's Ray has 2 CPUs, so a 2-worker trial of 1 CPU per worker runs alone."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# Ray's workers cannot import a test module by name: ship its functions by value.
from ray import cloudpickle  # noqa: E402
from torch import nn

import hpsearch
from hpsearch import ddp
from hpsearch.space import Choice, Fixed, Space

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def model_of(config) -> nn.Module:
    """The space's MODEL: the network train_ddp trains, from a config."""
    return nn.Sequential(nn.Linear(40, int(config["width"])), nn.ReLU(), nn.Linear(int(config["width"]), 10))


def tensors(data):
    as_t = lambda a, dtype=torch.float32: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    return (as_t(data.x_train).flatten(1), as_t(data.y_train, torch.long),
            as_t(data.x_val).flatten(1), as_t(data.y_val, torch.long))


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train_ddp(config, data, max_epochs):
    """A user's DDP loop on hpsearch's helpers only (no Ray import). The trial that learns (lr above
    1e-3) fails on its first attempt before epoch 3, after epoch 2's checkpoint: the retry must
    continue from there."""
    torch.manual_seed(0)
    model = model_of(config)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    start, state = 1, hpsearch.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    net = ddp.prepare_model(model)
    x, y, xv, yv = tensors(data)
    shard = ddp.sampler(len(x), seed=7)
    batch = 128 // ddp.world_size()
    for epoch in range(start, max_epochs + 1):
        if config["lr"] > 1e-3 and start == 1 and epoch == 3:
            raise RuntimeError("injected: the first attempt fails before epoch 3")
        shard.set_epoch(epoch)
        order = torch.tensor(list(shard))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        hpsearch.report(epoch=epoch, val_acc=accuracy(model, xv, yv), rank=ddp.rank(), world=ddp.world_size(),
                        start=start, checkpoint=lambda: {"epoch": epoch, "model": model.state_dict(),
                                                         "optimizer": opt.state_dict()})


@pytest.mark.slow
def test_a_ddp_sweep_with_asha_is_one_record_per_trial_and_frees_its_workers(ray_session, mlflow_uri, tmp_path):
    import mlflow.pytorch
    import ray

    import mlflow
    from mlflow import MlflowClient

    # Trial 0 learns (and fails once); trial 1 barely moves, so ASHA stops it at epoch 1: with two
    # values recorded at the rung, Ray's cutoff is their 66.7th percentile (reduction factor 3),
    # above the lower one. One group fits the 2 CPUs, so trials run one at a time. Two trials, not
    # more: each is a worker group's start (seconds), and one stopped group shows what the test needs.
    space = Space(Choice("lr", [1e-2, 1e-7]), Fixed("width", 32))
    result = hpsearch.sweep(
        space, train=train_ddp, data="mnist1d", model=model_of, metric="val_acc", mode="max",
        strategy="grid", scheduler="asha", max_epochs=3, reduction_factor=3, max_failures=1,
        resources=hpsearch.Resources(workers=2, cpus=1), checkpoint_every_s=0, storage=str(tmp_path),
        experiment="ddp", register_model="ddp-mlp", progress=False,
    )
    by_lr = {t.config["lr"]: t for t in result.trials}
    good = by_lr[1e-2]
    assert good.status == "completed" and good.epochs == 3, result.trials
    assert by_lr[1e-7].status == "stopped", result.trials  # ASHA's stop, on a whole group
    assert by_lr[1e-7].epochs == 1 and len(result.trials) == 2

    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result.tracking["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2  # one child run per trial: not one per rank, nor one per attempt
    for child in children:
        trial = child.data.tags["hpsearch.trial_id"]
        epochs = next(t.epochs for t in result.trials if t.trial_id == trial)
        curve = client.get_metric_history(child.info.run_id, "val_acc")
        assert sorted(m.step for m in curve) == list(range(1, epochs + 1)), trial  # once per epoch
        assert {m.value for m in client.get_metric_history(child.info.run_id, "rank")} == {0}  # rank 0's reports
        assert {m.value for m in client.get_metric_history(child.info.run_id, "world")} == {2}  # trained by 2 ranks
    # The failed attempt's retry started a new group from epoch 2's checkpoint: epoch 3 came from start 3.
    good_run = next(c for c in children if c.data.tags["hpsearch.trial_id"] == good.trial_id)
    starts = {m.step: m.value for m in client.get_metric_history(good_run.info.run_id, "start")}
    assert starts == {1: 1, 2: 1, 3: 3}, starts
    assert good_run.data.tags.get("hpsearch.retries") == "1"

    # Every worker group is gone: stopped, failed and finished ones (Ray frees a group's CPUs when
    # the cleaner sees its trial gone; wait for that, not for a time).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        live = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
        if not live and ray.available_resources().get("CPU") == 2:
            break
        time.sleep(0.5)
    assert not live and ray.available_resources().get("CPU") == 2, (live, ray.available_resources())
    assert not any(Path(result.path, ".groups").glob("*/*")), "a group's Ray Train storage was left behind"

    # The winner, handed on: a new registered version, tagged, loadable by models:/NAME/latest,
    # and the same network the best trial measured.
    assert result.registered and result.registered.startswith("models:/ddp-mlp/")
    version = client.get_model_version("ddp-mlp", result.registered.rsplit("/", 1)[1])
    assert version.tags["hpsearch.trial_id"] == good.trial_id
    assert version.tags["hpsearch.sweep"] == result.name
    assert json.loads(version.tags["hpsearch.best_config"])["lr"] == 1e-2
    assert float(version.tags["hpsearch.metric_value"]) == pytest.approx(good.metric)
    assert version.tags["hpsearch.metric"] == "val_acc"
    mlflow.set_registry_uri(mlflow_uri)
    loaded = mlflow.pytorch.load_model("models:/ddp-mlp/latest")
    *_, xv, yv = tensors(hpsearch.load_dataset("mnist1d"))
    assert accuracy(loaded, xv, yv) == pytest.approx(good.metric, abs=1e-6)


@pytest.mark.slow
def test_a_trial_s_workers_on_two_nodes_still_train_together(tmp_path):
    # ray.cluster_utils.Cluster needs its own Ray; a fresh interpreter keeps the session's intact.
    # Two nodes of one CPU each (the head and one more: a node fewer to start than a CPU-less head
    # and two): a 2-worker trial must span both.
    script = f"""
import json
import ray, torch, torch.distributed as dist
from ray.cluster_utils import Cluster
import hpsearch
from hpsearch import ddp

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()

def train(config):
    torch.manual_seed(0)
    w = torch.nn.Linear(1, 1, bias=False)
    net = ddp.prepare_model(w)
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    nodes = [None] * ddp.world_size()
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    for epoch in range(1, 4):
        x = torch.full((4, 1), float(ddp.rank() + 1))  # each rank its own data: DDP averages the gradients
        opt.zero_grad()
        ((net(x) - 3 * x) ** 2).mean().backward()
        opt.step()
        (loss,) = ddp.sum_across(((w(x) - 3 * x) ** 2).mean().item())
        hpsearch.report(epoch=epoch, loss=loss, nodes=len(set(nodes)), weight=w.weight.item())

r = hpsearch.sweep(hpsearch.Space(hpsearch.Fixed("x", 1)), train=train, metric="loss", mode="min", strategy="grid",
                   scheduler="fifo", max_epochs=3, resources=hpsearch.Resources(workers=2, cpus=1),
                   address=cluster.address, storage={str(tmp_path)!r}, tracking_uri=False, progress=False)
t = r.trials[0]
rows = [json.loads(line) for line in open(t.path + "/result.json") if line.strip()]
print(json.dumps({{"status": t.status, "nodes": [row["nodes"] for row in rows], "loss": [row["loss"] for row in rows]}}))
ray.shutdown()
cluster.shutdown()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "completed", out
    assert out["nodes"] == [2, 2, 2], out  # every epoch, the two ranks were on two nodes
    assert out["loss"][-1] < out["loss"][0], out  # and trained together


def test_gpu_check_says_no_gpu_here_and_writes_its_json(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: scripts/gpu-check would run its sweeps")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([str(root / "scripts" / "gpu-check"), "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gpu-check: no GPU: torch" in proc.stdout
    out = json.loads((tmp_path / "gpu-check.json").read_text())
    assert out["gpu"] is False and out["why"].startswith("no GPU") and out["machine"]["cpus"] >= 1


@pytest.mark.slow
def test_a_ray_that_would_never_free_stopped_groups_is_refused_before_any_trial(tmp_path):
    # A Ray started before hpsearch (a notebook's) without the dashboard or hpsearch's setup hook:
    # the first stopped trial's workers would hold their CPUs for good. One line instead, nothing run.
    script = f"""
import ray, hpsearch
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
def train(config):
    hpsearch.report(epoch=1, score=1.0)
try:
    hpsearch.sweep(hpsearch.Space(hpsearch.Fixed("x", 1)), train=train, metric="score", mode="max", max_epochs=1,
                   resources=hpsearch.Resources(workers=2, cpus=1), storage={str(tmp_path)!r}, tracking_uri=False,
                   progress=False)
except ValueError as exc:
    print("refused:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: workers_per_trial: the Ray already started in this process has no dashboard" in proc.stdout
    assert proc.stdout.rstrip().endswith("got 2")
    assert not list(tmp_path.glob("*/trial_entry_*")), "a trial ran"
