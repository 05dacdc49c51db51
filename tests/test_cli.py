"""The hpsearch command: bad input fails before Ray starts; run, plan and resume work for real."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import hpsearch_process, run_here

from hpsearch import cli, engine
from hpsearch.engine import default_experiment
from hpsearch.results import read_results

TINY_MODULE = '''
from hpsearch.space import Choice, Fixed, Float, PowerOfTwo, Space
SPACE = Space(Fixed("model", "mlp"), Float("lr", 1e-3, 1e-1, log=True, grid=3), PowerOfTwo("width", 16, 32),
              Fixed("batch_size", 256), Fixed("depth", 1))
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 3
DATASET = "mnist1d"
'''


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_MODULE)
    return str(path)


# Each entry: arguments after `hpsearch`, and the text its one error line must contain.
BAD_INPUT = [
    (["run", "{tiny}", "--strategy", "bayes"], "strategy: must be one of grid, random, tpe, got 'bayes'"),
    (["run", "{tiny}", "--scheduler", "sha"], "scheduler: must be one of fifo, asha, hyperband, got 'sha'"),
    (["run", "{tiny}", "--trials", "0"], "trials: must be a whole number >= 1, got 0"),
    (["run", "{tiny}", "--trials", "-5"], "trials: must be a whole number >= 1, got -5"),
    (["run", "{tiny}", "--trials", "many"], "Invalid value for '--trials'"),
    (["run", "{tiny}", "--grace-period", "10", "--max-epochs", "9"], "grace_period: must be <= max_epochs, got grace_period=10, max_epochs=9"),
    (["run", "{tiny}", "--reduction-factor", "1.5"], "reduction_factor: must be >= 2, got 1.5"),
    (["run", "{tiny}", "--max-epochs", "0"], "max_epochs: must be a whole number >= 1, got 0"),
    (["run", "{tiny}", "--cpus-per-trial", "-1"], "cpus_per_trial: must be a number >= 0, got -1"),
    (["run", "{tiny}", "--gpus-per-trial", "1.5"], "gpus_per_trial: above 1 must be a whole number of GPUs, got 1.5"),
    (["run", "{tiny}", "--concurrency", "0"], "concurrency: must be a whole number >= 1, got 0"),
    (["run", "{tiny}", "--workers-per-trial", "0"], "workers_per_trial: must be a whole number >= 1, got 0"),
    (["run", "{tiny}", "--workers-per-trial", "2", "--gpus-per-trial", "0.5"],
     "gpus_per_trial: with several workers per trial each worker needs whole GPUs (NCCL cannot run two ranks of one "
     "trial on one GPU), got 0.5 with workers_per_trial=2"),
    (["run", "{tiny}", "--register-model", "best", "--tracking-uri", "off"],
     "register_model: registering a model needs MLflow tracking, but tracking_uri is off, got 'best'"),
    (["run", "{tiny}", "--name", "bad name!"], "name: letters, digits and _ . = - only"),
    (["run", "no_such_space"], "space: no space module named 'no_such_space' (known: "),
    (["run", "{nospace}"], "SPACE: "),
    (["run", "{raises}"], "importing "),
    (["run", "{tiny}", "--bogus"], "No such option: --bogus"),
    (["run"], "Missing argument 'space'"),
    (["plan", "{tiny}", "--epoch-seconds", "-1"], "epoch_seconds: must be > 0, got -1.0"),
    (["resume", "never-ran", "--storage", "{tmp}"], "name: no sweep 'never-ran' under"),
    (["sync", "never-ran", "--storage", "{tmp}"], "name: no sweep 'never-ran' under"),
    (["run", "{imagenet}"], "dataset: unknown dataset 'imagenet' (have digits, mnist1d)"),
    (["run", "{tiny}", "--tracking-uri", "http://127.0.0.1:{closed}"], "tracking_uri: cannot reach the MLflow server at http://127.0.0.1:"),
    (["run", "{tiny}", "--tracking-uri", "mlflow.example"], "tracking_uri: not a tracking store MLflow opens (a URI starting with http://, https://, sqlite://, postgresql://, mysql:// or file://), got 'mlflow.example'"),
    (["run", "{tiny}", "--tracking-uri", "garbage:///"], "tracking_uri: not a tracking store MLflow opens"),
    (["run", "{tiny}", "--tracking-uri", "sqlite://relative.db"], "tracking_uri: a SQLite store is sqlite:/// and a path"),
    (["run", "{tiny}", "--wait-for-resources", "-1m"], "wait_for_resources_s: give a duration with its unit, such as 30s, 5m or 2h, got '-1m'"),
    (["run", "{tiny}", "--checkpoint-every", "5"], "checkpoint_every_s: give a duration with its unit, such as 30s, 5m or 2h, got '5'"),
    (["run", "{tiny}", "--time-budget", "2 weeks"], "time_budget_s: give a duration with its unit, such as 30s, 5m or 2h, got '2 weeks'"),
    (["plan", "{tiny}", "--goal", "0.9"], "No such option: --goal"),
    (["plan", "{tiny}", "--budget", "4 weeks"],
     "budget: give a wall-clock (4h, 90m), epochs (500 epochs) or worker-hours (16 gpu-h, 8 cpu-h), got '4 weeks'"),
    (["run", "{tiny}", "--budget", "-1h"], "budget: must be > 0, got '-1h'"),
    (["run", "{tiny}", "--budget", "2 epochs", "--scheduler", "fifo"],
     "budget: 2 epochs is less than one trial's first rung (3 epoch(s)): give at least 3 epochs, got '2 epochs'"),
    (["plan", "{tiny}", "--budget", "15s", "--epoch-seconds", "10"],
     "budget: 15s is less than one trial's first rung (1 epoch(s) of about 10 s, with 9 s of start and end): give at least 19 s"),
    (["run", "{tiny}", "--strategy", "grid", "--budget", "100 epochs"],
     "budget: 100 epochs is more than the whole grid needs (6 configurations trained to the end on one worker: 18 epochs)"),
    (["run", "{tiny}", "--budget", "4 gpu-h"], "budget: 4 gpu-h counts GPU-hours but a trial holds no GPU (gpus_per_trial=0)"),
    (["ui", "never-ran", "--tracking-uri", "sqlite:///{tmp}/empty/mlflow.db"], "tracking_uri: no MLflow store at "),
    (["run", "{tiny}", "--seed", "-1"], "seed: must be a whole number >= 0, got -1"),
    (["run", "{tiny}", "--goal", "nan"], "goal: must be a finite number (the metric's value that ends the sweep), got nan"),
    (["run", "{tiny}", "--time-budget", "0s"], "time_budget_s: must be a number of seconds > 0, got 0.0"),
    (["run", "{tiny}", "--max-failures", "-1"], "max_failures: must be a whole number >= 0, got -1"),
    (["run", "{tiny}", "--experiment", " "], "experiment: must be a non-empty name, got ' '"),
    (["run", "{tiny}", "--strategy", "grid", "--trials", "0"], "trials: must be a whole number >= 1, got 0"),
    (["plan", "{tiny}", "--workers", "0"], "workers: must be a whole number >= 1, got 0"),
    (["report", "never-ran", "--tracking-uri", "sqlite:///{tmp}/empty/mlflow.db"], "tracking_uri: no MLflow store at "),
    (["report", "never-ran", "--tracking-uri", "off"], "tracking_uri: report reads a sweep back from MLflow, so it needs a store, got 'off'"),
    (["run", "{tiny}", "--mode", "up"], "mode: must be one of max, min, got 'up'"),
    (["simulate", "{tiny}"], "table: no recorded curves for space 'tiny': give --table FILE or --from-sweep NAME"),
    (["simulate", "{tiny}", "--table", "{tmp}/none.npz"], "table: no such file"),
    (["simulate", "{tiny}", "--table", "{tiny}"], "is not a curve table written by hpsearch"),
    (["simulate", "{tiny}", "--table", "{table}", "--from-sweep", "x"], "table: give --table or --from-sweep, not both"),
    (["simulate", "{tiny}", "--scheduler", "asha,sha"], "scheduler: must be one of fifo, asha, hyperband, got 'sha'"),
    (["simulate", "{tiny}", "--reduction-factor", "2,x"], "reduction_factor: cannot read 'x' in '2,x'"),
    (["simulate", "{tiny}", "--seeds", "0"], "seeds: must be a whole number >= 1, got 0"),
    (["simulate", "{tiny}", "--epoch-seconds", "0"], "epoch_seconds: must be > 0, got 0.0"),
    (["simulate", "{tiny}", "--table", "{table}", "--max-epochs", "9"], "max_epochs: the table's curves end at epoch 3, got max_epochs=9"),
    (["simulate", "{tiny}", "--table", "{table}", "--workers", "0"], "workers: must be a whole number >= 1, got 0"),
    (["simulate", "mlp", "--table", "{table}"], "space: the table was recorded without parameter 'dropout'"),
    (["simulate", "{tiny}", "--from-sweep", "never-ran", "--tracking-uri", "sqlite:///{tmp}/empty/mlflow.db"], "tracking_uri: no MLflow store at "),
    (["plan", "{tiny}", "--table", "{tmp}/none.npz", "--epoch-seconds", "1"], "table: no such file"),
    (["run", "{tiny}", "--storage", "foo://bucket/x"],
     "storage: 'foo://bucket/x' has a scheme no filesystem opens (a local folder, or s3://, gs://, abfs://, hdfs://)"),
    (["resume", "x", "--storage", "foo://bucket/x"], "storage: 'foo://bucket/x' has a scheme no filesystem opens"),
    (["run", "{tiny}", "--runtime-env", "{tmp}/bad-env.yaml"],
     "runtime_env: '{tmp}/bad-env.yaml' does not parse as YAML or JSON (line 3: expected"),
    (["run", "{tiny}", "--runtime-env", "{tmp}/typo-env.json"],
     "runtime_env: 'workdir' is not a field of Ray's runtime environment (did you mean working_dir?)"),
    (["run", "{tiny}", "--runtime-env", "{tmp}/none.yaml"], "runtime_env: cannot read '{tmp}/none.yaml' (No such file"),
]


def tiny_table(module_path: str, path: Path) -> Path:
    """A recorded-curves table for the tiny module: its six grid points, three epochs each."""
    from hpsearch.simulate.curves import CurveTable
    from hpsearch.space.modules import load_space_module

    m = load_space_module(module_path)
    configs = list(m.space.grid())
    curves = [[0.1 * (i + 1) + 0.05 * e for e in range(3)] for i in range(len(configs))]
    return CurveTable.build(m.space, m.metric, m.mode, configs, curves, [[0.5] * 3] * len(configs)).save(path)


@pytest.mark.parametrize("argv, message", BAD_INPUT, ids=[" ".join(a)[:50] for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_no_ray(argv, message, tiny, tmp_path, monkeypatch, capsys):
    from tests.conftest import free_port

    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    (tmp_path / "imagenet.py").write_text(TINY_MODULE.replace('DATASET = "mnist1d"', 'DATASET = "imagenet"'))
    (tmp_path / "nospace.py").write_text("X = 1\n")
    (tmp_path / "raises.py").write_text("raise ImportError('no such package: torchvision_extra')\n")
    (tmp_path / "bad-env.yaml").write_text("env_vars:\n  A: [unclosed\n")
    (tmp_path / "typo-env.json").write_text('{"workdir": "."}')
    def no_ray(*a, **k):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(engine, "connect", no_ray)
    table = tiny_table(tiny, tmp_path / "tiny-table.npz")
    args = [a.format(tiny=tiny, tmp=tmp_path, nospace=tmp_path / "nospace.py", raises=tmp_path / "raises.py",
                     imagenet=tmp_path / "imagenet.py", closed=free_port(), table=table) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    message = message.format(tmp=tmp_path)
    assert lines[0].startswith("hpsearch: error: ") and message in lines[0], lines[0]
    # (connect, patched above, is the only way the command starts or joins Ray.)
    assert not store.exists(), "something was written to MLflow"


# The environment is input too: each variable hpsearch reads, with a bad value, and its one line.
BAD_ENVIRONMENT = [
    ("MLFLOW_TRACKING_URI", "garbage:///", "MLFLOW_TRACKING_URI: not a tracking store MLflow opens"),
    ("MLFLOW_TRACKING_URI", "http://127.0.0.1:{closed}", "MLFLOW_TRACKING_URI: cannot reach the MLflow server"),
    ("HPSEARCH_MLFLOW_DRAIN_S", "soon", "HPSEARCH_MLFLOW_DRAIN_S: must be a number of seconds >= 0, got 'soon'"),
    ("HPSEARCH_MLFLOW_DRAIN_S", "-5", "HPSEARCH_MLFLOW_DRAIN_S: must be a number of seconds >= 0, got '-5'"),
    ("HPSEARCH_STORAGE", "", "HPSEARCH_STORAGE: must be a folder for Ray's results, got ''"),
    ("HPSEARCH_SPACES", "{tmp}/no-such-folder", "HPSEARCH_SPACES: each entry must be a folder of space modules"),
    ("HPSEARCH_CACHE", "{tiny}/cache", "HPSEARCH_CACHE: must be a folder hpsearch can create"),
    ("RAY_ADDRESS", "127.0.0.1:{closed}", "RAY_ADDRESS: no Ray cluster answers at 127.0.0.1:"),
    ("RAY_ADDRESS", "nowhere", "RAY_ADDRESS: must be auto, host:port or ray://host:port, got 'nowhere'"),
]


@pytest.mark.parametrize("variable, value, message", BAD_ENVIRONMENT, ids=[f"{v}={x}" for v, x, _ in BAD_ENVIRONMENT])
def test_a_bad_environment_variable_is_one_line_exit_2_and_nothing_written(variable, value, message, tiny, tmp_path,
                                                                          monkeypatch, capsys):
    import ray

    from tests.conftest import free_port

    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv(variable, value.format(closed=free_port(), tmp=tmp_path, tiny=tiny))
    was_up = ray.is_initialized()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", tiny, "--storage", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpsearch: error: ") and message in lines[0], lines
    assert not store.exists() and not (tmp_path / "runs").exists(), "something was written"
    assert ray.is_initialized() == was_up, "Ray was started for bad input"


@pytest.mark.parametrize("scheme", ["", "ray://"], ids=["gcs", "ray-client"])
def test_an_address_where_no_cluster_answers_fails_in_seconds_with_one_line(scheme, tiny, tmp_path, monkeypatch, capsys):
    import ray

    from tests.conftest import free_port

    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    was_up = ray.is_initialized()
    port = free_port()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", tiny, "--address", f"{scheme}127.0.0.1:{port}", "--storage", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"hpsearch: error: address: no Ray cluster answers at 127.0.0.1:{port} (ConnectionRefusedError), "
                     f"got '{scheme}127.0.0.1:{port}'"]
    assert not store.exists() and not (tmp_path / "runs").exists()
    assert ray.is_initialized() == was_up


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--gpus-per-trial", "1"], "hpsearch: error: gpus_per_trial: no node has a GPU (cluster: 1 node, "),
    (["--cpus-per-trial", "64", "--wait-for-resources", "2s"], "hpsearch: error: cpus_per_trial: no node has 64 CPUs (the largest has "),
    (["--workers-per-trial", "64"], "hpsearch: error: workers_per_trial: the cluster can hold at most "),
], ids=["gpu", "cpus-after-waiting", "workers"])
def test_resources_no_node_has_are_refused_before_anything_is_written(flags, message, tiny, tmp_path, ray_session,
                                                                      monkeypatch, capsys):
    # The session's real Ray: it knows what this machine's node offers.
    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    code, out, err = run_here(capsys, "run", tiny, "--storage", str(tmp_path / "runs"), "--no-progress", *flags)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), err
    if "--workers-per-trial" in flags:
        cpus = int(ray_session.cluster_resources()["CPU"])
        assert lines[0].endswith(f"workers of 1 CPU each (cluster: 1 node, {cpus} CPUs, 0 GPUs), got 64")
    if "--wait-for-resources" in flags:
        assert lines[0].endswith("(after waiting 2 s for the cluster to grow)")
    assert not store.exists() and not (tmp_path / "runs").exists(), "something was written"


# For each sweep option, a value its rule in SweepSettings (or engine.prepare) forbids.
BAD_VALUE = {
    "checkpoint_every_s": "-1",
    "strategy": "bogus", "scheduler": "bogus", "mode": "bogus",
    "trials": "0", "max_epochs": "0", "grace_period": "0", "concurrency": "0",
    "seed": "-1", "max_failures": "-1",
    "reduction_factor": "-1", "cpus_per_trial": "-1", "gpus_per_trial": "-1", "time_budget_s": "-1",
    "goal": "nan", "budget": "-4h",
    "metric": "", "dataset": "imagenet", "name": "bad name!", "storage": " ",
    "tracking_uri": "mlflow.example", "experiment": " ", "wait_for_resources_s": "-1",
    "workers_per_trial": "0", "register_model": " ", "runtime_env": "/no/such/env.yaml",
}


@pytest.mark.parametrize("option", list(cli.SWEEP_OPTIONS))
def test_every_sweep_option_rejects_a_bad_value_with_one_line_naming_it(option, tiny, tmp_path, monkeypatch, capsys):
    # Driven by the command's own table of flags: a new option without a check (or without an
    # entry above) fails here.
    assert option in BAD_VALUE, f"give {option} a bad value in BAD_VALUE"
    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(engine, "connect", no_ray)
    flag = cli.SWEEP_OPTIONS[option][0]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", tiny, flag, BAD_VALUE[option]])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"hpsearch: error: {option}: "), lines[0]
    assert not store.exists(), "something was written to MLflow"


@pytest.mark.slow
def test_a_trainable_that_never_reports_ends_with_one_clear_line(tmp_path, ray_session, capsys):
    module = tmp_path / "silent.py"
    module.write_text("from hpsearch.space import Int, Space\nSPACE = Space(Int('x', 1, 2))\nMETRIC = 'acc'\n"
                      "MODE = 'max'\nMAX_EPOCHS = 3\ndef TRAIN(config):\n    return None\n")
    code, out, err = run_here(capsys, "run", str(module), "--strategy", "grid", "--storage", str(tmp_path), "--no-progress")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("hpsearch: error:")]
    assert lines == ["hpsearch: error: metric: no trial reported 'acc'; does train() call hpsearch.report(epoch=..., acc=...)?"]


@pytest.mark.slow
def test_a_trainable_reporting_another_metric_ends_with_one_line_not_rays_traceback(tmp_path, ray_session, capsys):
    # Ray Tune ends the whole sweep at the first result without the metric (its strict check).
    module = tmp_path / "wrong.py"
    module.write_text("import hpsearch\nfrom hpsearch.space import Float, Int, Space\n"
                      "SPACE = Space(Int('x', 1, 2), Float('y', 0, 1))\nMETRIC = 'acc'\nMODE = 'max'\nMAX_EPOCHS = 3\n"
                      "def TRAIN(config):\n    hpsearch.report(epoch=1, loss=0.5)\n")
    code, out, err = run_here(capsys, "run", str(module), "--trials", "2", "--storage", str(tmp_path / "runs"),
                              "--no-progress", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.strip()] == [
        "hpsearch: error: metric: a trial reported without 'acc', the metric the sweep optimises; call "
        "hpsearch.report(epoch=..., acc=...) every epoch, or give the metric it reports (--metric / METRIC)"]


def test_plan_prints_rungs_and_budget(tiny, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["plan", "mlp", "--scheduler", "asha", "--trials", "27", "--max-epochs", "81", "--epoch-seconds", "0.5",
                  "--workers", "2"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "1 -> 27, 3 -> 9, 9 -> 3, 27 -> 1, 81 -> 1" in text
    assert "Total: 135 epochs, against 2187" in text
    # 135 epochs x 0.5 s = 67.5 s = 0.01875 worker-hours, 34 s on 2 workers
    assert ("0.0187 worker-hours" in text or "0.0188 worker-hours" in text) and "about 34 s on 2 workers" in text
    # mlp ships a table of recorded curves (spaces/mlp.curves.npz): plan simulates this very sweep on
    # it, through Ray's own ASHA, which promotes without waiting and so trains more than the ideal.
    import re

    simulated = re.search(r"Simulated on recorded curves .*?: (\d+) epochs \[(\d+)-(\d+)\]", text)
    assert simulated, text
    assert 135 < int(simulated.group(2)) <= int(simulated.group(1)) <= int(simulated.group(3)) < 2187


def test_plan_measures_an_epoch_when_not_told(tiny, capsys):
    with pytest.raises(SystemExit):
        cli.main(["plan", tiny, "--strategy", "grid", "--scheduler", "fifo"])
    text = " ".join(capsys.readouterr().out.split())
    assert "6 trials (grid, grid of 6)" in text and "Total: 18 epochs" in text and "(measured here)" in text


@pytest.mark.slow
def test_run_prints_the_best_trial_and_table(tiny, tmp_path, ray_session, capsys):
    code, out, err = run_here(capsys, "run", tiny, "--strategy", "grid", "--scheduler", "asha", "--reduction-factor",
                              "2", "--storage", str(tmp_path), "--name", "cli-run", "--no-progress")
    assert code == 0, err[-3000:]
    assert "cli-run: 6 trials" in out and "Best trial" in out and "Open the UI: hpsearch ui cli-run" in out
    lines = out.strip().splitlines()
    best = json.loads(lines[next(i for i, line in enumerate(lines) if line.startswith("Best trial")) + 1])
    assert best["model"] == "mlp" and best["lr"] in (0.001, 0.01, 0.1)


KILL_EPOCHS = 15  # ~0.2 s each at batch 32: a trial runs for seconds, long enough to kill mid-way
HELD_EPOCHS = 6  # the held trials' budget: three epochs before the hold, three after it

# A space module's TRAIN that holds each trial after its third epoch until a file "release" exists
# beside the module, checkpointing every epoch so a resumed trial goes on where it was held.
HELD_TRAIN = """
import time
from pathlib import Path

