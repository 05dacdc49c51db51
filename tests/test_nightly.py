"""Nightly tuning: config checks, the lock, the verdict arithmetic, and real nights on Ray + MLflow."""

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import hpsearch_process, run_here

from hpsearch import cli, engine
from hpsearch.nightly.config import NightlyConfig, load_config, parse_date
from hpsearch.nightly.key import LIBRARIES, ReuseKey, code_parts, reuse_allowed
from hpsearch.nightly.ledger import Ledger
from hpsearch.nightly.outcome import EXIT_BUSY, EXIT_CODES, EXIT_CRASHED, NightlyOutcome, notify
from hpsearch.nightly.run import Busy, _lock, dry_run, run_nightly
from hpsearch.nightly.verdict import EXIT_NO_RESULT, EXIT_OK, EXIT_WORSE, judge
from hpsearch.storage import as_location

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


# The same space, where the first trial to start trains two epochs and every trial waits for a
# file ({never}) before it ends; one that waits from its start says so in {waiting}.
WAITS = '''
def TRAIN(config, data, max_epochs):
    import os, time
    from hpsearch.trial.train import train
    try:
        os.close(os.open({claim!r}, os.O_CREAT | os.O_EXCL))
        train(config, data=data, max_epochs=2)
    except FileExistsError:
        open({waiting!r}, "a").close()
    while not os.path.exists({never!r}):
        time.sleep(0.05)
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
    ('name = "x"\nspace = "tiny.py"\ndata_version = 5\n', "data_version: must be a non-empty string, got 5"),
    ('name = "x"\nspace = "tiny.py"\nreuse = "yes"\n', "reuse: must be true or false, got 'yes'"),
    ('name = "x"\nspace = "tiny.py"\nnotify = "curl http://x"\n',
     "notify: must be a command as a list of strings, e.g. [\"curl\", \"-fsS\", URL], got 'curl http://x'"),
    ('name = "x"\nspace = "tiny.py"\nnotify = ["no-such-program-hpsearch"]\n',
     "notify: no program 'no-such-program-hpsearch' on PATH"),
    ('name = "x"\nspace = "tiny.py"\nnotify = ["./hook.sh"]\n', "notify: './hook.sh' is not an executable file"),
    ('name = "x"\nspace = "tiny.py"\nnotify = ["true"]\nnotify_timeout_s = 0\n',
     "notify_timeout_s: must be a number > 0, got 0"),
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
    assert "ExecStart=" in service and "hpsearch nightly" in service
    assert "Persistent=true" in timer and "OnCalendar=" in timer
    # Kubernetes (scripts/nightly/k8s/): tests/test_k8s.py


def _unit_settings(text: str) -> dict[str, list[str]]:
    """A systemd unit's settings: key -> its values (space-separated lists split), comments left out."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z]+)=(.*)$", line.strip())
        if m:
            out.setdefault(m.group(1), []).extend(m.group(2).split())
    return out


def test_the_systemd_unit_treats_busy_as_success_and_retries_a_crash_not_an_answer():
    unit = _unit_settings((Path(__file__).resolve().parent.parent / "scripts/nightly/hpsearch-nightly.service").read_text())
    assert unit["Type"] == ["oneshot"] and unit["Restart"] == ["on-failure"], unit  # oneshot allows no other
    assert unit["SuccessExitStatus"] == [str(EXIT_BUSY)], unit
    prevent = {int(v) for v in unit["RestartPreventExitStatus"]}
    assert prevent == {EXIT_WORSE, 2, EXIT_NO_RESULT}, prevent  # answers: a retry would give the same one
    assert EXIT_CRASHED not in prevent and 143 not in prevent  # a crash or an interruption is retried
    assert int(unit["StartLimitBurst"][0]) >= 2 and unit["RestartSec"], unit  # a few retries, spaced


@pytest.mark.parametrize("code, mailed", [(0, False), (EXIT_BUSY, False), (EXIT_WORSE, True), (EXIT_NO_RESULT, True),
                                          (EXIT_CRASHED, True), (2, True), (143, True)])
def test_the_cron_line_logs_every_start_and_prints_so_cron_mails_only_a_failure(tmp_path, code, mailed):
    # The crontab's own command, run by /bin/sh as cron runs it, with HOME at a checkout whose
    # hpsearch is a stand-in that prints its arguments and exits with `code`.
    (_, command), = _cron_jobs((Path(__file__).resolve().parent.parent / "scripts/nightly/crontab").read_text())
    venv = tmp_path / "hpsearch" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "hpsearch").write_text(f"#!/bin/sh\necho \"ran $*\"\necho 'the verdict'\nexit {code}\n")
    (venv / "hpsearch").chmod(0o755)
    log = tmp_path / "hpsearch-nightly.log"
    log.write_text("an earlier night\n")
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "SHELL": "/bin/sh"}
    done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == code, (done.stdout, done.stderr)
    # The log keeps every start, appended.
    assert log.read_text() == "an earlier night\nran nightly scripts/nightly/mlp.toml --no-progress\nthe verdict\n"
    printed = done.stdout + done.stderr  # what cron would mail
    if mailed:
        assert f"exited with status {code}" in printed and "the verdict" in printed, printed
    else:
        assert printed == "", printed


# -- exit codes, the reuse key, notify: pure logic and local processes --------------------------

def test_each_outcome_has_its_own_exit_code_and_the_help_and_docs_say_them(capsys):
    assert sorted(EXIT_CODES) == [0, 1, 2, 3, 4, 5, 130, 143]
    assert (EXIT_OK, EXIT_WORSE, EXIT_NO_RESULT, EXIT_CRASHED, EXIT_BUSY) == (0, 1, 3, 4, 5)
    with pytest.raises(SystemExit) as e:
        cli.main(["nightly", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("0 fine", "1 regression", "2 bad input", "3 no result", "4 crashed", "5 another copy",
                  "130 / 143", "--dry-run", "--force"):
        assert words in text, words
    from hpsearch.nightly import outcome

    doc = outcome.__doc__
    for code, (word, _) in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s", doc, re.M), f"the module docstring's table lacks {code} ({word})"


def test_the_code_version_counts_hpsearch_and_the_libraries_a_trial_depends_on(tmp_path):
    module = tmp_path / "tiny.py"
    module.write_text(TINY)
    cfg = NightlyConfig(name="n", space=str(module))
    parts = code_parts(cfg, str(module))
    for lib in ("torch", "ray", "optuna", "mlflow", "numpy"):
        assert lib in LIBRARIES and parts[lib] == importlib.metadata.version(lib), (lib, parts)
    assert parts["hpsearch"] == importlib.metadata.version("hpsearch") == parts["hpsearch.installed"]
    assert re.fullmatch(r"[0-9a-f]{12}", parts["hpsearch.trial"]) and "space" in parts
    module.write_text(TINY + "\n# a change\n")
    assert code_parts(cfg, str(module))["space"] != parts["space"]
    # A configured code_version stands for the module and git, not for hpsearch or the libraries.
    pinned = code_parts(NightlyConfig(name="n", space=str(module), code_version="v1"), str(module))
    assert pinned["code_version"] == "v1" and "space" not in pinned and pinned["torch"] == parts["torch"]


def _key(data="none", data_version="none"):
    return ReuseKey(epochs=4, data=data, data_version=data_version, code="c0de", code_parts={})


@pytest.mark.parametrize("reuse, key, allowed", [
    (None, _key(data="abc"), True),  # a dataset's hash
    (None, _key(data_version="v1"), True),  # a TRAIN with its own data, and a data_version
    (None, _key(), False),  # its own data, no version: new data would go unnoticed
    (True, _key(), True),  # the config says the data never changes
    (False, _key(data="abc", data_version="v1"), False),
])
def test_reuse_is_on_only_where_the_data_is_known_or_the_config_says(reuse, key, allowed):
    ok, why = reuse_allowed(NightlyConfig(name="n", space="s", reuse=reuse), key)
    assert ok is allowed and (ok or why)
    assert str(_key(data_version="v1")) != str(_key(data_version="v2"))  # the version is in the key


@contextmanager
def _http_server():
    """A local HTTP server in a thread: yields its URL and the list of (path, headers, body) it got."""
    received: list[tuple[str, dict, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            received.append((self.path, dict(self.headers), body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


# A notify command: POST the outcome (every HPSEARCH_ variable) and the verdict file, as JSON.
POST = ("import json, os, sys, urllib.request\n"
        "body = {k: v for k, v in os.environ.items() if k.startswith('HPSEARCH_')}\n"
        "path = os.environ['HPSEARCH_VERDICT']\n"
        "body['markdown'] = open(path).read() if path else ''\n"
        "request = urllib.request.Request(sys.argv[1], json.dumps(body).encode(), {'Content-Type': 'application/json'})\n"
        "urllib.request.urlopen(request, timeout=30).read()\n")


def test_notify_posts_the_outcome_and_its_failure_or_timeout_is_only_a_warning(tmp_path):
    warnings: list[str] = []
    outcome = NightlyOutcome(EXIT_CRASHED, {}, {}, [], errors={"2026-11-20": "OSError: disk full"})
    folder = as_location(tmp_path)
    with _http_server() as (url, received):
        cfg = NightlyConfig(name="n", space="s", notify=[sys.executable, "-c", POST, url + "/hook"])
        assert notify(cfg, outcome, "2026-11-20", folder, warnings.append) and outcome.notified
        (path, _, body), = received
        sent = json.loads(body)
        assert path == "/hook" and warnings == []
        assert (sent["HPSEARCH_EXIT_CODE"], sent["HPSEARCH_OUTCOME"], sent["HPSEARCH_NIGHT"], sent["HPSEARCH_NIGHTLY"]) \
            == ("4", "crashed", "2026-11-20", "n")
        assert sent["HPSEARCH_ERROR"] == "OSError: disk full" and sent["HPSEARCH_VERDICT"] == "" and sent["markdown"] == ""
        curl = shutil.which("curl")
        if curl:  # the same through curl, as a webhook usually is
            cfg = NightlyConfig(name="n", space="s", notify=[
                "sh", "-c", 'curl -fsS -H "X-Outcome: $HPSEARCH_OUTCOME" --data "code=$HPSEARCH_EXIT_CODE" "$0"', url + "/c"])
            assert notify(cfg, outcome, "2026-11-20", folder, warnings.append)
            assert received[-1][0] == "/c" and received[-1][1]["X-Outcome"] == "crashed" and received[-1][2] == "code=4"
    # A command that fails, one that cannot start, one that hangs: a warning line each, nothing raised.
    for command, says in [([sys.executable, "-c", "import sys; sys.exit('webhook said 500')"], "exited with status 1: webhook said 500"),
                          ([str(tmp_path / "gone")], "cannot run"),
                          (["sh", "-c", "sleep 600 & wait"], "did not finish within 0.3 s")]:
        cfg = NightlyConfig(name="n", space="s", notify=command, notify_timeout_s=0.3)
        assert notify(cfg, outcome, "2026-11-20", folder, warnings.append) is False
        assert len(warnings) == 1 and says in warnings[0] and warnings[0].startswith("hpsearch nightly: warning: notify"), warnings
        warnings.clear()


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folders``: (size, mtime_ns), to see that nothing was written."""
    out = {}
    for folder in folders:
        for p in [folder, *folder.rglob("*")] if folder.exists() else []:
            st = p.stat()
            out[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def test_a_dry_run_checks_everything_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def no_ray(*a, **k):
        raise AssertionError("Ray was started by a dry run")

    monkeypatch.setattr(engine, "connect", no_ray)
    toml = _setup(tmp_path, tracking_uri="sqlite:///store/deep/mlflow.db")
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["nightly", str(toml), "--date", "2026-11-20", "--dry-run"])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    assert _snapshot(tmp_path) == before  # no storage, no ledger, no lock, no SQLite store or its folder
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store").exists()
    assert "Dry run of night 2026-11-20" in out and "sweep tiny-2026-11-20" in out
    assert f"seed {load_config(toml).sweep.seed + parse_date('2026-11-20').toordinal()}" in out
    assert re.search(r"reuse key: epochs=4 data=[0-9a-f]{12} data_version=none code=[0-9a-f]{12}", out), out
    assert "torch " + importlib.metadata.version("torch") in out and "warm start: 0 earlier winners" in out
    assert re.search(r"plan: 6 trials, up to \d+ epochs \(24 if every trial ran all 4\)", out), out
    # The checks a start makes, e.g. a tracking server that does not answer: one line, exit 2.
    from tests.conftest import free_port

    with pytest.raises(SystemExit) as e:
        cli.main(["nightly", str(_setup(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "tracking_uri: cannot reach the MLflow server" in err[0], err


@pytest.mark.parametrize("module, message", [
    ("DATA_VERSION = 5\n", "data_version: DATA_VERSION must be a non-empty string or a function returning one, got 5 in"),
    ("DATA_VERSION = ''\n", "data_version: DATA_VERSION must be a non-empty string or a function returning one, got '' in"),
    ("def DATA_VERSION():\n    raise OSError('the table is not there')\n",
     "data_version: DATA_VERSION() in '{path}' raised OSError: the table is not there"),
    ("def DATA_VERSION():\n    return None\n", "data_version: DATA_VERSION() must return a non-empty string, got None in"),
])
def test_a_bad_data_version_in_the_space_module_is_one_line_exit_2(tmp_path, monkeypatch, capsys, module, message):
    def no_ray(*a, **k):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(engine, "connect", no_ray)
    toml = _setup(tmp_path)
    (tmp_path / "tiny.py").write_text(TINY + module)
    for extra in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["nightly", str(toml), *extra])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert e.value.code == 2 and len(err) == 1, err
        assert err[0].startswith("hpsearch: error: " + message.format(path=tmp_path / "tiny.py")[:40]), err
        assert message.format(path=tmp_path / "tiny.py") in err[0], err
    assert not (tmp_path / "runs").exists()
    # The config's data_version wins: the module's function is not called.
    (tmp_path / "tiny.py").write_text(TINY + "def DATA_VERSION():\n    raise OSError('not called')\n")
    plan = dry_run(load_config(_setup(tmp_path, data_version="2026-11")), parse_date("2026-11-20"), log=lambda m: None)
    assert plan.key.data_version == "2026-11"


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
    ([0.70], None, "max", "no-result", 3),
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
def test_three_nights_warm_start_reuse_resume_regression_and_one_run_at_a_time(tmp_path, ray_session, capsys):
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
    # at once, as two timers might: one run, and a non-zero exit for the regression. One start is a
    # process of its own, the other runs here, on the session's Ray (a second process would start
    # a Ray of its own, seconds of CPU, when it wins). Whichever takes the night's lock holds it while
    # its first trial waits for `release`: the other start finds the night held, whenever it comes,
    # and returns; then the night goes on.
    release = tmp_path / "release"
    (tmp_path / "tiny.py").write_text(BROKEN.format(release=str(release)))
    capsys.readouterr()  # what the nights before printed
    rival = hpsearch_process("nightly", str(toml), "--date", "2026-11-23", "--no-progress")
    here_done = threading.Event()

    def release_once_one_returned():
        until = time.time() + 400
        while time.time() < until and rival.poll() is None and not here_done.is_set():
            time.sleep(0.1)
        release.touch()

    releaser = threading.Thread(target=release_once_one_returned, daemon=True)
    releaser.start()
    try:
        here = run_here(capsys, "nightly", str(toml), "--date", "2026-11-23", "--no-progress")
    finally:
        here_done.set()
        releaser.join()
    results = [here, (rival.wait(timeout=400), *rival.communicate())]
    codes = sorted(code for code, _, _ in results)
    assert codes == [1, 5], [(c, err[-2000:]) for c, _, err in results]
    busy = next(err for code, _, err in results if code == 5)
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
def test_the_deadline_stops_running_trials_and_the_night_still_gets_its_verdict(tmp_path, ray_session, monkeypatch):
    from hpsearch.ray import stopper
    from mlflow import MlflowClient

    # The first trial to start trains two of its four epochs, then waits; every other one waits
    # from its start. No trial ends, so both CPUs stay busy. The clock the sweep's stopper reads
    # passes the night's deadline once the driver has taken a result in and the second trial
    # waits: the two running trials are stopped, the rest never start, whatever the machine's speed.
    seen_result = threading.Event()
    stop_on_result = stopper.SweepStop.__call__

    def on_result(self, trial_id, result):
        if "val_acc" in result:
            seen_result.set()
        return stop_on_result(self, trial_id, result)

    class NightClock:
        @staticmethod
        def time():
            late = seen_result.is_set() and (tmp_path / "waiting").exists()
            return time.time() + (2 * 3600 if late else 0)

    monkeypatch.setattr(stopper.SweepStop, "__call__", on_result)
    monkeypatch.setattr(stopper, "time", NightClock)
    cfg = load_config(_setup(tmp_path, trials=20, scheduler="fifo", deadline_hours=1))
    (tmp_path / "tiny.py").write_text(TINY + WAITS.format(claim=str(tmp_path / "claimed"), waiting=str(tmp_path / "waiting"),
                                                          never=str(tmp_path / "never")))
    outcome = run_nightly(cfg, parse_date("2026-11-20"), progress=False)
    entry = json.loads((tmp_path / "runs" / "tiny.nightly" / "ledger.json").read_text())["nights"]["2026-11-20"]
    assert entry["status"] == "done" and entry["deadline_hit"] and outcome.verdicts["2026-11-20"].kind == "first"
    statuses = [t["status"] for t in entry["trials"]]  # the trials Ray had created; it creates a few ahead
    assert statuses.count("stopped") == 2 and set(statuses) == {"stopped", "pending"}, statuses
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

    # Three trials on two CPUs: at the signal two are running (held) and one has not started.
    toml = _setup(tmp_path, trials=3, scheduler="fifo")
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
    assert entry["status"] == "done" and entry["trials_total"] == 3
    assert sorted(t["status"] for t in entry["trials"]) == ["completed"] * 3
    runs = client.search_runs([experiment], max_results=100)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)  # the parent and its 3 trials


# A space whose TRAIN loads its own data (no DATASET, so no data hash); what the data is, is the
# file {version!r} (a stand-in for a table's last update), read by DATA_VERSION.
OWN_DATA = '''
from pathlib import Path
from hpsearch.space import Fixed, Float, PowerOfTwo, Space
SPACE = Space(Fixed("model", "mlp"), Float("lr", 1e-3, 1e-1, log=True), PowerOfTwo("width", 16, 32),
              Fixed("batch_size", 256), Fixed("depth", 1))
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 2


