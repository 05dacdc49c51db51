"""MLflow: one parent run per sweep, one nested child run per trial, written from the driver.

A Ray Tune callback on the driver is the only writer: trials never talk to MLflow, so there is
no "database is locked" from many processes, and the same code serves SQLite and a remote
``http://`` server. Metrics are buffered and sent with ``log_batch``; a child run is found again
by its trial id, so a retried or resumed trial continues its own run instead of starting another.

Example:
    >>> resolve_tracking_uri(False) is None
    True
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from hpsearch.space import Space
from hpsearch.sweep import SweepSettings, _driver_callback_base, _status

log = logging.getLogger(__name__)

TAG_SWEEP = "hpsearch.sweep"
TAG_TRIAL = "hpsearch.trial_id"
TAG_STATUS = "hpsearch.status"
TAG_BEST = "hpsearch.best_run_id"

# Keys Ray adds to every result; everything else a trial reports is a metric worth a curve.
_RAY_KEYS = {
    "epoch", "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "node_id", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint", "experiment_tag",
    "timesteps_total", "episodes_total", "timesteps_since_restore", "config",
}
_SECRET = re.compile(r"(^|[_.-])(token|password|passwd|secret|api_?key|key|credentials?)($|[_.-])", re.I)
FLUSH_SECONDS = 2.0


def mask(name: str, value: Any) -> Any:
    """Values whose names look like secrets are never logged.

    Example:
        >>> mask("api_key", "abc"), mask("lr", 0.1)
        ('***', 0.1)
    """
    return "***" if _SECRET.search(name) else value


def embedded_uri() -> str:
    """SQLite at ``mlflow/mlflow.db`` under the current directory (the repository, for the scripts)."""
    return "sqlite:///" + str(Path.cwd() / "mlflow" / "mlflow.db")


def resolve_tracking_uri(uri: str | bool | None) -> str | None:
    """False turns tracking off; None means $MLFLOW_TRACKING_URI, else the embedded store."""
    if uri is False:
        return None
    if uri is None or uri is True:
        return os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"tracking_uri: give a URI such as http://127.0.0.1:5000 or sqlite:///path, got {uri!r}")
    return uri


def check_reachable(uri: str) -> None:
    """Fail with one line, before any trial runs, when the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=5)
        except requests.RequestException as exc:
            raise ValueError(f"tracking_uri: cannot reach the MLflow server at {uri} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ValueError(f"tracking_uri: {uri}/health answered HTTP {response.status_code}, not an MLflow server")
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"tracking_uri: cannot create {str(path.parent)!r} for the SQLite store ({exc.strerror})") from None
    elif "://" not in uri and not uri.startswith("databricks"):
        raise ValueError(f"tracking_uri: not a URI (http://..., sqlite:///..., postgresql://...), got {uri!r}")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _plain_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _param_value(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text[:6000]  # MLflow's limit on a param value


class SweepTracker:
    """The MLflow side of one sweep: creates or finds the parent run and the child runs."""

    def __init__(self, settings: SweepSettings, space: Space) -> None:
        from mlflow import MlflowClient

        if not settings.tracking_uri:
            raise ValueError("tracking_uri: tracking is off for this sweep")
        self.uri, self.experiment_name, self.settings = settings.tracking_uri, settings.experiment, settings
        self.client = MlflowClient(tracking_uri=self.uri)
        self.space = space
        self.children: dict[str, str] = {}  # trial id -> child run id
        self.resumed = False  # set when the parent run already existed: reconcile before going on
        self._buffers: dict[str, list] = {}
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.experiment_id = self._experiment()
        self.parent_id = self._parent()

    # -- runs --------------------------------------------------------------------------------

    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        artifact_location = None
        if self.uri.startswith("sqlite:///"):
            # Keep artifacts beside the embedded store rather than in ./mlruns.
            artifact_location = (Path(self.uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=artifact_location)
        except Exception:  # another sweep created it in the meantime
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def _parent(self) -> str:
        s = self.settings
        found = self.client.search_runs(
            [self.experiment_id], f"tags.`{TAG_SWEEP}` = '{s.name}' and tags.`hpsearch.role` = 'sweep'", max_results=1
        )
        if found:  # a resumed sweep continues its own parent run
            self.resumed = True
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            for child in self.client.search_runs(
                [self.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=50000
            ):
                trial_id = child.data.tags.get(TAG_TRIAL)
                if trial_id:
                    self.children[trial_id] = child.info.run_id
            return run_id
        import ray

        from hpsearch import __version__

        tags = {
            TAG_SWEEP: s.name, "hpsearch.role": "sweep", "hpsearch.version": __version__,
            "hpsearch.ray_resources": json.dumps({k: v for k, v in ray.cluster_resources().items()
                                                  if not k.startswith("node:")}),
            "mlflow.note.content": f"hpsearch sweep {s.name}: {s.strategy} search, {s.scheduler} scheduler, "
                                   f"{s.trials} trials of up to {s.max_epochs} epochs, optimising {s.metric} ({s.mode}).",
        }
        commit = _git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=s.name)
        from mlflow.entities import Param

        params = {k: v for k, v in asdict(s).items() if k not in ("space", "name", "tracking_uri")}
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_value(mask(k, v))) for k, v in params.items()])
        self.client.log_text(run.info.run_id, self.space.to_json(), "space.json")
        return run.info.run_id

    def child(self, trial) -> str:
        """The child run of a trial: created once, found again on retry or resume."""
        if trial.trial_id in self.children:
            return self.children[trial.trial_id]
        from mlflow.entities import Param

        config = dict(trial.config)
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{trial.trial_id}",
            tags={"mlflow.parentRunId": self.parent_id, TAG_SWEEP: self.settings.name, TAG_TRIAL: trial.trial_id,
                  "hpsearch.role": "trial", TAG_STATUS: "running",
                  "hpsearch.config_hash": self.space.config_hash(config)},
        )
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_value(mask(k, v))) for k, v in sorted(config.items())])
        self.children[trial.trial_id] = run.info.run_id
        return run.info.run_id

    # -- metrics ---------------------------------------------------------------------------

    def add_result(self, trial, result: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        run_id = self.child(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)) or 0)
        when = int(float(result.get("timestamp") or time.time()) * 1000)  # Ray's time of the report
        metrics = [Metric(k, v, when, step) for k, v in ((k, _plain_number(v)) for k, v in result.items()
                                                       if k not in _RAY_KEYS) if v is not None]
        with self._lock:
            self._buffers.setdefault(run_id, []).extend(metrics)
        if time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self, run_id: str | None = None) -> None:
        """Send buffered metrics, up to MLflow's 1000 per batch call."""
        with self._lock:
            ids = [run_id] if run_id else list(self._buffers)
            batches = {r: self._buffers.pop(r, []) for r in ids}
            self._last_flush = time.monotonic()
        for r, metrics in batches.items():
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(r, metrics=metrics[i : i + 1000])

    # -- endings ---------------------------------------------------------------------------

    def end_trial(self, trial, status: str, error: str | None = None, traceback: str | None = None) -> None:
        run_id = self.child(trial)
        self.flush(run_id)
        last = trial.last_result or {}
        epochs = int(last.get("epoch", 0) or 0)
        self.client.set_tag(run_id, TAG_STATUS, status)
        self.client.set_tag(run_id, "hpsearch.epochs", str(epochs))
        if status == "stopped":
            self.client.set_tag(run_id, "hpsearch.stopped_at_epoch", str(epochs))
            self.client.set_tag(run_id, "mlflow.note.content", f"Stopped early by the {self.settings.scheduler} "
                                                                 f"scheduler at epoch {epochs} of {self.settings.max_epochs}.")
        if status == "failed":
            self.client.set_tag(run_id, "hpsearch.error", (error or "unknown error")[:5000])
            if traceback:
                self.client.log_text(run_id, traceback, "traceback.txt")
        self.client.set_terminated(run_id, "FAILED" if status == "failed" else "FINISHED")

    def reconcile(self, trials) -> int:
        """After a resume, make MLflow hold everything Ray recorded; returns the metrics backfilled.

        A killed driver loses what it had buffered (up to FLUSH_SECONDS of metrics) and the endings
        of trials that finished meanwhile; Ray persisted both (each trial's result.json and state).
        """
        backfilled = 0
        for trial in trials:
            results = _ray_results(trial)
            if not results and trial.trial_id not in self.children:
                continue
            run_id = self.child(trial)
            have = {m.step for m in self.client.get_metric_history(run_id, self.settings.metric)}
            for result in results:
                if int(result.get("epoch", 0) or 0) not in have:
                    self.add_result(trial, result)
                    backfilled += 1
            self.flush(run_id)
            run = self.client.get_run(run_id)
            if trial.status in ("TERMINATED", "ERROR") and run.info.status == "RUNNING":
                status = "failed" if trial.status == "ERROR" else _status(trial, self.settings.max_epochs)
                self.end_trial(trial, status, error=_error_line(trial))
        return backfilled

    def retrying(self, trial) -> None:
        run_id = self.child(trial)
        self.flush(run_id)
        self.client.set_tag(run_id, "hpsearch.retries", str(trial.num_failures))

    def log_model(self, model, input_example) -> str:
        """Log the best trial's model on the parent run; ``mlflow.pytorch.load_model`` gives it back."""
        import mlflow
        import mlflow.pytorch
        import torch

        import mlflow.tracking._tracking_service.utils as tracking_utils

        # log_model works only through the fluent API's active run, and set_tracking_uri also
        # writes MLFLOW_TRACKING_URI into the environment; put both back exactly as they were so a
        # caller's later runs and load_model calls are not redirected.
        old_global, old_env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        try:
            with mlflow.start_run(run_id=self.parent_id):
                info = mlflow.pytorch.log_model(
                    # pickle: loads back as the same nn.Module (torch.export would give a graph) in
                    # 0.1 s rather than 2.4 s here.
                    model, name="best_model", input_example=input_example, serialization_format="pickle",
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
        finally:
            mlflow.set_tracking_uri(old_global)
            if old_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old_env
        self.client.set_tag(self.parent_id, "hpsearch.best_model_uri", info.model_uri)
        return info.model_uri

    def finish(self, result, status: str = "FINISHED") -> None:
        """Close the sweep: best trial's metrics and a pointer to its child run on the parent."""
        self.flush()
        # Trials Ray never ended (a deadline, an interrupt) must not stay RUNNING in the UI.
        for t in result.trials:
            run_id = self.children.get(t.trial_id)
            if run_id and t.status in ("running", "pending"):
                self.client.set_tag(run_id, TAG_STATUS, "interrupted")
                self.client.set_terminated(run_id, "KILLED")
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        counts = result.counts()
        metrics = [Metric(f"trials_{k}", float(v), now, 0) for k, v in counts.items()]
        metrics += [Metric("total_epochs", float(result.total_epochs), now, 0),
                    Metric("wall_seconds", float(result.wall_s), now, 0)]
        if result.best is not None:
            for k, v in result.best.metrics.items():
                if _plain_number(v) is not None:
                    metrics.append(Metric(f"best_{k}", float(v), now, 0))
            self.client.set_tag(self.parent_id, TAG_BEST, self.children.get(result.best.trial_id, ""))
            self.client.set_tag(self.parent_id, "hpsearch.best_trial_id", result.best.trial_id)
            self.client.set_tag(self.parent_id, "hpsearch.best_config", json.dumps(result.best.config)[:5000])
        self.client.log_batch(self.parent_id, metrics=metrics)
        self.client.set_terminated(self.parent_id, status)


def _ray_results(trial) -> list[dict[str, Any]]:
    """Every result Ray persisted for a trial (its result.json, one JSON object a line)."""
    for folder in (getattr(trial, "path", None), getattr(trial, "local_path", None)):
        path = Path(folder, "result.json") if folder else None
        if path and path.exists():
            out = []
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line cut short by the kill
                    continue
            return out
    return []


def _error_line(trial) -> str | None:
    from hpsearch.sweep import _error_text

    return _error_text(trial)


class MlflowCallback(_driver_callback_base()):
    """Feeds a ``SweepTracker`` from Ray Tune's driver-side events."""

    def __init__(self, tracker: SweepTracker) -> None:
        self.tracker, self.space = tracker, tracker.space

    def _live(self) -> bool:
        return getattr(self, "tracker", None) is not None

    def on_step_begin(self, iteration, trials, **info):
        if self._live() and self.tracker.resumed:
            self.tracker.resumed = False  # once, with every restored trial in hand
            self.tracker.reconcile([_Completed(t, self.space) for t in trials])

    def on_trial_start(self, iteration, trials, trial, **info):
        if self._live():
            self.tracker.child(_Completed(trial, self.space))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self._live():
            self.tracker.add_result(_Completed(trial, self.space), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self._live():
            status = _status(trial, self.tracker.settings.max_epochs, ended=True)
            self.tracker.end_trial(_Completed(trial, self.space), status)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if self._live():
            self.tracker.retrying(_Completed(trial, self.space))

    def on_trial_error(self, iteration, trials, trial, **info):
        if self._live():
            text = None
            path = getattr(trial, "error_file", None)
            if path and os.path.exists(path):
                text = Path(path).read_text(errors="replace")
            self.tracker.end_trial(_Completed(trial, self.space), "failed", _error_line(trial), text)


class _Completed:
    """A trial seen with its config completed by the space (Ray leaves inactive values as None)."""

    def __init__(self, trial, space) -> None:
        self._trial, self.config = trial, space.complete(trial.config)

    def __getattr__(self, name):
        return getattr(self._trial, name)

    def __str__(self) -> str:
        return str(self._trial)
