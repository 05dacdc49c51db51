"""Every trial in MLflow: a real sweep with ASHA into the embedded SQLite store and a real server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hpsearch
from hpsearch.trial.train import train as reference_train

pytestmark = pytest.mark.slow

# lr is a choice so the grid's order is known: good trials first, so ASHA cuts the poor ones
# (1e-5) at the first rung, and 1e12 diverges (NaN) and fails with its reason.
SPACE = hpsearch.Space(
    hpsearch.Fixed("model", "mlp"), hpsearch.Fixed("norm", "none"), hpsearch.Fixed("batch_size", 128),
    hpsearch.Choice("lr", [0.05, 0.01, 1e-5, 1e12]), hpsearch.PowerOfTwo("width", 16, 32),
    hpsearch.Fixed("depth", 1), hpsearch.Fixed("optimizer", "sgd"), hpsearch.Fixed("api_token", "hunter2"),
    # Hyperparameter-like names holding a secret's word keep their values (the rule reads the last part).
    hpsearch.Fixed("key_dim", 8), hpsearch.Fixed("token_dropout", 0.25), hpsearch.Fixed("sort_key", "val"),
)
MAX_EPOCHS = 4


def _files(client, run_id, folder=None):
    """Every artifact file of a run, walking its folders."""
    for a in client.list_artifacts(run_id, folder):
        yield from (_files(client, run_id, a.path) if a.is_dir else [a.path])


def _run(uri, storage, mnist1d, experiment):
    return hpsearch.sweep(SPACE, train=reference_train, data=mnist1d, metric="val_acc", mode="max",
                          strategy="grid", scheduler="asha", max_epochs=MAX_EPOCHS, grace_period=1,
                          reduction_factor=2, storage=storage, tracking_uri=uri, experiment=experiment,
                          progress=False)


@pytest.fixture(scope="session")
def embedded_sweep(ray_session, mlflow_uri, mnist1d, tmp_path_factory):
    return _run(mlflow_uri, str(tmp_path_factory.mktemp("runs")), mnist1d, "tracking-embedded"), mlflow_uri


@pytest.fixture(scope="session")
def server_sweep(ray_session, mlflow_server, mnist1d, tmp_path_factory):
    return _run(mlflow_server["uri"], str(tmp_path_factory.mktemp("runs")), mnist1d, "tracking-server"), mlflow_server["uri"]


@pytest.mark.parametrize("which", ["embedded_sweep", "server_sweep"])
def test_sweep_is_one_parent_with_one_child_per_trial(which, request, mnist1d, monkeypatch):
    from mlflow import MlflowClient

    result, uri = request.getfixturevalue(which)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as a user loading the model from that store would
    client = MlflowClient(tracking_uri=uri)
    exp_id = result.tracking["experiment_id"]
    runs = client.search_runs([exp_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == len(result.trials) == 8
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert {c.data.tags["hpsearch.trial_id"] for c in children} == {t.trial_id for t in result.trials}
    assert parent.info.status == "FINISHED" and all(r.info.status != "RUNNING" for r in runs)
    assert parent.data.params["strategy"] == "grid" and parent.data.params["scheduler"] == "asha"
    assert parent.data.params["max_epochs"] == str(MAX_EPOCHS)
    assert "hpsearch.version" in parent.data.tags and "CPU" in parent.data.tags["hpsearch.ray_resources"]

    records = {t.trial_id: t for t in result.trials}
    statuses = set()
    for child in children:
        tags, record = child.data.tags, records[child.data.tags["hpsearch.trial_id"]]
        statuses.add(tags["hpsearch.status"])
        assert tags["hpsearch.status"] == record.status
        assert child.data.params["lr"] == repr(record.config["lr"]) or float(child.data.params["lr"]) == record.config["lr"]
        assert child.data.params["api_token"] == "***"  # secrets are masked
        assert (child.data.params["key_dim"], child.data.params["token_dropout"], child.data.params["sort_key"]) == \
            ("8", "0.25", "val")
        assert tags["hpsearch.config_hash"] == SPACE.config_hash(record.config)
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == list(range(1, record.epochs + 1))  # one point per epoch it ran
        for name in ("train_loss", "val_loss"):
            assert len(client.get_metric_history(child.info.run_id, name)) == record.epochs
        if tags["hpsearch.status"] == "stopped":
            assert int(tags["hpsearch.stopped_at_epoch"]) == record.epochs < MAX_EPOCHS
        if tags["hpsearch.status"] == "failed":
            assert record.config["lr"] == 1e12 and "diverged" in tags["hpsearch.error"]
            assert child.info.status == "FAILED"
            trace = client.download_artifacts(child.info.run_id, "traceback.txt", str(Path(result.path) / child.info.run_id))
            assert "TrialFailed" in Path(trace).read_text()
    assert statuses == {"completed", "stopped", "failed"}

    # The parent names the true best child, and carries its metrics.
    scored = [c for c in children if c.data.tags["hpsearch.status"] != "failed"]
    best = max(scored, key=lambda c: c.data.metrics["val_acc"])
    assert parent.data.tags["hpsearch.best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best.data.metrics["val_acc"])

    # The best trial's model comes back with mlflow.pytorch.load_model and predicts as it scored.
    import mlflow.pytorch

    model = mlflow.pytorch.load_model(parent.data.tags["hpsearch.best_model_uri"])
    with torch.no_grad():
        predicted = model(torch.tensor(mnist1d.x_val)).argmax(1).numpy()
    assert float(np.mean(predicted == mnist1d.y_val)) == pytest.approx(best.data.metrics["val_acc"], abs=1e-6)

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/trials.csv", "report/parallel_coordinates.png", "report/metric_vs_params.png",
            "report/learning_curves.png", "report/param_importance.png"} <= artifacts
    space_json = client.download_artifacts(parent.info.run_id, "space.json", str(Path(result.path) / "space"))
    assert hpsearch.Space.from_json(Path(space_json).read_text()).to_dict() == SPACE.to_dict(masked=True)
    assert json.loads(parent.data.tags["hpsearch.best_config"])["api_token"] == "***"
    assert json.loads(parent.data.tags["hpsearch.best_config"])["key_dim"] == 8

    # The secret is nowhere in the store: no param or tag of any run, no text the sweep logged.
    assert not any("hunter2" in json.dumps([r.data.params, r.data.tags]) for r in runs)
    texts = Path(result.path) / "texts"
    for run in runs:
        for path in _files(client, run.info.run_id):
            if path.endswith((".json", ".csv", ".txt", ".md", ".yaml")):
                assert "hunter2" not in Path(client.download_artifacts(run.info.run_id, path, str(texts))).read_text(), path


def test_report_command_rebuilds_table_and_plots_from_mlflow(embedded_sweep, tmp_path):
    result, uri = embedded_sweep
    proc = subprocess.run([sys.executable, "-m", "hpsearch.cli", "report", result.name, "--tracking-uri", uri,
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = tmp_path / result.name
    rows = (folder / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("trial_id,run_id,status,epochs,val_acc")
    for png in ("parallel_coordinates", "metric_vs_params", "learning_curves", "param_importance"):
        assert (folder / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    # The report the sweep logged from what it held in memory says exactly what MLflow holds.
    from mlflow import MlflowClient

    logged = MlflowClient(tracking_uri=uri).download_artifacts(result.tracking["parent_run_id"], "report/trials.csv",
                                                               str(tmp_path / "logged"))
    assert Path(logged).read_text().splitlines() == rows


def test_embedded_store_is_in_write_ahead_log_mode(embedded_sweep):
    import sqlite3

    _, uri = embedded_sweep
    with sqlite3.connect(uri[len("sqlite:///"):]) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path, monkeypatch):
    from hpsearch import engine as sweep_module
    from tests.conftest import free_port
    monkeypatch.setattr(sweep_module, "connect", lambda *a: pytest.fail("Ray started"))
    with pytest.raises(ValueError, match=r"tracking_uri: cannot reach the MLflow server at http://127.0.0.1:\d+"):
        hpsearch.sweep(SPACE, train=reference_train, metric="val_acc", mode="max", max_epochs=2,
                       tracking_uri=f"http://127.0.0.1:{free_port()}", storage=str(tmp_path))
    assert not (tmp_path / "ray_results").exists()


def test_retried_trial_continues_its_own_child_run(ray_session, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    marker = tmp_path / "failed-once"

    def flaky(config):
        state = hpsearch.load_checkpoint() or {"epoch": 0}
        for epoch in range(state["epoch"] + 1, 5):
            if epoch == 3 and not marker.exists():
                marker.write_text("x")
                raise RuntimeError("simulated crash at epoch 3")
            hpsearch.report(epoch=epoch, score=float(epoch), checkpoint={"epoch": epoch})

    result = hpsearch.sweep(hpsearch.Space(hpsearch.Fixed("x", 1)), train=flaky, metric="score", mode="max",
                            strategy="grid", scheduler="fifo", max_epochs=4, max_failures=1, checkpoint_every_s=0,
                            storage=str(tmp_path / "runs"), experiment="tracking-retry", progress=False)
    assert [t.status for t in result.trials] == ["completed"], [t.error for t in result.trials]
    client = MlflowClient(tracking_uri=mlflow_uri)
    children = client.search_runs([result.tracking["experiment_id"]],
                                  f"tags.`mlflow.parentRunId` = '{result.tracking['parent_run_id']}'")
    assert len(children) == 1
    assert children[0].data.tags["hpsearch.retries"] == "1"
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "score")] == [1, 2, 3, 4]


def test_mlflow_ui_shows_the_sweep_with_its_nested_trials(server_sweep, tmp_path):
    from tests.browser import Browser, find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (.ci/run installs it; locally: apt-get install -y chromium)")
    result, uri = server_sweep
    artifacts = Path(os.environ.get("HPSEARCH_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    child_names = [f"trial-{t.trial_id}" for t in result.trials]
    browser = Browser(binary, tmp_path / "profile")
    try:
        # MLflow 3 opens an experiment on its GenAI overview; the training runs are one click away.
        browser.goto(f"{uri}/#/experiments/{result.tracking['experiment_id']}/runs")
        assert browser.wait_for(f"document.body.innerText.includes({json.dumps(result.name)})"), \
            "the sweep's parent run is not on the experiment page"
        # Nested runs start collapsed under their parent: click its expander as a person would.
        browser.evaluate("document.querySelector('button[data-component-id*=\"runnamecellrenderer\"]').click()")
        shown = browser.wait_for(f"{json.dumps(child_names)}.every(n => document.body.innerText.includes(n))")
        browser.screenshot(artifacts / "mlflow-ui-nested-trials.png")
        (artifacts / "mlflow-ui-nested-trials.html").write_text(browser.html())
    finally:
        browser.close()
    assert shown, "the nested trial runs did not appear under the sweep's parent run"
    assert (artifacts / "mlflow-ui-nested-trials.png").stat().st_size > 10_000