def DATA_VERSION():
    return Path({version!r}).read_text().strip()


def TRAIN(config, max_epochs):
    from hpsearch.trial.data import load_dataset
    from hpsearch.trial.train import train
    train(config, data=load_dataset("mnist1d"), max_epochs=max_epochs)
'''


@pytest.mark.slow
def test_own_data_a_new_data_version_trains_again_a_dry_run_writes_nothing_and_force_reruns(tmp_path, ray_session):
    version = tmp_path / "data-version"
    version.write_text("2026-11-19\n")
    toml = _setup(tmp_path, trials=3, scheduler="fifo", warm_start=1)
    (tmp_path / "tiny.py").write_text(OWN_DATA.format(version=str(version)))
    cfg = load_config(toml)
    folder = tmp_path / "runs" / "tiny.nightly"
    ledger = lambda: json.loads((folder / "ledger.json").read_text())  # noqa: E731
    quiet = lambda m: None  # noqa: E731

    one = run_nightly(cfg, parse_date("2026-11-20"), progress=False)
    assert one.exit_code == 0 and one.verdicts["2026-11-20"].kind == "first"
    night1 = ledger()["nights"]["2026-11-20"]
    assert night1["key_parts"]["data"] == "none" and night1["key_parts"]["data_version"] == "2026-11-19"
    assert night1["trials_total"] == 3 and night1["reuse"] is True

    # A dry run with the same data: night 1's winner would be replayed, not trained; nothing written.
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    before = _snapshot(tmp_path / "runs", store)
    same = dry_run(cfg, parse_date("2026-11-21"), log=quiet)
    assert (same.action, same.reusable, len(same.warm_start), same.warm_replayed) == ("run", 3, 1, 1)
    assert str(same.key) == night1["key"] and same.sweep == "tiny-2026-11-21" and same.trials == 3
    # New data: the same dry run says every trial trains; so does reuse = false.
    version.write_text("2026-11-20\n")
    new = dry_run(cfg, parse_date("2026-11-21"), log=quiet)
    assert (new.reusable, len(new.warm_start), new.warm_replayed) == (0, 1, 0) and new.key.data_version == "2026-11-20"
    off = dry_run(load_config(_setup(tmp_path, trials=3, scheduler="fifo", warm_start=1, reuse=False)),
                  parse_date("2026-11-21"), log=quiet)
    assert off.reuse is False and off.reusable == 0
    (tmp_path / "tiny.py").write_text(OWN_DATA.format(version=str(version)))  # _setup wrote TINY there
    assert _snapshot(tmp_path / "runs", store) == before  # no ledger change, no lock, no sweep folder, no MLflow write
    assert not (tmp_path / "runs" / "tiny-2026-11-21").exists()

    # Night 2 on the new data: the warm-start winner is evaluated first, and trained, not replayed.
    two = run_nightly(cfg, parse_date("2026-11-21"), progress=False)
    assert two.exit_code in (0, 1), two.messages
    night2 = ledger()["nights"]["2026-11-21"]
    assert night2["warm_started"] == 1 and night2["reused_trials"] == 0 and night2["reused_epochs"] == 0
    assert night2["trained_epochs"] == 6 and night2["key"] != night1["key"]

    # Starting night 2 again does nothing; --force runs it again under a new name and keeps the first run.
    again = run_nightly(cfg, parse_date("2026-11-21"), progress=False)
    assert again.verdicts == {} and "already done" in again.messages[0]
    forced = run_nightly(cfg, parse_date("2026-11-21"), force=True, progress=False)
    assert set(forced.verdicts) == {"2026-11-21"} and forced.exit_code in (0, 1)
    saved = ledger()
    rerun = saved["nights"]["2026-11-21"]
    assert rerun["sweep"] == "tiny-2026-11-21-r2" and rerun["status"] == "done" and rerun["trials_total"] == 3
    (old,) = saved["superseded"]
    assert old["sweep"] == "tiny-2026-11-21" and old["superseded_reason"] == "--force" and old["trials"] == night2["trials"]
    assert old["verdict_markdown"].startswith("# tiny, night of 2026-11-21")
    assert (tmp_path / "runs" / "tiny-2026-11-21").is_dir() and (tmp_path / "runs" / "tiny-2026-11-21-r2").is_dir()
    assert "tiny-2026-11-21-r2" in (folder / "verdicts" / "2026-11-21.md").read_text()
    # The verdict of the rerun compares with night 1 only, never with the run it replaced.
    assert forced.verdicts["2026-11-21"].reference_night == "2026-11-20"


# A space whose TRAIN never reports the metric: it finds nothing to train on and returns. (Ray Tune's
# strict metric check then ends the sweep with an error; no trial reported the metric: no result.)
NO_METRIC = TINY + '''
def TRAIN(config, max_epochs):
    return None
