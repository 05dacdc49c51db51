"""hpsearch as a user gets it from `pip install .`: a wheel (not the editable checkout) in a clean
virtual environment, used from a folder with no repository around it.

The wheel is built from this checkout and installed without its dependencies; the environment
reaches them through a .pth line to the test run's own site-packages (a folder named there is not
scanned for .pth files, so the checkout's editable hpsearch stays invisible). Both tests are slow:
building and installing the wheel takes ~15 s.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import requests
from conftest import free_port

from hpsearch.vocab import VERSION

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, hpsearch) of a clean virtual environment with hpsearch installed from a wheel."""
    where = tmp_path_factory.mktemp("installed")
    had_build = (ROOT / "build").exists()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(where / "wheels"), str(ROOT)], check=True, capture_output=True, timeout=300)
    if not had_build:  # setuptools builds in the checkout's build/: leave the checkout as it was
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    env_dir = where / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((where / "wheels").glob("hpsearch-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return python, env_dir / "bin" / "hpsearch"


def _left_with_home(home: str) -> list[str]:
    """The command lines of the processes still running with ``HOME=home`` in their environment."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"HOME={home}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return left


def _clean_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HPSEARCH_", "PYTHON"))}
    env["HOME"] = str(work)  # Ray's results default to ~/ray_results: this test's folder
    return env


@pytest.mark.slow  # building and installing the wheel: ~15 s
def test_the_wheel_holds_the_command_its_version_and_the_example_space(installed, tmp_path):
    python, hpsearch = installed
    env = _clean_env(tmp_path)
    where = subprocess.run([str(python), "-c", "import hpsearch, importlib.metadata as m; "
                            "print(hpsearch.__file__); print(m.version('hpsearch')); print(m.metadata('hpsearch')['License-Expression'])"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(python.parent.parent)) and where[1:] == [VERSION, "Apache-2.0"]
    assert Path(where[0]).with_name("py.typed").exists()
    version = subprocess.run([str(hpsearch), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"hpsearch {VERSION}"
    usage = subprocess.run([str(python), "-m", "hpsearch", "-h"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert usage.returncode == 0 and "Usage: " in usage.stdout and " ui " in usage.stdout and " nightly " in usage.stdout
    plan = subprocess.run([str(hpsearch), "plan", "mlp", "--trials", "9", "--epoch-seconds", "1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    # The bundled space and the curve table shipped beside it (the plan simulates on it).
    assert plan.returncode == 0 and "Simulated on recorded curves (300 configurations" in plan.stdout, plan.stdout + plan.stderr


@pytest.mark.slow
def test_a_sweep_from_the_wheel_lands_where_mlflow_ui_looks_and_hpsearch_ui_opens_it(installed, tmp_path):
    python, hpsearch = installed
    env = _clean_env(tmp_path)
    work = tmp_path / "project"
    work.mkdir()
    run = subprocess.run([str(hpsearch), "run", "mlp", "--trials", "2", "--max-epochs", "2", "--scheduler", "fifo",
                          "--name", "from-wheel", "--no-progress"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Open the UI: hpsearch ui from-wheel" in run.stdout
    # MLflow's own default store in the working folder: `mlflow ui` there shows the sweep.
    store = work / "mlflow.db"
    assert store.exists() and not (work / "mlflow" / "mlflow.db").exists()
    find = ("import mlflow, json; c = mlflow.MlflowClient(); e = c.get_experiment_by_name('hpsearch/mlp'); "
            "r = c.search_runs([e.experiment_id], \"tags.`hpsearch.role` = 'sweep'\"); "
            "print(json.dumps([e.experiment_id, r[0].info.run_id, r[0].info.run_name]))")
    experiment_id, run_id, run_name = json.loads(subprocess.run(
        [str(python), "-c", find], cwd=work, env=env, capture_output=True, text=True, check=True).stdout)
    assert run_name == "from-wheel"

    # hpsearch ui, from another folder: the store comes from the sweep's record.
    port = free_port()
    ui = subprocess.Popen([str(hpsearch), "ui", "from-wheel", "--port", str(port)], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ui.stdout.readline()  # printed once the UI answers
        assert f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}" in line, line + ui.stderr.read()
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        got = requests.get(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
        assert got.status_code == 200 and got.json()["run"]["info"]["run_name"] == "from-wheel"
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            code = ui.wait(timeout=120)  # a hang guard: the UI server shuts down slowly on a busy machine
        except subprocess.TimeoutExpired:
            ui.kill()
            raise
    assert code == 0
    with pytest.raises(requests.ConnectionError):  # the server went with it
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    # and every process it started (uvicorn, MLflow's job runners): none is left with this test's HOME
    assert not _left_with_home(env["HOME"])
