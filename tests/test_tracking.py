"""Every trial in MLflow: a real sweep with ASHA into the embedded SQLite store and a real server."""

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hpsearch
from hpsearch.trial.train import train as reference_train

pytestmark = pytest.mark.slow

# lr is a choice so the grid's order is known: good trials first (both widths of 0.05), so ASHA
# cuts the poor ones (1e-5) at the first rung, and 1e12 diverges (NaN) and fails with its reason.
# 6 trials: two parameters that vary, and every status.
SPACE = hpsearch.Space(
    hpsearch.Fixed("model", "mlp"), hpsearch.Fixed("norm", "none"), hpsearch.Fixed("batch_size", 128),
    hpsearch.Choice("lr", [0.05, 1e-5, 1e12]), hpsearch.PowerOfTwo("width", 16, 32),
    hpsearch.Fixed("depth", 1), hpsearch.Fixed("optimizer", "sgd"), hpsearch.Fixed("api_token", "hunter2"),
    # Hyperparameter-like names holding a secret's word keep their values (the rule reads the last part).
    hpsearch.Fixed("key_dim", 8), hpsearch.Fixed("token_dropout", 0.25), hpsearch.Fixed("sort_key", "val"),
)
MAX_EPOCHS = 4
TRIALS = 6


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
    assert len(parents) == 1 and len(children) == len(result.trials) == TRIALS
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
    # Beside them, Optuna's interactive figures of the same trials, as pages the UI's artifact view shows.
    for page in ("optimization_history", "parallel_coordinate", "param_importances", "intermediate_values"):
        assert f"report/{page}.html" in artifacts
    page = client.download_artifacts(parent.info.run_id, "report/parallel_coordinate.html", str(Path(result.path) / "pages"))
    assert "Plotly.newPlot" in Path(page).read_text() and '"lr"' in Path(page).read_text()
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


