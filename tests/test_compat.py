"""Canaries: one test per function of ``hpsearch.ray.compat`` and ``hpsearch.tracking.compat``,
each checking against the installed Ray or MLflow that the internal it relies on still exists and
behaves as relied on. After an upgrade, a renamed internal fails here, with the function's name and
what it relies on, instead of somewhere inside a sweep.

Real components: the session's local Ray (no dashboard, as hpsearch starts it), a tiny Tune run, a
real SQLite MLflow store.
"""

import importlib
import inspect
import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from hpsearch.ray import compat
from hpsearch.tracking import compat as mlflow_compat


@contextmanager
def relied_on(function):
    """Turn a failure into one message naming the compat function and what it relies on."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - any failure of an internal is the canary's finding
        doc = " ".join((function.__doc__ or "").split())
        pytest.fail(f"{function.__module__}.{function.__name__} no longer holds with this version "
                    f"({type(exc).__name__}: {exc}); it relies on: {doc}")


# -- Ray: the trial side ---------------------------------------------------------------------------

def test_in_tune_session_reads_rays_session_flag():
    with relied_on(compat.in_tune_session):
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session

        assert _in_tune_session() in (False, None)
        assert compat.in_tune_session() is False


@pytest.mark.parametrize("name", compat.CHECKPOINT_LOGGERS)
def test_the_checkpoint_notice_is_logged_by_the_loggers_quieted(name):
    module = importlib.import_module(name)
    assert module.logger.name == name and "Checkpoint successfully created at" in inspect.getsource(module)
    before = logging.getLogger(name).level
    try:
        compat.quiet_checkpoint_notices()
        assert not module.logger.isEnabledFor(logging.INFO)
    finally:
        logging.getLogger(name).setLevel(before)


def test_worker_failures_come_from_rays_worker_group_error():
    with relied_on(compat.worker_failures):
        from ray.train.v2.api.exceptions import WorkerGroupError

        err = WorkerGroupError("rank 1 failed", {1: ValueError("diverged")})
        assert dict(compat.worker_failures(err)) == {1: err.worker_failures[1]}
        wrapped = RuntimeError("fit failed")
        wrapped.__cause__ = err
        assert compat.worker_failures(wrapped) is err.worker_failures
        assert compat.worker_failures(ValueError("x")) is None


# -- Ray: the cluster ------------------------------------------------------------------------------

def test_bootstrap_address_canonicalizes_like_ray_init():
    with relied_on(compat.bootstrap_address):
        from ray._private.services import canonicalize_bootstrap_address_or_die

        assert list(inspect.signature(canonicalize_bootstrap_address_or_die).parameters)[:1] == ["addr"]
        host, port = compat.bootstrap_address("127.0.0.1:6379").rsplit(":", 1)
        assert host and port == "6379"


def test_cluster_auth_tells_a_missing_token_from_ours_and_a_wrong_port(ray_session):
    # The session's Ray was started here by ray.init, which turns token authentication on.
    import ray

    gcs = ray.get_runtime_context().gcs_address
    with relied_on(compat.cluster_auth):
        assert compat.cluster_auth(gcs, None) == "unauthenticated"
        assert compat.cluster_auth(gcs, compat.local_auth_token()) == "ok"
        assert compat.cluster_auth(gcs, "not-the-token") == "unauthenticated"
        assert compat.cluster_auth("ray://" + gcs, compat.local_auth_token()) == "wrong-port"  # a GCS, not a client server


def test_local_auth_token_is_found_as_rays_loader_finds_it(ray_session, monkeypatch, tmp_path):
    with relied_on(compat.local_auth_token):
        from ray._raylet import AuthenticationTokenLoader

        assert AuthenticationTokenLoader.instance().get_raw_token() == compat.local_auth_token()  # as Ray finds it
        monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-variable")
        assert compat.local_auth_token() == "from-the-variable"
        monkeypatch.delenv("RAY_AUTH_TOKEN")
        (tmp_path / "token").write_text("from-the-file\n")
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
        assert compat.local_auth_token() == "from-the-file"


def test_enable_token_auth_is_rays_switch():
    with relied_on(compat.enable_token_auth):
        from ray._private.authentication import authentication_token_setup as setup

        assert callable(setup._enable_token_auth) and setup.AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"


def test_has_dashboard_reads_the_connected_node(ray_session):
    with relied_on(compat.has_dashboard):
        assert compat.has_dashboard() is False  # the tests' Ray, like hpsearch's own, has none


def test_the_gcs_actor_table_and_get_actor_replacement_answer_without_dashboard(ray_session):
    import ray

    from hpsearch.ray.cluster import repair_cleaner

    @ray.remote(num_cpus=0)
    class Idle:
        def ident(self):
            return ray.get_runtime_context().get_actor_id()

    actor = Idle.remote()
    actor_id = ray.get(actor.ident.remote())
    with relied_on(compat.gcs_actor_state):
        assert compat.gcs_actor_state(actor_id) == "ALIVE"
    with relied_on(compat.replace_get_actor):
        repair_cleaner()  # the setup hook: replaces ray.util.state.get_actor in this process
        import ray.util.state

        assert getattr(ray.util.state.get_actor, "hpsearch_fallback", False)
        # What Ray Train's placement-group cleaner calls, the way it calls it.
        from ray.train.v2._internal.execution.controller import placement_group_cleaner
        from ray.train.v2._internal.state.util import is_actor_alive

        assert placement_group_cleaner.is_actor_alive is is_actor_alive
        assert "get_actor" in is_actor_alive.__code__.co_names
        assert is_actor_alive(actor_id, timeout=5)
        ray.kill(actor)
        while compat.gcs_actor_state(actor_id) != "DEAD":  # the kill is asynchronous; the test's timeout bounds it
            time.sleep(0.1)
        assert not is_actor_alive(actor_id, timeout=5)


# -- Ray: Tune's driver ----------------------------------------------------------------------------

def test_restored_configs_are_the_local_tuners(ray_session, tmp_path):
    from ray import tune

    with relied_on(compat.restored_configs):
        tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=3),
                           run_config=tune.RunConfig(name="canary", storage_path=str(tmp_path)))
        tune_config, run_config = compat.restored_configs(tuner)
        assert tune_config.max_concurrent_trials == 3 and run_config.name == "canary"
        assert run_config is compat.restored_configs(tuner)[1]  # the object the run will use, to change in place


def test_a_tiny_tune_run_gives_its_trials_their_start_and_the_scheduler_its_state(ray_session, tmp_path):
    from ray import tune

    from hpsearch.ray.schedulers import SchedulerState, make_scheduler, resumable

    def trainable(config):
        for epoch in (1, 2):
            tune.report({"epoch": epoch, "acc": config["x"] * epoch})

    scheduler = resumable(make_scheduler("asha", 2, 1, 2))
    grid = tune.Tuner(
        trainable, param_space={"x": tune.grid_search([0.1, 0.2])},
        tune_config=tune.TuneConfig(metric="acc", mode="max", scheduler=scheduler),
        run_config=tune.RunConfig(name="canary-run", storage_path=str(tmp_path), verbose=0,
                                  callbacks=[SchedulerState(scheduler)]),
    ).fit()
    with relied_on(compat.result_trials):
        trials = compat.result_trials(grid)
        assert sorted(t.status for t in trials) == ["TERMINATED", "TERMINATED"]
    with relied_on(compat.trial_started):
        assert all(compat.trial_started(t) for t in trials)
    with relied_on(compat.scheduler_state):
        state = compat.scheduler_state(scheduler, "AsyncHyperBandScheduler")
        assert set(state) == set(compat.SCHEDULER_STATE["AsyncHyperBandScheduler"])
        # The decisions: each rung of ASHA's bracket recorded both trials (ended trials leave _trial_info).
        recorded = {trial_id for _, seen in state["_brackets"][0]._rungs for trial_id in seen}
        assert recorded == {t.trial_id for t in trials} and state["_trial_info"] == {}


# Uploads one staging folder with Ray's own syncer, as the driver uploads its experiment snapshot;
# the process may write no file past 64 KiB (RLIMIT_FSIZE), so a copy dies inside a bigger file
# as a driver killed mid-upload does, at the same byte whatever the machine's speed.
UPLOAD = """
import resource, sys
import pyarrow.fs
from ray.train._internal.storage import _FilesystemSyncer
from hpsearch.ray import compat
if sys.argv[3] == "whole":
    compat.consistent_snapshots()
