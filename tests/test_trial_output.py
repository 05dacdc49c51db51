"""What a trial prints (stdout, stderr, warnings, the traceback that ended it) lands on its MLflow
child run as output/trial.log: a real sweep on Ray into the embedded SQLite store, the command's
--show-trial-output, and the artifact's text (its cap, its replay from the journal)."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import hpsearch_process

import hpsearch
from hpsearch.settings import SweepSettings
from hpsearch.storage import Location
from hpsearch.tracking.output import OUTPUT_ARTIFACT, output_text, read_output
from hpsearch.tracking.tracker import SweepTracker
from hpsearch.tracking.writer import spill, sync

SPACE = hpsearch.Space(hpsearch.Choice("who", ["alpha", "beta", "boom"]))

# A space module whose TRAIN prints a line of its own per epoch on stdout and on stderr; "boom"
# prints, warns and fails at its second epoch, after its last report (Ray flushes a trial's files
# at each report, and the rest when it lets the trial go).
CHATTY = '''
import sys
import warnings

import hpsearch

SPACE = hpsearch.Space(hpsearch.Choice("who", ["alpha", "beta", "boom"]))
METRIC, MODE, MAX_EPOCHS = "score", "max", 2


def TRAIN(config):
    who = config["who"]
    for epoch in range(1, 3):
        print(f"stdout of {who} at epoch {epoch}")
        print(f"stderr of {who} at epoch {epoch}", file=sys.stderr)
        if who == "boom" and epoch == 2:
            warnings.warn(f"warning of {who} before its crash")
            raise RuntimeError(f"crash of {who}")
        hpsearch.report(epoch=epoch, score=float(epoch), checkpoint={"epoch": epoch})
'''


@pytest.fixture()
def chatty(tmp_path):
    path = tmp_path / "chatty.py"
    path.write_text(CHATTY)
    return path


def _children(client, result):
    runs = client.search_runs([result.tracking["experiment_id"]],
                              f"tags.`mlflow.parentRunId` = '{result.tracking['parent_run_id']}'")
    return {run.data.params["who"]: run for run in runs}


@pytest.mark.slow
def test_each_trial_run_holds_its_own_output_and_a_failed_ones_traceback(ray_session, mlflow_uri, chatty, tmp_path):
    from mlflow import MlflowClient

    result = hpsearch.sweep(str(chatty), strategy="grid", scheduler="fifo", max_epochs=2, max_failures=0,
                            storage=str(tmp_path / "runs"), experiment="trial-output", progress=False)
    assert sorted(t.status for t in result.trials) == ["completed", "completed", "failed"]
    client = MlflowClient(tracking_uri=mlflow_uri)
    children = _children(client, result)
    assert sorted(children) == ["alpha", "beta", "boom"]
    texts = {}
    for who, run in children.items():
        assert OUTPUT_ARTIFACT in [a.path for a in client.list_artifacts(run.info.run_id, "output")], who
        texts[who] = Path(client.download_artifacts(run.info.run_id, OUTPUT_ARTIFACT, str(tmp_path / who))).read_text()
    for who, text in texts.items():
        for epoch in (1, 2):
            assert f"stdout of {who} at epoch {epoch}" in text, text
            assert f"stderr of {who} at epoch {epoch}" in text, text
        assert not [other for other in children if other != who and f"of {other}" in text], text
        assert ":actor_name:" not in text  # Ray's prefix marks are not the trial's output
        assert "Checkpoint successfully created" not in text  # nor Ray's notice at each checkpointed report
    assert "==> error <==" not in texts["alpha"] and "==> error <==" not in texts["beta"]
    boom = texts["boom"]
    assert "warning of boom before its crash" in boom  # printed after its last report, before the crash
    error = boom.split("==> error <==", 1)[1]
    assert 'in TRAIN\n    raise RuntimeError(f"crash of {who}")\nRuntimeError: crash of boom' in error, error
    assert "\x1b[" not in error  # Ray's colours left out
    # Ray copies the files to each trial's folder in the sweep's storage too (a trial on another node
    # is read from there): each trial's own, up to its last report at least.
    for trial in result.trials:
        who = trial.config["who"]
        stored = (Location(trial.path) / "stdout").read_text()
        assert f"stdout of {who} at epoch 1" in stored and not [o for o in children if o != who and f"of {o}" in stored]


@pytest.mark.slow
def test_show_trial_output_prints_trials_lines_prefixed_by_their_worker(chatty, tmp_path, mlflow_uri):
    proc = hpsearch_process("run", str(chatty), "--strategy", "grid", "--scheduler", "fifo", "--storage",
                            str(tmp_path / "runs"), "--no-progress", "--show-trial-output", "--name", "shown")
    out, err = proc.communicate(timeout=240)
    both = re.sub(r"\x1b\[[0-9;]*m", "", out + err)  # Ray colours its prefix
    assert proc.returncode == 0, both[-3000:]
    for who in ("alpha", "beta", "boom"):
        for stream in ("stdout", "stderr"):
            lines = [line for line in both.splitlines() if f"{stream} of {who} at epoch 1" in line]
            assert lines and all(re.match(r"\(trial_entry pid=\d+\) ", line) for line in lines), both[-3000:]


def test_the_artifact_keeps_each_streams_end_within_its_cap():
    streams = {"stdout": ":actor_name:ImplicitFunc\n" + "".join(f"line {i}\n" for i in range(1000)),
               "stderr": "\x1b[33mw\x1b[0m\n"}
    text = output_text(streams, "Traceback ...\nValueError: x\n", limit=2000)
    assert len(text) < 2100 and ":actor_name:" not in text
    assert text.startswith("==> stdout <==\n[... ") and "line 999\n" in text and "line 0\n" not in text
    assert "==> stderr <==\nw\n" in text and text.endswith("==> error <==\nTraceback ...\nValueError: x\n")
    assert output_text({"stdout": ":actor_name:ImplicitFunc\n", "stderr": ""}) == ""


def test_output_is_read_from_storage_when_the_trial_ran_elsewhere(tmp_path):
    stored = tmp_path / "runs" / "sweep" / "trial_1"
    stored.mkdir(parents=True)
    (stored / "stdout").write_text("from storage\n")
    (stored / "stderr").write_bytes(b"bad byte \xff kept\n")
    here = tmp_path / "working" / "trial_1"  # the working folder of a trial that ran on another node: absent here
    assert read_output(str(here), Location(str(stored))) == {"stdout": "from storage\n", "stderr": "bad byte \ufffd kept\n"}
    here.mkdir(parents=True)
    (here / "stdout").write_text("x" * 50 + "\nthe end\n")  # there whole: read here, its end only
    assert read_output(str(here), Location(str(stored)), limit=8) == {"stdout": "the end\n", "stderr": " \ufffd kept\n"}


def test_an_output_kept_while_mlflow_was_away_is_sent_by_sync(mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.create_experiment(f"trial-output-sync-{tmp_path.name}",
                                            artifact_location=(tmp_path / "artifacts").as_uri())  # not ./mlruns
    run = client.create_run(experiment)
    journal = tmp_path / "pending.jsonl"
    op = {"op": "log_text", "ref": "trial:1", "text": output_text({"stdout": "kept while away\n"}), "file": OUTPUT_ARTIFACT}
    spill(journal, {"tracking_uri": mlflow_uri, "experiment_id": experiment, "parent_run_id": "none",
                    "runs": {"trial:1": run.info.run_id}}, [op])
    assert json.loads(journal.read_text().splitlines()[1])["text"] == op["text"]  # the text itself, not a path
    assert sync(journal) == 1
    logged = client.download_artifacts(run.info.run_id, OUTPUT_ARTIFACT, str(tmp_path / "got"))
    assert Path(logged).read_text() == "==> stdout <==\nkept while away\n"


def test_a_resumed_start_logs_a_continued_trials_output_beside_the_earlier_one(mlflow_uri, tmp_path):
    # Ray starts a continued trial's files anew (a new working folder; its copy in storage replaced),
    # so the resumed start's output of a trial that already has a run goes to a file of its own.
    from mlflow import MlflowClient

    settings = SweepSettings(metric="score", mode="max", max_epochs=2, name="resumed", tracking_uri=mlflow_uri,
                             experiment=f"trial-output-{tmp_path.name}", storage=str(tmp_path / "runs"))

    def trial(trial_id, start, text):
        folder = tmp_path / start / trial_id
        folder.mkdir(parents=True)
        (folder / "stdout").write_text(text)
        return SimpleNamespace(trial_id=trial_id, config={"who": trial_id}), None, str(folder), None

    first = SweepTracker(settings, SPACE)
    assert first.log_outputs([trial("alpha", "first", "alpha in the first start\n")]) == 1
    assert first.writer.close(30) == []
    again = SweepTracker(settings, SPACE)  # the resume: it finds the parent run and alpha's
    assert again.continued
    assert again.log_outputs([trial("alpha", "again", "alpha in the second start\n"),
                              trial("beta", "again", "beta, new in the second start\n")]) == 2
    assert again.writer.close(30) == []
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = again.children

    def texts(who):
        return {a.path: Path(client.download_artifacts(runs[who], a.path, str(tmp_path / "got" / who))).read_text()
                for a in client.list_artifacts(runs[who], "output")}

    alpha = texts("alpha")
    assert alpha.pop(OUTPUT_ARTIFACT) == "==> stdout <==\nalpha in the first start\n"
    [(name, text)] = alpha.items()
    assert re.fullmatch(r"output/trial-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.log", name) and "second start" in text
    assert texts("beta") == {OUTPUT_ARTIFACT: "==> stdout <==\nbeta, new in the second start\n"}
