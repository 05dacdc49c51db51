"""Shared fixtures: one real local Ray for the whole session (each start costs seconds)."""

import os
import signal

import pytest

from hpsearch.space import Choice, Fixed, Float, PowerOfTwo, Space

# A suite started in the background by a script (a CI job) inherits SIGINT ignored, and so would
# every command it starts: Python then raises no KeyboardInterrupt at a Ctrl-C, and the tests that
# press one wait in vain. A handler here is reset to the default in each child, as at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A small MLP space on MNIST-1D: 3 lr x 2 width x (adamw + sgd) = 12 grid points; ~20 ms an epoch.
TINY = Space(
    Fixed("model", "mlp"),
    Float("lr", 1e-3, 1e-1, log=True, grid=3),
    PowerOfTwo("width", 16, 32),
    Fixed("batch_size", 256),
    Fixed("depth", 1),
    Choice("optimizer", ["adamw", "sgd"]),
    Float("momentum", 0.8, 0.95, when={"optimizer": "sgd"}, grid=1),
)


# The test files with the longest real sweeps, longest first (their time in a full run, 2026-12-04).
# Two test processes take a file at a time in collection order: started last, a long file would
# run alone at the end while the other process idles.
LONGEST_FIRST = ("test_cli.py", "test_reliability.py", "test_sweep.py", "test_cluster.py", "test_nightly.py",
                 "test_workers.py", "test_tracking.py", "test_install.py", "test_team_store.py", "test_sweep_end.py",
                 "test_readme.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: within a file, as written


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """One embedded SQLite store for the session (creating one runs MLflow's migrations: seconds)."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture(autouse=True)
def _isolated_tracking(mlflow_uri, monkeypatch):
    # Sweeps track by default; in tests they go to the session's store, never the repo's mlflow/.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        # address="local": our own, even if a cluster address was left in /tmp/ray by another run.
        # With the setup hook hpsearch.ray.cluster.connect gives a Ray it starts for multi-worker trials.
        from hpsearch.ray.cluster import repair_cleaner

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"worker_process_setup_hook": repair_cleaner})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mnist1d():
    from hpsearch.trial.data import load_dataset

    return load_dataset("mnist1d")


@pytest.fixture()
def storage(tmp_path):
    return str(tmp_path / "ray_results")


def hpsearch_process(*args, **kw):
    """The ``hpsearch`` command run as its own process (the CLI tests, the kill-and-resume tests):
    stdout and stderr piped as text."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "hpsearch.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_here(capsys, *argv: str) -> tuple[int, str, str]:
    """The ``hpsearch`` command run in this process, on the session's Ray (the ``ray_session``
    fixture; a command run as its own process starts a Ray of its own, seconds each): its exit
    status, stdout and stderr. Where the process itself is the point (a kill, a signal), the tests
    run it as one (``hpsearch_process``)."""
    from hpsearch import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


# Ports the tests pick, below Linux's ephemeral range (32768-60999: what bind(0) and outgoing
# connections take) and above Ray's worker ports (10002-19999) and its client servers' own
# (23000-23999, one a ray:// connection), split between the test processes.
PORTS = (24000, 32000)


def free_port() -> int:
    """A port nothing listens on, from this test process's own share of ``PORTS``: with two test
    processes (pytest-xdist), a port one of them just found free (bind(0), then closed) was often
    the next the other was given, and its server answered where this one expected nothing."""
    import random
    import socket

    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    share = (PORTS[1] - PORTS[0]) // count
    low = PORTS[0] + share * (index % count)
    for _ in range(200):
        port = random.randrange(low, low + share)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: another
            return port
    raise RuntimeError(f"no free port in {low}-{low + share}")


def start_mlflow_server(store, port: int, backend: str | None = None, artifacts: str | None = None,
                        env: dict | None = None):
    """A real `mlflow server` on 127.0.0.1:port over ``store`` (runs in ``backend`` if given, else
    SQLite in ``store``; artifacts in ``artifacts``, a bucket's URI, if given, else in ``store``),
    started by the project's mlflow/serve, in ``env`` if given."""
    import subprocess
    from pathlib import Path


    script = Path(__file__).resolve().parent.parent / "mlflow" / "serve"
    log = open(Path(store) / "server.log", "a")
    extra = (["--backend-store-uri", backend] if backend else []) + \
        (["--artifacts-destination", artifacts] if artifacts else [])
    proc = subprocess.Popen([str(script), "--port", str(port), "--store", str(store), *extra], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    wait_until_answers(proc, uri + "/health", 90, "mlflow server", ok=lambda r: r.status_code == 200,
                       log=lambda: (Path(store) / "server.log").read_text()[-2000:])
    return proc, uri


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a free port of 127.0.0.1, for the whole session."""
    store = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc, uri = start_mlflow_server(store, port)
    yield {"uri": uri, "port": port, "store": store, "proc": proc}
    stop_process_group(proc)


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian's postgresql package puts it."""
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture()
def postgres():
    """A throw-away PostgreSQL server on a free port of 127.0.0.1 (``initdb`` + ``pg_ctl`` in a
    temporary folder, trust authentication, one database ``mlflow``); yields its URI.

    PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user
    (Debian's package creates it), in a folder that user owns."""
    import shutil
    import subprocess
    import tempfile

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server programs not installed (./scripts/test installs them as root)")
    folder = tempfile.mkdtemp(prefix="hpsearch-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), free_port()

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(initdb, "-D", data, "-U", "hpsearch", "--auth=trust", "-E", "UTF8")
    run(pg_ctl, "-D", data, "-l", os.path.join(folder, "server.log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "hpsearch", "mlflow")
        yield f"postgresql://hpsearch@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def start_s3_server(auth: bool = False):
    """A real S3-compatible server (moto in server mode, its own process) on a free port of
    127.0.0.1; ``auth``: it checks credentials (none it knows are valid). Returns (process, endpoint)."""
    import subprocess
    import sys
    from pathlib import Path


    port = free_port()
    env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else {})}
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_answers(proc, endpoint + "/moto-api/", 60, "moto_server")
    return proc, endpoint


def stop_process_group(proc) -> None:
    """Kill a server started in its own session, all of it (mlflow/serve: the script, mlflow,
    uvicorn's workers)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_until_answers(proc, url: str, seconds: float, what: str, ok=lambda response: True, log=lambda: ""):
    """Poll ``url`` until it answers (and ``ok(response)``); a server that exits or stays silent
    for ``seconds`` is killed and raises, with ``log()`` (its output) in the message."""
    import time

    import requests

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if ok(requests.get(url, timeout=2)):
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log()}")
        time.sleep(0.3)
    stop_process_group(proc)
    raise RuntimeError(f"{what} did not answer {url} within {seconds:g} s")


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server for the session with one bucket, ``hpsearch``; yields the
    environment a process needs to use it (endpoint and credentials, as AWS's variables)."""
    import boto3

    proc, endpoint = start_s3_server()
    env = {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="hpsearch")
    yield {"endpoint": endpoint, "bucket": "hpsearch", "env": env}
    stop_process_group(proc)


@pytest.fixture()
def s3(s3_server, monkeypatch):
    """This process uses the session's S3 server (its variables set for the test)."""
    for key, value in s3_server["env"].items():
        monkeypatch.setenv(key, value)
    return s3_server