'''


@pytest.mark.slow
def test_no_result_exits_3_and_the_notify_command_reaches_a_local_http_server(tmp_path, ray_session):
    with _http_server() as (url, received):
        toml = _setup(tmp_path, trials=2, scheduler="fifo", max_epochs=1, notify=[sys.executable, "-c", POST, url])
        (tmp_path / "tiny.py").write_text(NO_METRIC)
        outcome = run_nightly(load_config(toml), parse_date("2026-11-20"), progress=False)
        assert outcome.exit_code == EXIT_NO_RESULT == 3 and outcome.verdicts["2026-11-20"].kind == "no-result"
        assert outcome.notified
        (_, _, body), = received
    sent = json.loads(body)
    verdict = tmp_path / "runs" / "tiny.nightly" / "verdicts" / "2026-11-20.md"
    assert (sent["HPSEARCH_EXIT_CODE"], sent["HPSEARCH_OUTCOME"], sent["HPSEARCH_VERDICT_KIND"]) == ("3", "no-result", "no-result")
    assert sent["HPSEARCH_VERDICT"] == str(verdict) and sent["markdown"] == verdict.read_text()
    assert "NO RESULT" in sent["markdown"] and sent["HPSEARCH_NIGHT"] == "2026-11-20"
    # Ray Tune ended the sweep on its metric check: the ledger says so, without the space's secret.
    entry = json.loads((tmp_path / "runs" / "tiny.nightly" / "ledger.json").read_text())["nights"]["2026-11-20"]
    assert entry["status"] == "done" and entry["verdict"]["exit_code"] == 3 and "val_acc" in entry["error"]
    assert "hunter2" not in (tmp_path / "runs" / "tiny.nightly" / "ledger.json").read_text()


# A space whose trials, while a file {broken} exists, put a file where the nightly's verdicts folder
# goes: the storage stops taking the verdict half-way through the night, a crash that is no user error.
CRASHES = TINY + '''
def TRAIN(config, data, max_epochs):
    import os
    from hpsearch.trial.train import train
    if os.path.exists({broken!r}):
        open({verdicts!r}, "w").close()
    train(config, data=data, max_epochs=max_epochs)
