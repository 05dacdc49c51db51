"""Nightly tuning: config checks, the lock, the verdict arithmetic, and real nights on Ray + MLflow."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import hpsearch_process

from hpsearch import cli, engine
from hpsearch.nightly.config import NightlyConfig, load_config, parse_date
from hpsearch.nightly.ledger import Ledger
from hpsearch.nightly.run import Busy, _lock, run_nightly
from hpsearch.nightly.verdict import judge

TINY = '''
from hpsearch.space import Fixed, Float, PowerOfTwo, Space
SPACE = Space(Fixed("model", "mlp"), Float("lr", 1e-3, 1e-1, log=True), PowerOfTwo("width", 16, 32),
              Fixed("batch_size", 256), Fixed("depth", 1), Fixed("hf_token", "hunter2"))
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 4
DATASET = "mnist1d"
'''

# The same space after a bad change to the training code: labels shuffled, so it learns nothing.
# Its trials first wait for a file ({release}), so a test decides when the night may go on.
BROKEN = TINY + '''
def TRAIN(config, data, max_epochs):
    import dataclasses, os, time
    import numpy as np
    from hpsearch.trial.train import train
    while not os.path.exists({release!r}):
        time.sleep(0.05)
    shuffled = dataclasses.replace(data, y_train=np.random.default_rng(0).permutation(data.y_train))
    train(config, data=shuffled, max_epochs=max_epochs)
'''


# The same space, where the first trial to start trains and every other one waits for a file.
WAITS = '''
def TRAIN(config, data, max_epochs):
    import os, time
    from hpsearch.trial.train import train
    try:
        os.close(os.open({claim!r}, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        while not os.path.exists({never!r}):
            time.sleep(0.05)
    train(config, data=data, max_epochs=max_epochs)
'''


# The same space, where every trial notes that it started ({started}) and then waits for {release}.
HELD = '''
def TRAIN(config, data, max_epochs):
    import os, time
    from hpsearch.trial.train import train
    open({started!r}, "a").close()
    while not os.path.exists({release!r}):
        time.sleep(0.05)
    train(config, data=data, max_epochs=max_epochs)
'''


def _setup(tmp_path, **keys) -> Path:
    (tmp_path / "tiny.py").write_text(TINY)
    values = {"name": "tiny", "space": "tiny.py", "strategy": "tpe", "scheduler": "asha", "trials": 6,
              "storage": "runs", "experiment": f"nightly-{tmp_path.name}", "warm_start": 2, "deadline_hours": 1,
              **keys}
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    (tmp_path / "nightly.toml").write_text(text)
    return tmp_path / "nightly.toml"


# -- config -----------------------------------------------------------------------------------

BAD_CONFIGS = [
    ('name = "x"\n', "space: required in"),
    ('space = "tiny.py"\n', "name: required in"),
    ('name = "x"\nspace = "tiny.py"\ndeadline = 3\n', "config: unknown key 'deadline' in"),
    ('name = "x"\nspace = "tiny.py"\ndeadline_hours = -1\n', "deadline_hours: must be a number > 0, got -1"),
    ('name = "x"\nspace = "tiny.py"\ndeadline_hours = 0\n', "deadline_hours: must be a number > 0, got 0"),
    ('name = "x"\nspace = "tiny.py"\ntrials = "many"\n', "trials: must be a whole number >= 1, got 'many'"),
    ('name = "x"\nspace = "tiny.py"\ntrials = -3\n', "trials: must be a whole number >= 1, got -3"),
    ('name = "x"\nspace = "tiny.py"\nwarm_start = -1\n', "warm_start: must be a whole number >= 0, got -1"),
    ('name = "x"\nspace = "tiny.py"\nhistory = 0\n', "history: must be a whole number >= 1, got 0"),
    ('name = "x"\nspace = "tiny.py"\nregression_threshold = -0.1\n', "regression_threshold: must be a number >= 0, got -0.1"),
    ('name = "bad name"\nspace = "tiny.py"\n', "name: letters, digits and _ . = - only (max 100), got 'bad name'"),
    ('name = "x"\nspace = "tiny.py"\nstrategy = "bayes"\n', "strategy: must be one of grid, random, tpe, got 'bayes'"),
    ('name = "x"\nspace = "nope.py"\n', "space: no such file"),
    ('name = "x"\nspace = "tiny.py"\ntracking_uri = 5\n', "tracking_uri: give a URI such as http://127.0.0.1:5000 or sqlite:///path, or false for none, got 5"),
    ('name = "x"\nspace = "tiny.py"\ngoal = "high"\n', "goal: must be a finite number (the metric's value that ends the sweep), got 'high'"),
    ('name = "x"\nspace = "tiny.py"\ntracking_uri = "http://127.0.0.1:{closed}"\n', "tracking_uri: cannot reach the MLflow server"),
    ('name = "x"\nspace = \n', "config: {toml} is not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD_CONFIGS, ids=[m[:40] for _, m in BAD_CONFIGS])
def test_bad_config_is_one_line_exit_2_and_nothing_started(text, message, tmp_path, monkeypatch, capsys):
    from tests.conftest import free_port

    (tmp_path / "tiny.py").write_text(TINY)
    toml = tmp_path / "n.toml"
    toml.write_text(text.replace("{closed}", str(free_port())))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.setenv("HPSEARCH_STORAGE", str(tmp_path / "runs"))

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(engine, "connect", no_ray)
    with pytest.raises(SystemExit) as e:
        cli.main(["nightly", str(toml)])
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpsearch: error: ")
    assert message.replace("{toml}", str(toml)) in lines[0], lines[0]
    assert not (tmp_path / "store").exists() and not (tmp_path / "runs").exists()


def test_bad_date_is_rejected():
    with pytest.raises(ValueError, match=r"date: must be YYYY-MM-DD, got '22/11/2026'"):
        parse_date("22/11/2026")


def test_paths_in_a_config_are_relative_to_it(tmp_path):
    cfg = load_config(_setup(tmp_path))
    assert cfg.space == str(tmp_path / "tiny.py") and cfg.sweep.storage == str(tmp_path / "runs")


# One field of a cron schedule: a list of *, N or N-M, each with an optional /step.
CRON_ITEM = r"(\*|\d+(-\d+)?)(/\d+)?"
CRON_FIELD = re.compile(rf"{CRON_ITEM}(,{CRON_ITEM})*")
CRON_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]  # minute, hour, day of month, month, weekday


def _cron_jobs(text: str) -> list[tuple[list[str], str]]:
    """The (schedule fields, command) of each job line of a crontab; comments, blank lines and
    ``NAME=value`` settings are not jobs."""
    jobs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or re.match(r"[A-Za-z_]\w*\s*=", line):
            continue
        *schedule, command = line.split(None, 5)
        jobs.append((schedule, command))
    return jobs


def test_shipped_config_and_schedules_agree():
    repo = Path(__file__).resolve().parent.parent
    root = repo / "scripts" / "nightly"
    cfg = load_config(root / "mlp.toml")
    assert Path(cfg.space).name == "mlp.py" and Path(cfg.space).is_file()
    jobs = _cron_jobs((root / "crontab").read_text())
    assert len(jobs) == 1, jobs
    schedule, command = jobs[0]
    assert len(schedule) == 5, schedule
    for field, (low, high) in zip(schedule, CRON_BOUNDS):
        assert CRON_FIELD.fullmatch(field), f"not a cron field: {field!r}"
        numbers = [int(n) for item in field.split(",") for n in re.findall(r"\d+", item.split("/")[0])]
        assert all(low <= n <= high for n in numbers), f"{field!r} outside {low}-{high}"
    assert "%" not in command  # cron turns an unescaped % into a newline
    words = shlex.split(command)
    runs = [i for i, w in enumerate(words[:-2]) if Path(w).name == "hpsearch" and words[i + 1] == "nightly"]
    assert runs, f"the cron job does not run hpsearch nightly: {command}"
    # The line cds into the checkout first, so the config path is relative to the repository.
    config = words[runs[0] + 2]
    assert config.endswith(".toml") and (repo / config).resolve() == root / "mlp.toml", command
    service, timer = (root / "hpsearch-nightly.service").read_text(), (root / "hpsearch-nightly.timer").read_text()
    assert "ExecStart=" in service and "hpsearch nightly" in service and "SuccessExitStatus=3" in service
    assert "Persistent=true" in timer and "OnCalendar=" in timer
    # Kubernetes (scripts/nightly/k8s/): tests/test_k8s.py


# -- the lock ---------------------------------------------------------------------------------

def test_a_second_holder_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    with _lock(tmp_path):
        with pytest.raises(Busy, match="another hpsearch nightly holds .*pid"):
            with _lock(tmp_path):
                pass
    # A process that dies holding the lock (kill -9: no clean-up) leaves no lock behind.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from hpsearch.nightly.run import _lock\n"
        f"with _lock(Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Busy, match=f"pid {holder.pid} "):
        with _lock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with _lock(tmp_path) as stale:
        assert stale is not None and f"pid {holder.pid} " in stale


# -- the verdict ------------------------------------------------------------------------------

def _night(night, best, mode="max", config=None):
    return {"night": night, "status": "done", "metric": "acc", "mode": mode, "sweep": f"s-{night}",
            "best": None if best is None else {"metric": best, "config": config or {"lr": 0.1}, "trial_id": "t",
                                               "reused": False, "source": "x"},
            "counts": {"completed": 1}, "trials_total": 1, "reused_trials": 0, "reused_epochs": 0,
            "trained_epochs": 3, "warm_started": 0, "wall_s": 1.0, "deadline_hit": False}


@pytest.mark.parametrize("history, tonight, mode, kind, code", [
    ([], 0.7, "max", "first", 0),
    ([0.70, 0.72], 0.75, "max", "better", 0),
    ([0.70, 0.72], 0.715, "max", "same", 0),  # 0.005 below the best: within 0.01
    ([0.70, 0.72], 0.70, "max", "worse", 1),  # 0.02 below the best of the nights before
    ([0.90, 0.50, 0.50], 0.52, "max", "better", 0),  # history=2: the 0.90 night is too old to count
    ([0.30, 0.25], 0.27, "min", "worse", 1),  # loss: lower is better
    ([0.70], None, "max", "no-result", 1),
])
def test_verdict(tmp_path, history, tonight, mode, kind, code):
    cfg = NightlyConfig(name="n", space="s", history=2, regression_threshold=0.01)
    ledger = Ledger(tmp_path)
    for i, v in enumerate(history):
        ledger.nights[f"2026-11-0{i + 1}"] = _night(f"2026-11-0{i + 1}", v, mode)
    ledger.nights["2026-11-09"] = _night("2026-11-09", tonight, mode, config={"lr": 0.01})
    verdict = judge(cfg, ledger, "2026-11-09")
    assert (verdict.kind, verdict.exit_code) == (kind, code)
    if kind not in ("first", "no-result"):
        assert "Changed: lr." in verdict.markdown and "Trend: " in verdict.markdown


# -- real nights ------------------------------------------------------------------------------

@pytest.mark.slow
def test_three_nights_warm_start_reuse_resume_regression_and_one_run_at_a_time(tmp_path, ray_session):
    from mlflow import MlflowClient

    toml = _setup(tmp_path)
    cfg = load_config(toml)
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    ledger = lambda: json.loads((tmp_path / "runs" / "tiny.nightly" / "ledger.json").read_text())["nights"]  # noqa: E731

    # Night 1: nothing to compare with.
    one = run_nightly(cfg, parse_date("2026-11-20"), progress=False)
    assert one.exit_code == 0 and one.verdicts["2026-11-20"].kind == "first"
    night1 = ledger()["2026-11-20"]
    assert night1["warm_started"] == 0 and night1["reused_trials"] == 0 and night1["trials_total"] == 6

    # Night 2 starts from night 1's winners and is killed mid-sweep.
    proc = hpsearch_process("nightly", str(toml), "--date", "2026-11-21", "--no-progress", start_new_session=True)
    night2_dir = tmp_path / "runs" / "tiny-2026-11-21"
    until = time.time() + 240
    while time.time() < until and sum(1 for _ in night2_dir.glob("*/result.json")) < 3:
        time.sleep(0.3)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ledger()["2026-11-21"]["status"] == "running"

    # The next start (night 3) resumes night 2 first, then runs night 3.
    three = run_nightly(cfg, parse_date("2026-11-22"), progress=False)
    assert set(three.verdicts) == {"2026-11-21", "2026-11-22"} and three.exit_code == 0
    nights = ledger()
    for night in ("2026-11-21", "2026-11-22"):
        entry = nights[night]
        assert entry["status"] == "done" and entry["warm_started"] == 2 and entry["trials_total"] == 6
        # Night 1's winners were evaluated first and not trained again: their curves were reused.
        night1_hashes = {t["config_hash"] for t in night1["trials"]}
        reused = [t for t in entry["trials"] if t["reused_epochs"]]
        assert entry["reused_trials"] >= 1 and all(t["config_hash"] in night1_hashes for t in reused)
        assert all(t["source"].startswith("tiny-2026-11-2") for t in reused)
        whole = [t for t in reused if t["trained_epochs"] == 0]
        assert len(whole) == entry["reused_trials"] and any(t["epochs"] == 4 for t in whole)
        # In MLflow the reused trials say so; nothing is left RUNNING.
        runs = client.search_runs([client.get_experiment_by_name(cfg.sweep.experiment).experiment_id],
                                  f"tags.`hpsearch.sweep` = 'tiny-{night}'", max_results=50)
        marked = [r for r in runs if r.data.tags.get("hpsearch.reused_from")]
        # (A trial the killed driver started after Ray's last snapshot is not in the resumed
        # experiment: its run ends KILLED, tagged interrupted, and its configuration runs again.)
        lost = [r for r in runs if r.info.status == "KILLED" and r.data.tags.get("hpsearch.status") == "interrupted"]
        assert len(marked) == len(reused) and all(r.info.status == "FINISHED" for r in runs if r not in lost)
        assert all(r.data.tags["hpsearch.trial_id"] not in {t["trial_id"] for t in entry["trials"]} for r in lost)
        parent = next(r for r in runs if r.data.tags.get("hpsearch.role") == "sweep")
        assert parent.data.tags["hpsearch.verdict"] in ("better", "same") and parent.data.tags["hpsearch.night"] == night
        assert "verdict.md" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    # The space's secret is in none of what the nights wrote: ledger, verdicts, MLflow (warm start
    # still worked above: a masked fixed value is taken from the space again).
    folder = tmp_path / "runs" / "tiny.nightly"
    assert "hunter2" not in (folder / "ledger.json").read_text() and '"hf_token": "***"' in (folder / "ledger.json").read_text()
    assert all("hunter2" not in p.read_text() for p in (folder / "verdicts").glob("*.md"))
    runs = client.search_runs([client.get_experiment_by_name(cfg.sweep.experiment).experiment_id], max_results=500)
    assert runs and not any("hunter2" in json.dumps([r.data.params, r.data.tags]) for r in runs)

    # Night 2's trials that Ray had finished before the kill did not run again.
    assert all(len(t["curve"]) == t["epochs"] for t in nights["2026-11-21"]["trials"])

    # Starting night 3 again does no work; it prints the same verdict.
    again = run_nightly(cfg, parse_date("2026-11-22"), progress=False)
    assert again.verdicts == {} and again.exit_code == 0 and "already done" in again.messages[0]

    # Night 4 runs broken training code (a new code version: nothing reused) and is started twice
    # at once, as two timers might: one run, and a non-zero exit for the regression.
    # Whichever takes the night's lock holds it while its first trial waits for `release`: the
    # other start finds the night held, whenever it comes; then the night goes on.
    release = tmp_path / "release"
    (tmp_path / "tiny.py").write_text(BROKEN.format(release=str(release)))
    procs = [hpsearch_process("nightly", str(toml), "--date", "2026-11-23", "--no-progress") for _ in range(2)]
    until = time.time() + 400
    while time.time() < until and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    release.touch()
    results = [(p.wait(timeout=400), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [1, 3], [(c, err[-2000:]) for c, _, err in results]
    busy = next(err for code, _, err in results if code == 3)
    assert "another hpsearch nightly holds" in busy and "nothing done" in busy
    worse = next(out for code, out, _ in results if code == 1)
    assert "WORSE by" in worse and "Changed:" in worse
    night4 = ledger()["2026-11-23"]
    assert night4["verdict"]["kind"] == "worse" and night4["reused_trials"] == 0 and night4["warm_started"] == 2
    assert night4["key"] != nights["2026-11-22"]["key"]
    parents = client.search_runs([client.get_experiment_by_name(cfg.sweep.experiment).experiment_id],
                                 "tags.`hpsearch.sweep` = 'tiny-2026-11-23' and tags.`hpsearch.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].data.tags["hpsearch.verdict"] == "worse"
    assert (tmp_path / "runs" / "tiny.nightly" / "verdicts" / "2026-11-23.md").read_text() in worse


@pytest.mark.slow
def test_the_deadline_stops_running_trials_and_the_night_still_gets_its_verdict(tmp_path, ray_session):
    from mlflow import MlflowClient

    # The first trial to start trains; the others wait for a file nobody writes, so the deadline,
    # not the machine's speed, ends the night: one completed, two stopped running (2 CPUs), the rest
    # never started.
    cfg = load_config(_setup(tmp_path, trials=20, scheduler="fifo", deadline_hours=0.006))  # 21.6 s
    (tmp_path / "tiny.py").write_text(TINY + WAITS.format(claim=str(tmp_path / "claimed"), never=str(tmp_path / "never")))
    outcome = run_nightly(cfg, parse_date("2026-11-20"), progress=False)
    entry = json.loads((tmp_path / "runs" / "tiny.nightly" / "ledger.json").read_text())["nights"]["2026-11-20"]
    assert entry["status"] == "done" and entry["deadline_hit"] and outcome.verdicts["2026-11-20"].kind == "first"
    statuses = [t["status"] for t in entry["trials"]]  # the trials Ray had created; it creates a few ahead
    assert statuses.count("completed") == 1 and statuses.count("stopped") == 2, statuses
    assert set(statuses) <= {"completed", "stopped", "pending"}, statuses
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name(cfg.sweep.experiment).experiment_id],
                              "tags.`hpsearch.role` = 'trial'", max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs)
    cut = [r for r in runs if r.data.tags.get("hpsearch.stopped_by") == "deadline"]
    assert cut and all(int(r.data.tags["hpsearch.epochs"]) < 4 for r in cut), [r.data.tags for r in cut]
    assert len(runs) == sum(1 for s in statuses if s != "pending")


@pytest.mark.slow
def test_sigterm_interrupts_the_night_honestly_and_the_next_start_resumes_it(tmp_path, ray_session):
    from mlflow import MlflowClient

    toml = _setup(tmp_path, trials=4, scheduler="fifo")
    started, release = tmp_path / "started", tmp_path / "release"
    (tmp_path / "tiny.py").write_text(TINY + HELD.format(started=str(started), release=str(release)))
    # SIGTERM to the nightly process alone, as Kubernetes sends it (systemd's default reaches the
    # whole group; the process's own handling is what is tested), once its trials run.
    proc = hpsearch_process("nightly", str(toml), "--date", "2026-11-20", "--no-progress")
    until = time.time() + 240
    while time.time() < until and not started.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert started.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, (out[-2000:], err[-3000:])
    assert "interrupted (SIGTERM): the next start resumes night 2026-11-20" in out, out[-2000:]
    folder = tmp_path / "runs" / "tiny.nightly"
    assert json.loads((folder / "ledger.json").read_text())["nights"]["2026-11-20"]["status"] == "running"
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(f"nightly-{tmp_path.name}").experiment_id
    parent = client.search_runs([experiment], "tags.`hpsearch.role` = 'sweep'")[0]
    assert parent.info.status != "FINISHED" and parent.data.tags.get("hpsearch.stopped_by") == "interrupted"

    # The next start resumes the night and judges it.
    release.touch()
    outcome = run_nightly(load_config(toml), parse_date("2026-11-20"), progress=False)
    assert outcome.exit_code == 0 and outcome.verdicts["2026-11-20"].kind == "first"
    entry = json.loads((folder / "ledger.json").read_text())["nights"]["2026-11-20"]
    assert entry["status"] == "done" and entry["trials_total"] == 4
    assert sorted(t["status"] for t in entry["trials"]) == ["completed"] * 4
    runs = client.search_runs([experiment], max_results=100)
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
