"""The sweep's end: the result is returned first; the best model, the report and the last MLflow
writes finish on a thread of their own (``SweepResult.wait``), before the process exits, and a step
that fails is reported while what was written stays. Real Ray, a real SQLite store, real training.
"""

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import TINY

import hpsearch
from hpsearch import results
from hpsearch.results import SweepResult, wait_for_ends
from hpsearch.tracking import close
from hpsearch.trial.train import train as reference_train

REPORT = {"report/trials.csv", "report/parallel_coordinates.png", "report/learning_curves.png"}


def _sweep(storage, uri, name, **kw):
    return hpsearch.sweep(TINY, train=reference_train, data="mnist1d", storage=storage, progress=False,
                          metric="val_acc", mode="max", strategy="random", trials=2, max_epochs=2, seed=3,
                          tracking_uri=uri, experiment="sweep-end", name=name, **kw)


def _parent(uri, name):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sweep-end")
    [run] = client.search_runs([exp.experiment_id], f"tags.`hpsearch.sweep` = '{name}' and tags.`hpsearch.role` = 'sweep'")
    return client, run


def _report(client, run_id) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, "report")}


@pytest.mark.slow
def test_the_result_comes_first_and_its_end_follows(ray_session, mlflow_uri, storage, monkeypatch):
    gate = threading.Event()
    real = close.log_report

    def held_report(*a, **kw):  # the end cannot finish before the test has looked at the result
        gate.wait(120)
        return real(*a, **kw)

    monkeypatch.setattr(close, "log_report", held_report)
    try:
        result = _sweep(storage, mlflow_uri, "end-first")
        assert result.ending  # returned while the end still runs
        assert result.best is not None and len(result.trials) == 2 and result.wall_s > 0
        assert all(t.epochs >= 1 and t.status in ("completed", "stopped") for t in result.trials)
    finally:
        gate.set()
    tracking = result.tracking  # reading what the end fills in waits for it
    assert not result.ending and result.wait() is result and result.end_errors == []
    client, parent = _parent(mlflow_uri, "end-first")
    assert tracking["parent_run_id"] == parent.info.run_id and tracking["pending"] is None
    assert parent.info.status == "FINISHED" and "hpsearch.best_model_uri" in parent.data.tags
    assert REPORT <= _report(client, parent.info.run_id)
    assert "planned_epochs" in result.expected and parent.data.metrics["planned_epochs"] == result.expected["planned_epochs"]


@pytest.mark.slow
def test_the_end_is_complete_when_the_process_exits(tmp_path, mlflow_uri):
    """A script that sweeps and exits at once, its end held until its main thread has finished."""
    script = tmp_path / "sweep_and_exit.py"
    script.write_text(textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import hpsearch
        from hpsearch.tracking import close
        from conftest import TINY

        gate, real = threading.Event(), close.log_report
        def held_report(*a, **kw):
            gate.wait(120)
            return real(*a, **kw)
        close.log_report = held_report
        result = hpsearch.sweep(TINY, data="mnist1d", storage={str(tmp_path / "ray")!r}, progress=False,
                                metric="val_acc", mode="max", strategy="random", trials=2, max_epochs=2, seed=3,
                                tracking_uri={mlflow_uri!r}, experiment="sweep-end", name="end-at-exit")
        print("returned, ending:", result.ending, flush=True)
        gate.set()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "returned, ending: True" in proc.stdout
    client, parent = _parent(mlflow_uri, "end-at-exit")
    assert parent.info.status == "FINISHED" and "hpsearch.best_model_uri" in parent.data.tags
    assert REPORT <= _report(client, parent.info.run_id)


@pytest.mark.slow
def test_a_failing_end_is_reported_and_what_it_wrote_stays(ray_session, mlflow_uri, storage, monkeypatch, caplog):
    """A step that fails (the report) is a line of ``end_errors``, the others go on; an end that
    fails as a whole (the parent's summary) is logged and raised by ``wait``."""
    from hpsearch.tracking import analysis
    from hpsearch.tracking.tracker import SweepTracker

    def no_disk(*a, **kw):
        raise OSError("no space left for the report")

    def broken(self, result, status="FINISHED"):
        raise RuntimeError("the summary could not be built")

    monkeypatch.setattr(analysis, "write_report", no_disk)
    monkeypatch.setattr(SweepTracker, "finish", broken)
    result = _sweep(storage, mlflow_uri, "end-failing")
    with pytest.raises(RuntimeError, match="summary could not be built"):
        result.wait()
    assert result.end_errors == ["report not logged: OSError: no space left for the report"]
    assert "report not logged" in caplog.text and "the sweep's end failed" in caplog.text
    client, parent = _parent(mlflow_uri, "end-failing")
    # What was written before the failure stays: the trials' runs (delivered) and the best model.
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert "hpsearch.best_model_uri" in parent.data.tags and _report(client, parent.info.run_id) == set()


# -- SweepEnd itself: no Ray -----------------------------------------------------------------------

def _result() -> SweepResult:
    return SweepResult("s", "/tmp/s", "acc", "max", 1, [], 1.0, None)


def test_fields_the_end_fills_wait_for_it_and_a_new_sweep_waits_for_an_earlier_end():
    gate, result = threading.Event(), _result()

    def work():
        gate.wait(60)
        result.registered = "models:/m/1"
        result.end_errors.append("report not logged: x")

    result.end_in_background(work)
    assert result.ending and result.__dict__["_end"] in results._running
    with pytest.raises(TimeoutError):
        result.wait(timeout=0.01)
    reader = threading.Thread(target=wait_for_ends)
    reader.start()
    reader.join(0.05)
    assert reader.is_alive()  # held by the end still running
    gate.set()
    assert result.registered == "models:/m/1" and result.end_errors == ["report not logged: x"]
    reader.join(60)
    assert not reader.is_alive() and not result.ending and not results._running


def test_a_result_is_pickled_complete_without_its_thread():
    import pickle

    result = _result()
    result.end_in_background(lambda: setattr(result, "registered", "models:/m/2"))
    copy = pickle.loads(pickle.dumps(result))
    assert copy.registered == "models:/m/2" and not copy.ending and copy.expected == {} and copy.wait() is copy


# -- a checkpoint written once (issue #25 item 4) --------------------------------------------------

def test_a_checkpoint_is_serialised_in_memory_and_ray_s_copy_is_its_one_write(tmp_path):
    from pyarrow.fs import FileType, LocalFileSystem, copy_files

    from hpsearch.trial import session

    made = []
    with session._in_memory(lambda: made.append(1) or {"epoch": 3}) as (fs, folder):
        # What Ray's report does with the folder: copy it into the trial's storage.
        LocalFileSystem().create_dir(str(tmp_path / "checkpoint_000002"))
        copy_files(folder, str(tmp_path / "checkpoint_000002"), source_filesystem=fs,
                   destination_filesystem=LocalFileSystem())
    assert made == [1] and session.read_checkpoint_dir(str(tmp_path / "checkpoint_000002")) == {"epoch": 3}
    assert fs.get_file_info(folder).type == FileType.NotFound  # nothing left behind in memory
