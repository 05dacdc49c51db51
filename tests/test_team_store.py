"""The team set-up run for real: PostgreSQL behind a real `mlflow server`, two sweeps at once into
it, one of them killed and resumed; nothing lost, nothing recorded twice."""

import os
import signal
import time

import pytest
from conftest import free_port, hpsearch_process, run_here, start_mlflow_server, stop_process_group

from hpsearch.engine import default_experiment
from hpsearch.results import read_results

EPOCHS = 4  # the kill lands a few epochs into team-a; every epoch once is as checkable at 4
TRIALS = 4  # 2 lr x 2 width; the kill lands in the first, three more run after it
MODULE = f'''
from hpsearch.space import Fixed, Float, PowerOfTwo, Space
SPACE = Space(Fixed("model", "mlp"), Float("lr", 1e-3, 1e-1, log=True, grid=2), PowerOfTwo("width", 16, 32),
              Fixed("batch_size", 32), Fixed("depth", 1))
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = {EPOCHS}
DATASET = "mnist1d"
'''


@pytest.mark.slow
def test_two_sweeps_and_a_kill_and_resume_into_postgres_behind_mlflow_server(postgres, tmp_path, ray_session, capsys):
    from mlflow import MlflowClient

    store = tmp_path / "server"
    store.mkdir()
    server, uri = start_mlflow_server(store, free_port(), backend=postgres)
    try:
        module = tmp_path / "team.py"
        module.write_text(MODULE)
        storage = tmp_path / "runs"
        common = ["--strategy", "grid", "--scheduler", "fifo", "--concurrency", "1", "--tracking-uri", uri,
                  "--storage", str(storage), "--no-progress", "--checkpoint-every", "1s"]
        killed = hpsearch_process("run", str(module), *common, "--name", "team-a", start_new_session=True)
        other = hpsearch_process("run", str(module), *common, "--name", "team-b")
        deadline = time.time() + 300
        while time.time() < deadline and not any(len(p.read_text().splitlines()) > 2
                                                  for p in storage.glob("team-a/*/result.json")):
            time.sleep(0.3)  # team-a is a few epochs into a trial
        assert killed.poll() is None, "team-a finished before the kill"
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        out, err = other.communicate(timeout=600)
        assert other.returncode == 0, err[-3000:]
        # Two processes at once and the kill are the point; the resume runs here, on the session's Ray.
        code, out, err = run_here(capsys, "resume", "team-a", "--storage", str(storage), "--no-progress")
        assert code == 0, err[-3000:]
        assert f"team-a: {TRIALS} trials" in out

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(default_experiment(module))
        for name in ("team-a", "team-b"):
            runs = client.search_runs([exp.experiment_id], f"tags.`hpsearch.sweep` = '{name}'", max_results=100)
            parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "sweep"]
            children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
            assert len(parents) == 1 and parents[0].info.status == "FINISHED", name
            assert len(children) == TRIALS and len({c.data.tags["hpsearch.trial_id"] for c in children}) == TRIALS, name
            assert all(r.info.status == "FINISHED" for r in runs), name
            for child in children:  # every epoch once: none lost to the kill, none written twice
                steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_acc"))
                assert steps == list(range(1, EPOCHS + 1)), (name, child.data.tags["hpsearch.trial_id"], steps)
            for path in storage.glob(f"{name}/*/result.json"):  # and Ray trained every trial to the end
                assert {int(r["epoch"]) for r in read_results(path.parent)} == set(range(1, EPOCHS + 1))
    finally:
        stop_process_group(server)