if sys.argv[4] == "limited":
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
syncer = _FilesystemSyncer(storage_filesystem=pyarrow.fs.LocalFileSystem(), sync_period=0, sync_timeout=60)
syncer.sync_up(sys.argv[1], sys.argv[2])
syncer.wait()
"""


@pytest.mark.slow
def test_consistent_snapshots_keep_the_last_one_when_a_copy_dies_midway_and_wait_for_the_copy_in_flight(tmp_path):
    import subprocess
    import sys

    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir()
    storage.mkdir()
    new, old = b"n" * 1_000_000, b"o" * 50_000
    (staging / "experiment_state-x.json").write_bytes(new)

    def upload(how: str, limit: str) -> int:
        (storage / "experiment_state-x.json").write_bytes(old)  # the snapshot before
        return subprocess.run([sys.executable, "-c", UPLOAD, str(staging), str(storage), how, limit],
                              capture_output=True, timeout=120).returncode

    with relied_on(compat.consistent_snapshots):
        # Ray's own copy truncates the file in storage and dies inside it: the snapshot is cut off.
        assert upload("ray", "limited") != 0
        assert (storage / "experiment_state-x.json").read_bytes() == b"n" * 65536
        # Written whole: the snapshot before stays, and the dead copy leaves nothing beside it.
        assert upload("whole", "limited") != 0
        assert (storage / "experiment_state-x.json").read_bytes() == old
        assert sorted(p.name for p in storage.iterdir()) == ["experiment_state-x.json"]
        # And when it lives, the new snapshot replaces the old one whole.
        assert upload("whole", "free") == 0
        assert (storage / "experiment_state-x.json").read_bytes() == new

        # A snapshot waits for the copy of the one before, still in flight, before it rewrites the
        # staging folder that copy reads (the stand-in controller has nothing to save: Ray's own
        # save_to_dir then fails on it, after the wait).
        import threading
        import types

        import pyarrow.fs
        from ray.train._internal.storage import _FilesystemSyncer
        from ray.tune.execution.tune_controller import TuneController

        compat.consistent_snapshots()
        assert not compat.consistent_snapshots()  # once a process
        copied = threading.Event()
        syncer = _FilesystemSyncer(storage_filesystem=pyarrow.fs.LocalFileSystem(), sync_period=0, sync_timeout=60)
        syncer._launch_sync_process((copied.wait, {"timeout": 120}))  # a copy in flight until `copied`
        order = []

        def snapshot():
            try:
                TuneController.save_to_dir(types.SimpleNamespace(_storage=types.SimpleNamespace(syncer=syncer)))
            except AttributeError:
                order.append("saved after the copy" if copied.is_set() else "saved during the copy")

        saver = threading.Thread(target=snapshot)
        saver.start()
        saver.join(timeout=1)
        copied.set()
        saver.join(timeout=60)
        assert order == ["saved after the copy"]


def test_a_result_without_the_metric_ends_fit_with_the_error_missing_metric_knows(ray_session, tmp_path):
    from ray import tune

    def trainable(config):
        tune.report({"epoch": 1, "loss": 0.5})

    with pytest.raises(Exception) as raised:
        tune.Tuner(trainable, param_space={"x": tune.grid_search([1])},
                   tune_config=tune.TuneConfig(metric="acc", mode="max"),
                   run_config=tune.RunConfig(name="canary-metric", storage_path=str(tmp_path), verbose=0)).fit()
    with relied_on(compat.missing_metric):
        assert compat.missing_metric(raised.value)
    assert not compat.missing_metric(ValueError("another failure"))


def test_the_client_server_failure_connect_retries_is_the_one_ray_raises():
    import inspect

    from ray.util.client import worker
    from ray.util.client.server import proxier

    # Ray's proxier sends this text as the init response's message; its client worker raises it
    # as a ConnectionAbortedError.
    assert "Starting Ray client server failed" in inspect.getsource(proxier.DataServicerProxy)
    assert "raise ConnectionAbortedError(" in inspect.getsource(worker.Worker._server_init)
    failed = ConnectionAbortedError("Initialization failure from server:\nTraceback ...\nRuntimeError: "
                                    "Starting Ray client server failed. See ray_client_server_23000.err for detailed logs.")
    assert compat.client_server_start_failed(failed)
    assert not compat.client_server_start_failed(ConnectionAbortedError("Initialization failure from server: version"))
    assert not compat.client_server_start_failed(RuntimeError("Starting Ray client server failed"))


@pytest.mark.parametrize("kind", sorted(compat.SCHEDULER_STATE))
def test_scheduler_state_is_in_the_attributes_named(kind):
    from ray.tune import schedulers

    with relied_on(compat.scheduler_state):
        scheduler = getattr(schedulers, kind)(time_attr="epoch", max_t=9)
        state = compat.scheduler_state(scheduler, kind)
        compat.set_scheduler_state(scheduler, {key: "x" for key in state})
        assert all(getattr(scheduler, key) == "x" for key in state)


def test_set_trial_status_is_tune_controllers_own():
    with relied_on(compat.set_trial_status):
        from ray.tune.execution.tune_controller import TuneController

        assert list(inspect.signature(TuneController._set_trial_status).parameters) == ["self", "trial", "status"]

        class Controller:  # records what compat calls
            def _set_trial_status(self, trial, status):
                self.set = (trial, status)

        c = Controller()
        compat.set_trial_status(c, "t", "PAUSED")
        assert c.set == ("t", "PAUSED")


def test_a_stub_trial_takes_a_last_result_the_schedulers_read():
    with relied_on(compat.stub_trial):
        trial = compat.stub_trial({"lr": 0.1}, "00001")
        assert trial.status == "PENDING" and trial.config == {"lr": 0.1} and trial.trial_id == "00001"
    with relied_on(compat.set_last_result):
        compat.set_last_result(trial, {"epoch": 3, "acc": 0.5})
        assert trial.last_result["epoch"] == 3 and trial.last_result["acc"] == 0.5


def test_the_simulator_drives_rays_schedulers_through_get_trials_and_stop_trial_only():
    # The simulator (hpsearch.simulate.events) plays Tune's controller with these two methods only;
    # a scheduler of this Ray that called anything else would fail here.
    from hpsearch.simulate.curves import CurveTable
    from hpsearch.simulate.events import Setting, simulate

    table = CurveTable.load(Path(__file__).resolve().parents[1] / "spaces" / "mlp.curves.npz")
    for scheduler in ("asha", "hyperband"):
        run = simulate(table, Setting("random", scheduler, trials=27, max_epochs=27), seed=0)
        assert run.trials == 27 and 27 < run.epochs < 27 * 27


def test_default_callbacks_skip_rays_loggers_we_replaced():
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from hpsearch.ray.callbacks import NoCSV, NoTensorBoard

    with relied_on(compat.default_callbacks):
        ours = [NoTensorBoard(), NoCSV()]
        made = compat.default_callbacks(ours)
        assert [c for c in made if isinstance(c, (TBXLoggerCallback, CSVLoggerCallback))] == ours
        assert any(isinstance(c, JsonLoggerCallback) for c in made)  # result.json: resume and the ledger read it


def test_rays_optuna_search_keeps_its_trials_study_and_told_set():
    import optuna

    from hpsearch.ray.searchers import make_search_alg
    from hpsearch.space import Float, Space

    space = Space(Float("lr", 1e-4, 1e-1, log=True))
    searcher = make_search_alg("tpe", space, "acc", "max", 4, seed=0, max_epochs=3)
    searcher.suggest("t1")
    with relied_on(compat.optuna_trial):
        assert isinstance(compat.optuna_trial(searcher, "t1"), optuna.trial.Trial)
        assert compat.optuna_trial(searcher, "none") is None
    with relied_on(compat.optuna_study):
        assert isinstance(compat.optuna_study(searcher), optuna.study.Study)
    with relied_on(compat.optuna_told):
        searcher.on_trial_complete("t1", result={"acc": 0.4, "epoch": 1, "training_iteration": 1})
        assert "t1" in compat.optuna_told(searcher)
        assert compat.optuna_study(searcher).trials[0].state == optuna.trial.TrialState.PRUNED


@pytest.mark.parametrize("knob", sorted(compat.RAY_KNOBS))
def test_ray_still_reads_each_environment_knob_we_set(knob):
    import ray

    root = Path(ray.__file__).parent
    where = compat.RAY_KNOBS[knob].split(":")[0]
    assert re.search(re.escape(knob), (root.parent / where).read_text()), \
        f"{knob}: no longer read in {where} (Ray {ray.__version__}); hpsearch sets it for: {compat.RAY_KNOBS[knob]}"


def test_the_tested_ray_is_the_installed_one():
    import ray

    assert ray.__version__ == compat.TESTED_RAY, (
        f"Ray {ray.__version__} is installed, the compat module was checked against {compat.TESTED_RAY}: "
        "run these canaries, then update TESTED_RAY and the pin in pyproject.toml")


# -- MLflow ----------------------------------------------------------------------------------------

def test_fluent_tracking_uri_is_what_set_tracking_uri_set(tmp_path):
    import mlflow

    with relied_on(mlflow_compat.fluent_tracking_uri):
        before = mlflow_compat.fluent_tracking_uri()
        uri = "sqlite:///" + str(tmp_path / "canary.db")
        try:
            mlflow.set_tracking_uri(uri)
            assert mlflow_compat.fluent_tracking_uri() == uri
        finally:
            mlflow.set_tracking_uri(before)
        assert mlflow_compat.fluent_tracking_uri() == before


def test_sqlalchemy_engine_of_a_sqlite_store_and_none_for_a_server(mlflow_uri):
    from mlflow import MlflowClient

    with relied_on(mlflow_compat.sqlalchemy_engine):
        client = MlflowClient(tracking_uri=mlflow_uri)  # the session's store: creating one costs seconds
        client.search_experiments(max_results=1)
        engine = mlflow_compat.sqlalchemy_engine(client)
        assert engine is not None and engine.dialect.name == "sqlite"
        assert mlflow_compat.sqlalchemy_engine(MlflowClient(tracking_uri="http://127.0.0.1:9")) is None


def test_warm_requirements_map_builds_mlflows_cache():
    with relied_on(mlflow_compat.warm_requirements_map):
        assert mlflow_compat.warm_requirements_map() is True


@pytest.mark.slow  # the session's mlflow server (~10 s to start) is there for the slow tier anyway
def test_bound_http_passes_its_retries_and_timeout_for_this_client_only(mlflow_server, monkeypatch):
    from mlflow.utils import rest_utils

    from mlflow import MlflowClient

    seen = []
    real = rest_utils.http_request

    def spy(*args, **kwargs):
        seen.append((kwargs.get("max_retries"), kwargs.get("timeout")))
        return real(*args, **kwargs)

    monkeypatch.setattr(rest_utils, "http_request", spy)
    with relied_on(mlflow_compat.bound_http):
        bounded, plain = MlflowClient(tracking_uri=mlflow_server["uri"]), MlflowClient(tracking_uri=mlflow_server["uri"])
        assert mlflow_compat.bound_http(bounded, 1, 3.0) is True
        # A real server answers through the store's own routing (v2 and v3 endpoints alike).
        exp = bounded.create_experiment(f"bound-http-{time.time_ns()}")
        run = bounded.create_run(exp)
        bounded.set_tag(run.info.run_id, "k", "v")
        assert bounded.get_run(run.info.run_id).data.tags["k"] == "v"
        assert seen and set(seen) == {(1, 3.0)}
        seen.clear()
        plain.get_experiment(exp)  # another client of the same server keeps MLflow's own settings
        assert seen == [] or set(seen) == {(None, None)}
        assert mlflow_compat.bound_http(MlflowClient(tracking_uri="sqlite:///:memory:"), 1, 3.0) is False


@pytest.mark.slow  # the session's mlflow server (~10 s to start) is there for the slow tier anyway
def test_no_run_links_silences_set_terminated_for_this_client_only(mlflow_server, capsys, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    with relied_on(mlflow_compat.no_run_links):
        client = MlflowClient(tracking_uri=mlflow_server["uri"])
        exp = client.create_experiment(f"no-run-links-{time.time_ns()}")
        loud = client.create_run(exp).info.run_id
        client.set_terminated(loud)
        assert "View run" in capsys.readouterr().out  # what it silences does happen
        assert mlflow_compat.no_run_links(client) is True
        quiet = client.create_run(exp).info.run_id
        client.set_terminated(quiet)
        assert "View run" not in capsys.readouterr().out and client.get_run(quiet).info.status == "FINISHED"


def test_the_tested_mlflow_is_the_installed_one():
    import mlflow

    assert mlflow.__version__ == mlflow_compat.TESTED_MLFLOW, (
        f"MLflow {mlflow.__version__} is installed, the compat module was checked against "
        f"{mlflow_compat.TESTED_MLFLOW}: run these canaries, then update TESTED_MLFLOW and the pin in pyproject.toml")


def test_the_pins_name_the_tested_versions_and_stop_before_the_next_minor():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for name, tested in (("ray[tune,client]", compat.TESTED_RAY), ("mlflow", mlflow_compat.TESTED_MLFLOW)):
        major, minor, _ = (int(x) for x in tested.split("."))
        pin = re.search(rf'"{re.escape(name)}>=([\d.]+),<([\d.]+)"', text)
        assert pin, f"pyproject.toml: {name} needs a range >=tested,<next minor"
        low, high = pin.groups()
        assert tuple(int(x) for x in low.split(".")) <= (major, minor, int(tested.split(".")[2])) and \
            low.split(".")[:2] == [str(major), str(minor)] and high == f"{major}.{minor + 1}", (name, low, high)


def test_every_compat_function_has_a_canary():
    text = Path(__file__).read_text()
    functions = [(m, n) for m in (compat, mlflow_compat) for n, f in vars(m).items()
                 if inspect.isfunction(f) and f.__module__ == m.__name__ and not n.startswith("_")]
    missing = [f"{m.__name__}.{n}" for m, n in functions if f"compat.{n}" not in text]
    assert not missing, missing


# -- sweeps saved before the sub-packages ------------------------------------------------------------

# What Ray pickled of a sweep started before hpsearch's sub-packages (its Tuner, searcher state and
# callback states: read from such a sweep's files), and where each lives now.
LEGACY_NAMES = {
    "hpsearch.callbacks.InterruptWatch": "hpsearch.ray.callbacks.InterruptWatch",
    "hpsearch.callbacks.Groundwork": "hpsearch.ray.callbacks.Groundwork",
    "hpsearch.callbacks.NoTensorBoard": "hpsearch.ray.callbacks.NoTensorBoard",
    "hpsearch.callbacks.NoCSV": "hpsearch.ray.callbacks.NoCSV",
    "hpsearch.engine.trial_dirname": "hpsearch.ray.tuner.trial_dirname",
    "hpsearch.params.Fixed": "hpsearch.space.params.Fixed",
    "hpsearch.params.Float": "hpsearch.space.params.Float",
    "hpsearch.params.Choice": "hpsearch.space.params.Choice",
    "hpsearch.space.Space": "hpsearch.space.space.Space",
    "hpsearch.persist.ResumableASHA": "hpsearch.ray.schedulers.ResumableASHA",
    "hpsearch.persist.ResumableHyperBand": "hpsearch.ray.schedulers.ResumableHyperBand",
    "hpsearch.persist.SchedulerState": "hpsearch.ray.schedulers.SchedulerState",
    "hpsearch.progress.ProgressCallback": "hpsearch.ray.callbacks.ProgressCallback",
    "hpsearch.stopper.SweepStop": "hpsearch.ray.stopper.SweepStop",
    "hpsearch.strategies.define_by_run": "hpsearch.search.strategies.define_by_run",
    "hpsearch.tpe.PrunedAwareOptunaSearch": "hpsearch.ray.searchers.PrunedAwareOptunaSearch",
    "hpsearch.tracking.MlflowCallback": "hpsearch.ray.callbacks.MlflowCallback",
    "hpsearch.trial.trial_entry": "hpsearch.trial.entry.trial_entry",
    "hpsearch.trial.Replay": "hpsearch.trial.entry.Replay",
    "hpsearch.data.Dataset": "hpsearch.trial.data.Dataset",
    "hpsearch.settings.SweepSettings": "hpsearch.settings.SweepSettings",
    "hpsearch.vocab.StopReason": "hpsearch.vocab.StopReason",
}


def test_names_pickled_before_the_sub_packages_resolve_where_they_live_now():
    import json
    import subprocess
    import sys

    code = (
        "import json, pickle, sys\n"
        "from hpsearch.ray import legacy\n"
        "legacy.install()\n"
        "from hpsearch.trial import ddp, session, spec\n"  # the packages' own submodules still import
        "out = {}\n"
        f"for old in {sorted(LEGACY_NAMES)!r}:\n"
        "    module, name = old.rsplit('.', 1)\n"
        "    obj = pickle.loads(('c' + module + '\\n' + name + '\\n.').encode())\n"
        "    out[old] = obj.__module__ + '.' + obj.__qualname__\n"
        "print(json.dumps(out))\n"
    )
    found = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert found == LEGACY_NAMES


def test_a_restarting_trial_keeps_its_local_result_json_and_reads_storage_only_without_one(tmp_path):
    # A trial restarting from a checkpoint: Ray's JSON logger copies result.json from storage over
    # the driver's local copy (compat.restore_logger_file), losing what storage has not received yet.
    from types import SimpleNamespace

    import pyarrow.fs
    from ray.tune.logger import JsonLoggerCallback

    from hpsearch.ray.callbacks import ResultJson

    class Trial(SimpleNamespace):  # the logger keys its open files by trial
        __hash__ = object.__hash__

    def trial(name):
        local, stored = tmp_path / name / "local", tmp_path / name / "stored"
        local.mkdir(parents=True)
        stored.mkdir(parents=True)
        (stored / "result.json").write_text('{"epoch": 1}\n')  # the last snapshot's copy
        storage = SimpleNamespace(trial_fs_path=str(stored), storage_filesystem=pyarrow.fs.LocalFileSystem())
        return Trial(local_path=str(local), storage=storage, checkpoint=object(), config={},
                     init_local_path=lambda: None), local / "result.json"

    with relied_on(compat.restore_logger_file):
        # Ray's own logger: the epochs since the snapshot are gone (the defect ResultJson mends).
        ray_trial, ray_file = trial("ray")
        ray_file.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
        JsonLoggerCallback().log_trial_start(ray_trial)
        assert ray_file.read_text().count("epoch") == 1
        # Ours keeps the local file where it exists...
        kept_trial, kept = trial("kept")
        kept.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
        ResultJson().log_trial_start(kept_trial)
        assert kept.read_text().count("epoch") == 3
        # ...and reads the copy in storage where there is none (a resume elsewhere).
        new_trial, new = trial("new")
        ResultJson().log_trial_start(new_trial)
        assert new.read_text().count("epoch") == 1