'''


@pytest.mark.slow
def test_a_crash_is_recorded_said_in_one_line_exit_4_and_the_next_start_finishes_the_night(tmp_path, ray_session,
                                                                                          capsys):
    folder = tmp_path / "runs" / "tiny.nightly"
    broken = tmp_path / "broken"
    broken.touch()
    toml = _setup(tmp_path, trials=2, scheduler="fifo", max_epochs=1)
    (tmp_path / "tiny.py").write_text(CRASHES.format(broken=str(broken), verdicts=str(folder / "verdicts")))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(["nightly", str(toml), "--date", "2026-11-20", "--no-progress"])
    assert e.value.code == EXIT_CRASHED == 4
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("hpsearch nightly")]
    assert said == [f"hpsearch nightly: night 2026-11-20 crashed: FileExistsError: [Errno 17] File exists: "
                    f"'{folder / 'verdicts'}'"], err[-3000:]
    assert "Traceback" not in err
    entry = json.loads((folder / "ledger.json").read_text())["nights"]["2026-11-20"]
    assert entry["status"] == "crashed" and entry["error"] == said[0].split("crashed: ", 1)[1] and entry["exit_code"] == 4
    assert entry["trials_total"] == 2  # what the night did is recorded, though its verdict could not be written

    # The storage takes writes again: the next start for that night resumes it (nothing trains
    # again: Ray had finished its trials) and judges it.
    broken.unlink()
    (folder / "verdicts").unlink()
    outcome = run_nightly(load_config(toml), parse_date("2026-11-20"), progress=False)
    assert outcome.exit_code == 0 and outcome.verdicts["2026-11-20"].kind == "first", outcome.messages
    assert "crashed before (FileExistsError" in outcome.messages[0]
    entry = json.loads((folder / "ledger.json").read_text())["nights"]["2026-11-20"]
    assert entry["status"] == "done" and entry["sweep"] == "tiny-2026-11-20" and entry["trials_total"] == 2
    assert entry["crashes"][0]["error"].startswith("FileExistsError") and "error" not in entry


# -- the nightly tunes its scheduler ----------------------------------------------------------

def _inject_nights(tmp_path, curve, nights=("2026-11-20", "2026-11-21"), per_night=12) -> None:
    """Done nights in the ledger, each with ``per_night`` whole curves of the tiny space (``curve(q)``:
    a value per epoch for a configuration of quality q in [0, 1])."""
    from hpsearch.space.modules import load_space_module
    from hpsearch.text import mask_config

    space = load_space_module(str(tmp_path / "tiny.py")).space
    ledger = Ledger(as_location(tmp_path / "runs" / "tiny.nightly"))
    for n, night in enumerate(nights):
        trials = []
        for i, config in enumerate(space.sample(per_night, seed=n)):
            values = curve(((i * 7 + n * 3) % per_night) / (per_night - 1))
            trials.append({"trial_id": f"{n}-{i}", "config": mask_config(config), "config_hash": space.config_hash(config),
                           "status": "completed", "epochs": len(values), "metric": values[-1], "reused_epochs": 0,
                           "trained_epochs": len(values), "checkpoint": None, "source": f"injected-{night}/{i}",
                           "curve": [{"epoch": e + 1, "val_acc": v} for e, v in enumerate(values)]})
        best = max(trials, key=lambda t: t["metric"])
        ledger.nights[night] = {"night": night, "name": "tiny", "sweep": f"tiny-{night}", "status": "done",
                                "key": "injected", "metric": "val_acc", "mode": "max", "trials": trials,
                                "best": {"metric": best["metric"], "config": best["config"], "trial_id": best["trial_id"]}}
    ledger.save()


@pytest.mark.slow
def test_the_third_night_adopts_the_reduction_factor_its_recorded_curves_favour(tmp_path, ray_session):
    from mlflow import MlflowClient

    # Two nights recorded whose first epoch says nothing of a configuration's end (the later ones
    # do): the fewer ASHA cuts at its first rung, the better the best it keeps. Nine epochs, 24 trials.
    cfg = load_config(_setup(tmp_path, grace_period=1, trials=24, max_epochs=9))  # the grace period is named: kept
    _inject_nights(tmp_path, lambda q: [((q * 7.3) % 1) * 0.3] + [0.1 + 0.3 * q * (e / 9) ** 0.3 for e in range(2, 10)])
    outcome = run_nightly(cfg, parse_date("2026-11-22"), progress=False)
    assert outcome.exit_code in (EXIT_OK, EXIT_WORSE), outcome.messages  # the verdict is not what is tested
    entry = json.loads((tmp_path / "runs" / "tiny.nightly" / "ledger.json").read_text())["nights"]["2026-11-22"]
    found = re.match(r"Scheduler: reduction factor 3 -> (\d) adopted \(simulated on 24 whole curves of 2 earlier night\(s\), "
                     r"30 seeds: best val_acc \+", entry["scheduler"])
    assert found and found.group(1) != "3", entry["scheduler"]
    verdict = (tmp_path / "runs" / "tiny.nightly" / "verdicts" / "2026-11-22.md").read_text()
    assert f"- {entry['scheduler']}" in verdict
    parent = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).get_run(entry["parent_run_id"])
    assert float(parent.data.params["reduction_factor"]) == float(found.group(1))
    assert parent.data.params["grace_period"] == "1"
    assert entry["scheduler"] in parent.data.tags["mlflow.note.content"]
    # TPE started from all 24 earlier trials (not only the 2 warm-start winners), and says so.
    assert entry["tpe_told"] == 24 and parent.data.tags["hpsearch.tpe_told"] == "24"
    assert "TPE starts from 24 trials of 2 earlier night(s)" in "\n".join(outcome.messages)
    assert "TPE told of 24 earlier trials before its first" in verdict


def test_with_flat_curves_the_nightly_keeps_its_scheduler(tmp_path):
    cfg = load_config(_setup(tmp_path))
    _inject_nights(tmp_path, lambda q: [0.5, 0.6, 0.7, 0.8])
    plan = dry_run(cfg, parse_date("2026-11-22"), log=lambda line: None)
    line = next(x for x in plan.lines if "Scheduler:" in x)
    assert line.startswith("- Scheduler: grace period 1, reduction factor 3 kept (simulated on 24 whole curves of 2 "
                           "earlier night(s), 30 seeds: the best alternative"), line
    assert "within the seeds' noise" in line and "scheduler asha" in plan.lines[1], plan.lines


def test_tpe_is_told_every_earlier_trial_as_finished_without_running_it(tmp_path):
    from optuna.trial import TrialState

    from hpsearch.nightly.ledger import earlier_trials
    from hpsearch.ray import compat
    from hpsearch.ray.searchers import make_search_alg
    from hpsearch.space.modules import load_space_module

    _setup(tmp_path)
    _inject_nights(tmp_path, lambda q: [0.2 + 0.1 * q, 0.3 + 0.2 * q, 0.3 + 0.3 * q, 0.3 + 0.4 * q])
    ledger = Ledger(as_location(tmp_path / "runs" / "tiny.nightly"))
    night = ledger.nights["2026-11-21"]
    night["trials"][0].update(status="stopped", epochs=2, metric=0.3, curve=night["trials"][0]["curve"][:2])
    night["trials"][1].update(status="failed", metric=None)
    night["trials"][2].update(status="pending", metric=None, curve=[])
    ledger.save()
    space = load_space_module(str(tmp_path / "tiny.py")).space
    told = earlier_trials(Ledger(ledger.folder), "2026-11-22", space, "val_acc")
    assert len(told) == 24 and {t["night"] for t in told} == {"2026-11-20", "2026-11-21"}
    searcher = make_search_alg("tpe", space, "val_acc", "max", 6, 0, max_epochs=4, told=told)
    trials = compat.optuna_study(searcher).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert len(trials) == 23  # the pending one never ran: nothing to tell
    assert states.count(TrialState.PRUNED) == 1 and states.count(TrialState.FAIL) == 1
    assert states.count(TrialState.COMPLETE) == 21
    pruned = next(t for t in trials if t.state == TrialState.PRUNED)
    assert sorted(pruned.intermediate_values) == [1, 2] and pruned.value is None
    assert all(set(t.params) == {"lr", "width"} and t.user_attrs["hpsearch.told"].startswith("2026-11-2") for t in trials)
    suggested = searcher.suggest("new")  # and it goes on suggesting, from what it was told
    assert set(space.validate_config(suggested)) >= {"lr", "width"}