import hpsearch

RELEASE = Path(__file__).with_name("release")


def TRAIN(config):
    state = hpsearch.load_checkpoint() or {"epoch": 0}
    for epoch in range(state["epoch"] + 1, MAX_EPOCHS + 1):
        while epoch > 3 and not RELEASE.exists():
            time.sleep(0.05)
        hpsearch.report(epoch=epoch, val_acc=config["lr"] * epoch / MAX_EPOCHS, checkpoint={"epoch": epoch})
"""


@pytest.mark.slow
# Trials run two at a time, a pair starting together. mid: of six trials (3 lr x 2 width), the first
# pair finished, a pair in flight, a pair not started; late: of four (2 lr x 2 width), the first pair
# finished, the last pair in flight (with six, two more trials trained for the same case). (A kill
# before any trial finished, once a third case, is covered by the interrupted sweep and the twin test.)
@pytest.mark.parametrize("trials, kill_after", [(6, 2), (4, 2)], ids=["mid", "late"])
def test_resume_finishes_a_killed_sweep_without_rerunning_finished_trials(tmp_path, trials, kill_after, ray_session,
                                                                          capsys):
    module = tmp_path / "slow.py"
    module.write_text(TINY_MODULE.replace("MAX_EPOCHS = 3", f"MAX_EPOCHS = {KILL_EPOCHS}").replace(
        'Fixed("batch_size", 256)', 'Fixed("batch_size", 32)').replace("grid=3", f"grid={trials // 2}"))
    storage, name = tmp_path / "runs", f"killed-{trials}"
    proc = hpsearch_process("run", str(module), "--strategy", "grid", "--scheduler", "fifo", "--storage", str(storage),
                     "--name", name, "--no-progress", "--concurrency", "2", "--checkpoint-every", "1s",
                     start_new_session=True)  # a checkpoint at least every second: bounds below in seconds
    # Wait for the kill point (kill_after trials finished), then kill the driver and everything it started.
    deadline = time.time() + 240
    finished: set[str] = set()
    while time.time() < deadline:
        time.sleep(0.5)
        finished = {results.parent.name for results in storage.glob(f"{name}/*/result.json")
                    if len(results.read_text().splitlines()) >= KILL_EPOCHS}  # a line every epoch
        if len(finished) >= kill_after:
            break
        if proc.poll() is not None:  # ended before its kill point: no use waiting on
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before its kill point: {proc.communicate()[1][-3000:]}")
    else:
        pytest.fail(f"the sweep did not reach its kill point ({kill_after} finished) in time")
    assert len(finished) < trials, "the sweep finished before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    seconds_before = {p.parent.name: _seconds(p) for p in storage.glob(f"{name}/*/result.json")}
    before = {trial: len(seconds) for trial, seconds in seconds_before.items()}  # reports made before the kill
    recorded_done = _recorded_finished(storage / name)  # what Ray's own state says had finished
    # The kill is the point of the first half; the resume runs here, on the session's Ray.
    code, out, err = run_here(capsys, "resume", name, "--storage", str(storage), "--no-progress")
    assert code == 0, err[-3000:]
    assert f"{name}: {trials} trials" in out
    after = {p.parent.name: _epochs(p) for p in storage.glob(f"{name}/*/result.json")}
    assert len(after) == trials
    for trial in finished:
        if any(trial.startswith(f"_trial_entry_{t}_") for t in recorded_done):
            assert len(after[trial]) == before[trial], f"finished trial {trial} ran again"
        else:
            # It reported its last epoch after Ray's last snapshot: Ray resumes it from the last
            # checkpoint that snapshot names, so it repeats its final seconds, never starts over.
            # Kept at least every second (the policy), and the snapshot may lag one checkpoint.
            assert after[trial].count(1) == 1, (trial, after[trial])
            seconds = seconds_before[trial]
            resumed_at = after[trial][before[trial]:][:1] or [before[trial] + 1]  # first epoch run again
            repeated = seconds[resumed_at[0] - 1:]
            assert sum(repeated) <= 2 * 1 + 2 * max(seconds), (trial, after[trial], repeated)
    for trial, epochs in after.items():
        # Every trial reached the budget; an interrupted one continued from its checkpoint.
        assert set(epochs) == set(range(1, KILL_EPOCHS + 1)) and epochs[0] == 1, (trial, epochs)

    # MLflow: the resumed sweep continued its own parent and children; nothing is left RUNNING.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(default_experiment(module))
    runs = client.search_runs([exp.experiment_id], f"tags.`hpsearch.sweep` = '{name}'", max_results=100)
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == trials and len({c.data.tags["hpsearch.trial_id"] for c in children}) == trials
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, KILL_EPOCHS + 1))  # one point per epoch, repeats included


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, group", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)],
                         ids=["ctrl-c-to-the-terminal-group", "sigterm-to-the-driver"])
def test_an_interrupted_sweep_says_so_and_resume_finishes_it(tmp_path, sig, code, group, ray_session, capsys):
    # Ctrl-C in a terminal reaches the whole process group (Ray's processes too); systemd's
    # KillMode=mixed and Kubernetes send SIGTERM to the main process only. The trials wait after
    # their third epoch until the test releases them, so the signal always finds trials running,
    # whatever the machine's speed (racing the sweep's end failed on a busy machine).
    module = tmp_path / "slow.py"
    # Four trials (2 lr x 2 width), two at a time: at the signal two are held, two not started.
    module.write_text(TINY_MODULE.replace("MAX_EPOCHS = 3", f"MAX_EPOCHS = {HELD_EPOCHS}").replace("grid=3", "grid=2")
                      + HELD_TRAIN)
    release = tmp_path / "release"
    storage, name = tmp_path / "runs", f"interrupted-{sig.name}"
    proc = hpsearch_process("run", str(module), "--strategy", "grid", "--scheduler", "fifo", "--storage", str(storage),
                     "--name", name, "--no-progress", "--concurrency", "2", start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not any(len(p.read_text().splitlines()) > 2
                                                                      for p in storage.glob(f"{name}/*/result.json")):
        time.sleep(0.3)  # until a trial is a few epochs in (or the command ended: the assertions below say how)
    if proc.poll() is None:
        (os.killpg if group else os.kill)(proc.pid, sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, (out[-2000:], err[-3000:])
    assert out.strip().splitlines()[-1] == f"interrupted: resume with hpsearch resume {name} --storage {storage}"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(default_experiment(module))

    def runs():
        found = client.search_runs([exp.experiment_id], f"tags.`hpsearch.sweep` = '{name}'", max_results=100)
        return ([r for r in found if r.data.tags.get("hpsearch.role") == "sweep"],
                [r for r in found if r.data.tags.get("hpsearch.role") == "trial"])

    parents, children = runs()
    assert len(parents) == 1 and parents[0].info.status == "KILLED"  # not FINISHED as a completed sweep
    assert parents[0].data.tags["hpsearch.stopped_by"] == "interrupted"
    cut = [c for c in children if c.data.tags["hpsearch.status"] == "interrupted"]
    assert cut and all(c.info.status == "KILLED" for c in cut)
    assert not any(c.info.status == "RUNNING" for c in children)

    # A snapshot file cut off mid-write (as a driver killed inside Ray's copy to storage left it
    # before hpsearch wrote them whole): one line, and nothing resumed or recorded; whole again, it resumes.
    state = next((storage / name).glob("experiment_state-*.json"))
    whole = state.read_bytes()
    state.write_bytes(whole[:len(whole) // 2])
    code, out, err = run_here(capsys, "resume", name, "--storage", str(storage), "--no-progress")
    assert code == 2 and err.strip() == (f"hpsearch: error: name: sweep {name!r} cannot be resumed: its experiment snapshot file "
                                         f"{state.name!r} under {str(storage / name)!r} was cut off while it was written "
                                         f"(a crash mid-write, or a full disk); its trials' results and MLflow runs stay "
                                         f"as they are"), err[-3000:]
    assert runs()[0][0].info.status == "KILLED"
    state.write_bytes(whole)

    release.touch()  # the resumed trials go on to their last epoch
    # The signal is the point of the first half; the resume runs here, on the session's Ray.
    resumed_code, out, err = run_here(capsys, "resume", name, "--storage", str(storage), "--no-progress")
    assert resumed_code == 0, err[-3000:]
    assert f"{name}: 4 trials" in out and not out.splitlines()[-1].startswith("interrupted:")
    parents, children = runs()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "hpsearch.stopped_by" not in parents[0].data.tags  # the resumed sweep ran to its end
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["hpsearch.status"] for c in children} == {"completed"}
    for p in storage.glob(f"{name}/*/result.json"):  # every trial trained to the end
        assert set(_epochs(p)) == set(range(1, HELD_EPOCHS + 1)), p.parent.name


def _recorded_finished(experiment_dir: Path) -> set[str]:
    """Trial ids Ray's latest experiment-state snapshot records as TERMINATED."""
    snapshots = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not snapshots:
        return set()
    done = set()
    for entry in json.loads(snapshots[-1].read_text())["trial_data"]:
        trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        if trial.get("status") == "TERMINATED":
            done.add(trial["trial_id"])
    return done