def test_report_command_rebuilds_table_and_plots_from_mlflow(embedded_sweep, tmp_path, capsys):
    from conftest import run_here

    result, uri = embedded_sweep
    code, out, err = run_here(capsys, "report", result.name, "--tracking-uri", uri, "--out", str(tmp_path))
    assert code == 0, err[-2000:]
    folder = tmp_path / result.name
    rows = (folder / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + TRIALS and rows[0].startswith("trial_id,run_id,status,epochs,val_acc")
    for png in ("parallel_coordinates", "metric_vs_params", "learning_curves", "param_importance"):
        assert (folder / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "optimization_history.html").exists() and (folder / "intermediate_values.html").exists()
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


def _gated_train(folder: Path):
    """A trainable whose best trial (score 0.95) reports epoch 1, says so in ``folder/waiting``, then
    waits for ``folder/go`` before epoch 2: the test reads the sweep while it provably runs."""
    def train(config):
        for epoch in (1, 2):
            if epoch == 2 and config["score"] == 0.95:
                (folder / "waiting").write_text("x")
                deadline = time.time() + 300  # a guard: a test that failed to release must not hang Ray
                while not (folder / "go").exists() and time.time() < deadline:
                    time.sleep(0.05)
            hpsearch.report(epoch=epoch, score=config["score"] * epoch)
    return train


def _wait(condition, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_mlflow_ui_shows_readable_trials_the_stopped_one_and_the_live_parent(ray_session, mlflow_server, tmp_path):
    """Mid-sweep, in Chromium: the parent's live figures, the nested children by readable name, the
    stopped one marked. One trial at a time, in the grid's order: 0.9 completes, 0.1 is cut by ASHA
    at epoch 1 (below 0.9 there), 0.95 reports epoch 1 and waits on the test."""
    from mlflow import MlflowClient
    from tests.browser import Browser, find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (.ci/run installs it; locally: apt-get install -y chromium)")
    uri, client = mlflow_server["uri"], MlflowClient(tracking_uri=mlflow_server["uri"])
    artifacts = Path(os.environ.get("HPSEARCH_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    name, seen, errors = f"live-{tmp_path.name}"[-40:], {}, []

    def parent():
        exp = client.get_experiment_by_name("tracking-live")
        runs = client.search_runs([exp.experiment_id], f"tags.`hpsearch.sweep` = '{name}' and tags.`hpsearch.role` = 'sweep'") \
            if exp else []
        return runs[0] if runs else None

    def read_the_ui_mid_sweep():
        try:
            _wait(lambda: (tmp_path / "waiting").exists(), "the last trial to wait at its gate")
            # The parent's live figures once the first two trials ended and the last one's first
            # epoch was counted (sent every few seconds; the trial says it waits before the driver
            # has necessarily taken its epoch in).
            run = _wait(lambda: (p := parent()) and p.data.metrics.get("trials_stopped") == 1 and
                        p.data.metrics.get("trials_completed") == 1 and p.data.metrics.get("total_epochs") == 4
                        and p, "the parent's live figures: 1 completed, 1 stopped, 4 epochs")
            seen["parent"] = run
            # The three trials' runs, with their parameters and the stopped one renamed: written by
            # the one writer in batches, so they may trail the parent's figures by a moment.
            children = _wait(lambda: (cs := client.search_runs([run.info.experiment_id],
                                                                f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"))
                             and len(cs) == 3 and all("score" in c.data.params for c in cs)
                             and any(c.info.run_name.startswith("[stopped@") for c in cs) and cs,
                             "the three trials' runs with their parameters")
            seen["names"] = {c.data.params["score"]: c.info.run_name for c in children}
            browser = Browser(binary, tmp_path / "profile")
            try:
                browser.goto(f"{uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
                # Its metrics table: each name above its value (the sweep is held, so they stand still).
                seen["live_page"] = browser.wait_for(
                    "['trials_running\\n1\\n', 'trials_completed\\n1\\n', 'trials_stopped\\n1\\n', "
                    "'total_epochs\\n4\\n', 'best_score\\n1.8'].every(n => document.body.innerText.includes(n))")
                browser.evaluate("[...document.querySelectorAll('*')].find(e => !e.children.length && "
                                 "e.textContent === 'trials_running')?.scrollIntoView()")
                browser.screenshot(artifacts / "mlflow-ui-live-parent.png")
                seen["live_text"] = browser.evaluate("document.body.innerText")
                (artifacts / "mlflow-ui-live-parent.txt").write_text(seen["live_text"] or "")
                # MLflow 3 opens an experiment on its GenAI overview; the training runs are one click away.
                browser.goto(f"{uri}/#/experiments/{run.info.experiment_id}/runs")
                assert browser.wait_for(f"document.body.innerText.includes({json.dumps(name)})"), \
                    "the sweep's parent run is not on the experiment page"
                # Nested runs start collapsed under their parent: click its expander as a person would.
                browser.evaluate("document.querySelector('button[data-component-id*=\"runnamecellrenderer\"]').click()")
                seen["shown"] = browser.wait_for(
                    f"{json.dumps(list(seen['names'].values()))}.every(n => document.body.innerText.includes(n))")
                browser.screenshot(artifacts / "mlflow-ui-nested-trials.png")
                (artifacts / "mlflow-ui-nested-trials.html").write_text(browser.html())
            finally:
                browser.close()
        except BaseException as exc:  # noqa: BLE001 - said below, after the sweep was let go
            errors.append(exc)
        finally:
            (tmp_path / "go").write_text("x")

    reader = threading.Thread(target=read_the_ui_mid_sweep, daemon=True)
    reader.start()
    result = hpsearch.sweep(hpsearch.Space(hpsearch.Choice("score", [0.9, 0.1, 0.95])), train=_gated_train(tmp_path),
                            metric="score", mode="max", strategy="grid", scheduler="asha", max_epochs=2,
                            grace_period=1, reduction_factor=2, concurrency=1, name=name, tracking_uri=uri,
                            experiment="tracking-live", storage=str(tmp_path / "runs"), progress=False)
    reader.join(timeout=300)
    if errors:
        raise errors[0]
    assert [t.status for t in result.trials] == ["completed", "stopped", "completed"]

    # Mid-sweep: one trial running, one completed, one stopped, the best so far (0.9 x 2 epochs).
    live = seen["parent"]
    assert live.info.status == "RUNNING"
    assert (live.data.metrics["trials_running"], live.data.metrics["best_score"], live.data.metrics["total_epochs"]) == \
        (1, 1.8, 4)  # epochs: 2 + 1 + 1
    assert seen["live_page"], "the parent's live figures are not on its page in the UI"
    # Readable names, unique by the trial's number; the stopped trial marked where the table shows it.
    names = seen["names"]
    assert names["0.9"] == "score=0.9 · #0" and names["0.95"] == "score=0.95 · #2", names
    assert names["0.1"] == "[stopped@1] score=0.1 · #1", names
    assert seen["shown"], "the nested trial runs did not appear, by name, under the sweep's parent run"
    assert (artifacts / "mlflow-ui-nested-trials.png").stat().st_size > 10_000

    # The end replaced the live figures.
    final = client.get_run(result.tracking["parent_run_id"])
    assert final.info.status == "FINISHED"
    assert (final.data.metrics["trials_running"], final.data.metrics["trials_completed"],
            final.data.metrics["trials_stopped"], final.data.metrics["best_score"]) == (0, 2, 1, 1.9)
    stopped = client.get_run(result.tracking["children"][result.trials[1].trial_id])
    assert stopped.info.status == "FINISHED" and stopped.data.metrics["stopped_at_epoch"] == 1