def _epochs(result_json: Path) -> list[int]:
    """The trial's epochs in the order reported (Ray's result.json: one JSON object a line)."""
    return [int(r["epoch"]) for r in read_results(result_json.parent)]


def _seconds(result_json: Path) -> list[float]:
    """Each report's time since the one before (Ray's time_this_iter_s), in the order reported."""
    return [float(r["time_this_iter_s"]) for r in read_results(result_json.parent)]


def _stop_epochs(experiment_dir: Path) -> dict[tuple, set[int]]:
    """Configuration (lr, width) -> the distinct epochs its trial reported, over all its result.json."""
    out: dict[tuple, set[int]] = {}
    for path in experiment_dir.glob("*/result.json"):
        rows = read_results(path.parent)
        if rows:
            config = rows[0]["config"]
            out.setdefault((round(config["lr"], 12), config["width"]), set()).update(int(r["epoch"]) for r in rows)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["asha", "hyperband"])
def test_a_resumed_sweep_decides_as_its_uninterrupted_twin(ray_session, tmp_path, scheduler):
    # One trial at a time (concurrency 1): results arrive in one order, so the scheduler's
    # decisions are the same every time, and the killed-and-resumed sweep must make the same ones.
    # Before the scheduler's state was saved with the experiment, the resumed half started with
    # empty rungs (ASHA promoted every trial it had no results to compare with) or new brackets.
    module = tmp_path / "twin.py"
    module.write_text(TINY_MODULE.replace("MAX_EPOCHS = 3", "MAX_EPOCHS = 9").replace("grid=3", "grid=6"))
    storage = tmp_path / "runs"
    options = {"strategy": "grid", "scheduler": scheduler, "concurrency": 1, "checkpoint_every_s": 1}
    engine.sweep(str(module), name="twin", storage=str(storage), progress=False, **options)
    expected = _stop_epochs(storage / "twin")
    assert len(expected) == 12

    proc = hpsearch_process("run", str(module), "--name", "killed", "--storage", str(storage), "--no-progress",
                     "--strategy", "grid", "--scheduler", scheduler, "--concurrency", "1", "--checkpoint-every", "1s",
                     start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(storage.glob("killed/*/result.json"))) < 7:
        time.sleep(0.2)  # the 7th trial has reported: mid-way
    assert proc.poll() is None, ("the sweep finished before the kill", proc.communicate()[1][-3000:])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    result = engine.resume_sweep("killed", storage=str(storage), progress=False)
    assert len(result.trials) == 12 and not result.interrupted
    got = _stop_epochs(storage / "killed")
    assert got.keys() == expected.keys()
    differ = {k: (sorted(got[k]), sorted(expected[k])) for k in expected if got[k] != expected[k]}
    assert not differ, f"configurations trained to other epochs than in the uninterrupted sweep: {differ}"
    total, twin_total = sum(map(len, got.values())), sum(map(len, expected.values()))
    assert abs(total - twin_total) <= 0.1 * twin_total
