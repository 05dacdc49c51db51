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
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from hpsearch.space import Space
from hpsearch.sweep import REUSED_KEY, SweepSettings, _driver_callback_base, _error_text, _status, _trial_dir, read_results

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


def _write_ahead_log(path: str) -> None:
    """Put a SQLite store in WAL mode (it stays so: the mode is kept in the file).

    Each write then takes about 60% of the time it takes with the default rollback journal (here
    create_run 5.5 ms against 8.6 ms, log_batch 3.9 against 6.7, set_terminated 2.9 against 5.0),
    and the MLflow UI reading the store no longer blocks the sweep writing it ("database is
    locked"). WAL needs the file on a local disk, as SQLite itself does for safe locking.
    """
    import sqlite3

    try:
        with sqlite3.connect(path, timeout=30) as con:
            con.execute("PRAGMA journal_mode=WAL")
        con.close()
    except sqlite3.Error as exc:  # a store we can still write in its present mode
        log.debug("SQLite store %s left in its journal mode: %s", path, exc)


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


PENDING_FILE = "mlflow-pending.jsonl"
_MERGE_WINDOW = 256  # queued operations the writer looks through for more of the same run's batch


def _fits(metrics: int, params: int, tags: int) -> bool:
    """Within MLflow's limits for one log_batch call."""
    return metrics <= 1000 and params <= 100 and tags <= 100 and metrics + params + tags <= 1000


def merge_head(queue: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[int]]:
    """The operation to send next, and the queue positions it stands for.

    A ``log_batch`` at the head takes in the later ``log_batch`` operations of the same run (up to
    MLflow's limits per call), as long as no other operation of that run lies between: each call
    costs a SQLite transaction (~5 ms of CPU here). The writer calls this when it takes the next
    operation, so merging happens when it is behind, which is when it pays.

    Example:
        >>> q = [{"op": "log_batch", "ref": "a", "metrics": [1]}, {"op": "create_run", "ref": "b"},
        ...      {"op": "log_batch", "ref": "a", "tags": {"t": "x"}}, {"op": "set_status", "ref": "a"},
        ...      {"op": "log_batch", "ref": "a", "metrics": [2]}]
        >>> op, taken = merge_head(q)
        >>> taken, op["metrics"], op["tags"]
        ([0, 2], [1], {'t': 'x'})
    """
    head = queue[0]
    if head["op"] != "log_batch":
        return head, [0]
    ref = head["ref"]
    metrics, params, tags = list(head.get("metrics", ())), dict(head.get("params", {})), dict(head.get("tags", {}))
    taken = [0]
    for i in range(1, min(len(queue), _MERGE_WINDOW)):
        op = queue[i]
        if op["ref"] != ref:
            continue
        if op["op"] != "log_batch":
            break
        m, p, t = op.get("metrics", ()), op.get("params", {}), op.get("tags", {})
        if not _fits(len(metrics) + len(m), len(params.keys() | p.keys()), len(tags.keys() | t.keys())) or \
                any(k in params for k in p):
            break
        metrics += m
        params.update(p)
        tags.update(t)  # a tag set twice: the later value, as two calls would leave it
        taken.append(i)
    if len(taken) == 1:
        return head, taken
    return {"op": "log_batch", "ref": ref, "metrics": metrics, "params": params, "tags": tags}, taken


def drain_seconds() -> float:
    """How long the end of a sweep waits for an unreachable MLflow before keeping writes on disk."""
    return float(os.environ.get("HPSEARCH_MLFLOW_DRAIN_S", "120"))


class _Writer:
    """The one writer to MLflow: an ordered queue of small operations drained by a thread.

    The driver's event loop only enqueues, so a slow or unreachable server never stalls trials.
    Operations are plain JSON (run references, not run objects), so what cannot be delivered can
    be written to disk and replayed later in the same order. While MLflow is unreachable the head
    operation is retried with backoff; nothing behind it is skipped.
    """

    def __init__(self, client, experiment_id: str, runs: dict[str, str]) -> None:
        self.client, self.experiment_id = client, experiment_id
        self.runs = runs  # reference ("parent", "trial:<id>") -> MLflow run id
        self.queue: deque[dict[str, Any]] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0
        self.thread = threading.Thread(target=self._loop, name="hpsearch-mlflow-writer", daemon=True)
        self.thread.start()

    def submit(self, op: dict[str, Any]) -> None:
        with self.cond:
            self.queue.append(op)
            self.cond.notify_all()

    def runs_snapshot(self) -> dict[str, str]:
        with self.cond:
            return dict(self.runs)

    def _loop(self) -> None:
        delay = 1.0
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                op, taken = merge_head(self.queue)
                originals = [self.queue[i] for i in taken]
            try:
                self._execute(op)
            except Exception as exc:  # any failure to write: keep the op, retry later
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if self.failing_since is None:
                    self.failing_since, self.outages = time.monotonic(), self.outages + 1
                    log.warning("MLflow unreachable (%s); keeping writes and retrying", self.last_error)
                with self.cond:
                    self.cond.wait(timeout=delay)
                delay = min(delay * 2, 15.0)
                continue
            delay = 1.0
            with self.cond:
                # Only this thread removes, and others only append: the positions still hold.
                for i, original in sorted(zip(taken, originals), reverse=True, key=lambda x: x[0]):
                    if i < len(self.queue) and self.queue[i] is original:
                        del self.queue[i]
                if self.failing_since is not None:
                    log.warning("MLflow reachable again after %.0f s", time.monotonic() - self.failing_since)
                    self.failing_since = None
                self.cond.notify_all()

    def _execute(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind, ref = op["op"], op["ref"]
        if kind == "create_run":
            if ref not in self.runs:
                run = self.client.create_run(self.experiment_id, run_name=op["name"], tags=op["tags"])
                with self.cond:
                    self.runs[ref] = run.info.run_id
            return
        run_id = self.runs[ref]
        if kind == "log_batch":
            self.client.log_batch(
                run_id, metrics=[Metric(*m) for m in op.get("metrics", ())],
                params=[Param(k, v) for k, v in op.get("params", {}).items()],
                tags=[RunTag(k, v) for k, v in op.get("tags", {}).items()],
            )
        elif kind == "log_text":
            self.client.log_text(run_id, op["text"], op["file"])
        elif kind == "set_status":
            if op["status"] == "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, op["status"])
        else:
            raise ValueError(f"unknown tracking operation {kind!r}")

    def drain(self, timeout: float) -> bool:
        """Wait until every operation is delivered; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(timeout=min(left, 1.0))
        return True

    def close(self, timeout: float) -> list[dict[str, Any]]:
        """Drain for up to ``timeout``, stop the thread, and return what was not delivered."""
        self.drain(timeout)
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout=90)  # an operation in flight ends within MLflow's own retries
        return list(self.queue)


class SweepTracker:
    """The MLflow side of one sweep: the parent run, one child per trial, batched metrics."""

    def __init__(self, settings: SweepSettings, space: Space) -> None:
        from mlflow import MlflowClient

        if not settings.tracking_uri:
            raise ValueError("tracking_uri: tracking is off for this sweep")
        # A blocked write must end in seconds, not MLflow's default ~4 minutes of retries, so the
        # writer can keep the rest in order; and no "View run" line on stdout per trial.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri, self.experiment_name, self.settings = settings.tracking_uri, settings.experiment, settings
        if self.uri.startswith("sqlite:///"):
            from filelock import FileLock

            # MLflow creates and migrates a SQLite store's tables when a client first opens it; two
            # sweeps starting together on a new store race there ("table ... already exists").
            with FileLock(self.uri[len("sqlite:///"):] + ".lock", timeout=300):
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)
                _write_ahead_log(self.uri[len("sqlite:///"):])
        else:
            self.client = MlflowClient(tracking_uri=self.uri)
        self.space = space
        self.resumed = False  # set when the parent run already existed: reconcile before going on
        self.continued = False  # the same, but stays set
        self._buffers: dict[str, list] = {}  # ref -> metrics not yet queued
        self._params: dict[str, dict[str, str]] = {}  # ref -> parameters not yet queued
        self._tag_buffers: dict[str, dict[str, str]] = {}  # ref -> tags not yet queued
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._known: set[str] = set()  # trials whose child run is created or queued
        # Steps already sent per run: a trial resumed from a checkpoint older than its last report
        # repeats an epoch (Ray snapshots its state periodically); its curve keeps one point a step.
        self._steps: dict[str, set[int]] = {}
        self._ended: set[str] = set()  # trials whose ending is queued
        self._reused: dict[str, tuple[str, int]] = {}  # ref -> (source, epochs replayed)
        # trial id -> {epoch: value of the sweep's metric}: the report at the end draws from this
        # rather than reading every curve back from MLflow.
        self._curves: dict[str, dict[int, float]] = {}
        self.experiment_id = self._experiment()
        runs = self._parent()  # synchronous: an unusable store fails here, before any trial
        self.parent_id = runs["parent"]
        self._known |= {ref.split(":", 1)[1] for ref in runs if ref.startswith("trial:")}
        self.writer = _Writer(self.client, self.experiment_id, runs)

    @property
    def children(self) -> dict[str, str]:
        """Trial id -> child run id, for the runs created so far."""
        return {ref.split(":", 1)[1]: rid for ref, rid in self.writer.runs_snapshot().items() if ref.startswith("trial:")}

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

    def _parent(self) -> dict[str, str]:
        s = self.settings
        found = self.client.search_runs(
            [self.experiment_id], f"tags.`{TAG_SWEEP}` = '{s.name}' and tags.`hpsearch.role` = 'sweep'", max_results=1
        )
        if found:  # a resumed sweep continues its own parent run and children
            self.resumed = self.continued = True
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return {"parent": run_id, **children_of(self.client, self.experiment_id, run_id)}
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
        return {"parent": run.info.run_id}

    def child(self, trial) -> str:
        """The reference of a trial's child run: created once, found again on retry or resume."""
        ref = f"trial:{trial.trial_id}"
        if trial.trial_id in self._known:
            return ref
        self._known.add(trial.trial_id)
        config = dict(trial.config)
        self.writer.submit({"op": "create_run", "ref": ref, "name": f"trial-{trial.trial_id}", "tags": {
            "mlflow.parentRunId": self.parent_id, TAG_SWEEP: self.settings.name, TAG_TRIAL: trial.trial_id,
            "hpsearch.role": "trial", TAG_STATUS: "running", "hpsearch.config_hash": self.space.config_hash(config)}})
        # The parameters go with the trial's first batch of metrics (or its ending): one SQLite
        # transaction instead of two, ~5 ms of CPU a trial, which short trials notice.
        with self._lock:
            self._params[ref] = {k: _param_value(mask(k, v)) for k, v in sorted(config.items())}
        return ref

    def _tags(self, ref: str, tags: Mapping[str, str]) -> None:
        """Queue tags for a run now, with whatever it has buffered."""
        with self._lock:
            self._tag_buffers.setdefault(ref, {}).update({k: str(v)[:5000] for k, v in tags.items()})
        self.flush(ref)

    # -- metrics ---------------------------------------------------------------------------

    def add_result(self, trial, result: Mapping[str, Any]) -> None:
        ref = self.child(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)) or 0)
        steps = self._steps.setdefault(ref, set())
        if step in steps:
            return
        steps.add(step)
        if REUSED_KEY in result:
            source, n = self._reused.get(ref, (str(result[REUSED_KEY]), 0))
            self._reused[ref] = (source, n + 1)
        value = _plain_number(result.get(self.settings.metric))
        if value is not None:
            self._curves.setdefault(trial.trial_id, {})[step] = value
        when = int(float(result.get("timestamp") or time.time()) * 1000)  # Ray's time of the report
        metrics = [(k, v, when, step) for k, v in ((k, _plain_number(v)) for k, v in result.items()
                                                  if k not in _RAY_KEYS) if v is not None]
        with self._lock:
            self._buffers.setdefault(ref, []).extend(metrics)
        self.maybe_flush()

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self, ref: str | None = None) -> None:
        """Queue what runs have buffered (parameters, metrics, tags) as few ``log_batch`` calls as
        MLflow's limits allow (100 parameters, 100 tags, 1000 items a call)."""
        with self._lock:
            refs = [ref] if ref else list(self._buffers.keys() | self._params.keys() | self._tag_buffers.keys())
            batches = {r: (list(self._params.pop(r, {}).items()), self._buffers.pop(r, []),
                           list(self._tag_buffers.pop(r, {}).items())) for r in refs}
            if ref is None:
                self._last_flush = time.monotonic()
        for r, (params, metrics, tags) in batches.items():
            while params or metrics or tags:
                p, params = params[:100], params[100:]
                t, tags = tags[:100], tags[100:]
                room = 1000 - len(p) - len(t)
                m, metrics = metrics[:room], metrics[room:]
                self.writer.submit({"op": "log_batch", "ref": r, "params": dict(p), "metrics": m, "tags": dict(t)})

    # -- endings ---------------------------------------------------------------------------

    def end_trial(self, trial, status: str, error: str | None = None, traceback: str | None = None,
                  by: str | None = None) -> None:
        """``by``: what stopped a trial early: the scheduler (default), ``deadline`` or ``driver``."""
        ref = self.child(trial)
        self._ended.add(trial.trial_id)
        last = trial.last_result or {}
        epochs = int(last.get("epoch", 0) or 0)
        tags = {TAG_STATUS: status, "hpsearch.epochs": str(epochs)}
        notes = []
        if ref in self._reused:
            source, n = self._reused[ref]
            tags.update({"hpsearch.reused_from": source, "hpsearch.reused_epochs": str(n)})
            notes.append(f"Not trained again for {'epoch 1' if n == 1 else f'epochs 1-{n}'}: reused the result of "
                         f"{source} (same configuration, budget, data and code version).")
        if status == "stopped":
            tags["hpsearch.stopped_at_epoch"] = str(epochs)
            tags["hpsearch.stopped_by"] = by or self.settings.scheduler
            notes.append(f"Stopped early by {'the ' + (by or self.settings.scheduler + ' scheduler')} at epoch "
                         f"{epochs} of {self.settings.max_epochs}.")
        if notes:
            tags["mlflow.note.content"] = " ".join(notes)
        if status == "failed":
            tags["hpsearch.error"] = (error or "unknown error")[:5000]
        self._tags(ref, tags)  # with the trial's last metrics (and parameters, if still held): one write
        if status == "failed" and traceback:
            self.writer.submit({"op": "log_text", "ref": ref, "text": traceback, "file": "traceback.txt"})
        self.writer.submit({"op": "set_status", "ref": ref, "status": "FAILED" if status == "failed" else "FINISHED"})

    def reconcile(self, trials) -> int:
        """After a resume, make MLflow hold everything Ray recorded; returns the metrics backfilled.

        A killed driver loses what it had buffered (up to FLUSH_SECONDS of metrics) and the endings
        of trials that finished meanwhile; Ray persisted both (each trial's result.json and state).
        """
        backfilled = 0
        for trial in trials:
            results = read_results(_trial_dir(trial))
            if not results and trial.trial_id not in self._known:
                continue
            run_id = self.writer.runs_snapshot().get(f"trial:{trial.trial_id}")
            ref = self.child(trial)
            have = {m.step for m in self.client.get_metric_history(run_id, self.settings.metric)} if run_id else set()
            self._steps.setdefault(ref, set()).update(have)
            for result in results:
                if int(result.get("epoch", 0) or 0) not in self._steps[ref]:
                    self.add_result(trial, result)
                    backfilled += 1
            self.flush(ref)
            running = run_id is None or self.client.get_run(run_id).info.status == "RUNNING"
            if trial.status in ("TERMINATED", "ERROR") and running:
                status = "failed" if trial.status == "ERROR" else _status(trial, self.settings.max_epochs)
                self.end_trial(trial, status, error=_error_text(trial))
        return backfilled

    def sweep_data(self, result):
        """The report's input, from what this tracker saw; None for a resumed sweep, whose earlier
        curves only MLflow holds."""
        from hpsearch.analysis import SweepData, TrialRow

        if self.continued:
            return None
        rows, children = [], self.children
        for t in result.trials:
            run_id = children.get(t.trial_id)
            if run_id is None:  # never started
                continue
            curve = sorted(self._curves.get(t.trial_id, {}).items())
            rows.append(TrialRow(
                run_id=run_id, trial_id=t.trial_id,
                status="interrupted" if t.status in ("running", "pending") else t.status, epochs=t.epochs,
                params={k: _param_value(mask(k, v)) for k, v in t.config.items()},
                value=curve[-1][1] if curve else None, curve=curve,
            ))
        rows.sort(key=lambda r: r.trial_id)
        s = self.settings
        return SweepData(s.name, self.parent_id, s.metric, s.mode, s.max_epochs, self.space, rows)

    def retrying(self, trial) -> None:
        ref = self.child(trial)
        self.flush(ref)
        self._tags(ref, {"hpsearch.retries": str(trial.num_failures)})

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
        self._tags("parent", {"hpsearch.best_model_uri": info.model_uri})
        return info.model_uri

    def finish(self, result, status: str = "FINISHED") -> None:
        """Close the sweep: best trial's metrics and a pointer to its child run on the parent."""
        self.flush()
        now = int(time.time() * 1000)
        # Trials Ray never ended (a deadline, an interrupt) must not stay RUNNING in the UI.
        for t in result.trials:
            if t.trial_id not in self._known or t.trial_id in self._ended:
                continue
            if t.status in ("running", "pending"):
                self._tags(f"trial:{t.trial_id}", {TAG_STATUS: "interrupted"})
                self.writer.submit({"op": "set_status", "ref": f"trial:{t.trial_id}", "status": "KILLED"})
            else:  # stopped by Ray without a trial event: the deadline or the goal
                self.end_trial(_Ended(t), t.status, by=result.stopped_by or "driver")
        metrics = [(f"trials_{k}", float(v), now, 0) for k, v in result.counts().items()]
        metrics += [("total_epochs", float(result.total_epochs), now, 0), ("wall_seconds", float(result.wall_s), now, 0)]
        tags = {"hpsearch.stopped_by": result.stopped_by} if result.stopped_by else {}
        if result.best is not None:
            metrics += [(f"best_{k}", float(v), now, 0) for k, v in result.best.metrics.items()
                        if _plain_number(v) is not None]
            tags.update({TAG_BEST: self.children.get(result.best.trial_id, ""), "hpsearch.best_trial_id": result.best.trial_id,
                         "hpsearch.best_config": json.dumps(result.best.config)[:5000]})
        self.writer.submit({"op": "log_batch", "ref": "parent", "metrics": metrics, "tags": tags})
        self.writer.submit({"op": "set_status", "ref": "parent", "status": status})

    def close(self, storage_dir: str | Path) -> tuple[Path, int] | None:
        """Deliver what is queued; if MLflow stays unreachable, keep the rest on disk for replay.

        Returns the journal's path and how many writes it holds, or None when all were delivered.
        """
        self.flush()
        left = self.writer.close(drain_seconds())
        if not left:
            return None
        path = Path(storage_dir) / PENDING_FILE
        with open(path, "a") as f:
            f.write(json.dumps({"header": {"tracking_uri": self.uri, "experiment_id": self.experiment_id,
                                           "parent_run_id": self.parent_id, "runs": self.writer.runs_snapshot()}}) + "\n")
            for op in left:
                f.write(json.dumps(op) + "\n")
        log.warning("MLflow unreachable at the end of the sweep: %d writes kept in %s", len(left), path)
        return path, len(left)


def children_of(client, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """References of the child runs a parent already has: ``trial:<id>`` -> run id."""
    out = {}
    for child in client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=50000):
        trial_id = child.data.tags.get(TAG_TRIAL)
        if trial_id:
            out[f"trial:{trial_id}"] = child.info.run_id
    return out


def replay(path: str | Path, tracking_uri: str | None = None, timeout: float = 600) -> int:
    """Send the writes a sweep kept on disk while MLflow was unreachable; returns how many.

    Child runs created meanwhile (by a resume, say) are found again by trial id, not duplicated.
    """
    from mlflow import MlflowClient

    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    header = next(line["header"] for line in lines if "header" in line)
    uri = tracking_uri or header["tracking_uri"]
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    runs = {**header["runs"], **children_of(client, header["experiment_id"], header["parent_run_id"])}
    writer = _Writer(client, header["experiment_id"], runs)
    ops = [line for line in lines if "header" not in line]
    for op in ops:
        writer.submit(op)
    left = writer.close(timeout)
    if left:
        raise RuntimeError(f"replay: MLflow at {uri} took {len(ops) - len(left)} of {len(ops)} writes; "
                           f"run replay again ({writer.last_error})")
    Path(path).rename(Path(path).with_suffix(".replayed"))
    return len(ops)


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

    def on_step_end(self, iteration, trials, **info):
        if self._live():  # parameters and metrics reach MLflow within FLUSH_SECONDS, results or not
            self.tracker.maybe_flush()

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
            self.tracker.end_trial(_Completed(trial, self.space), "failed", _error_text(trial), text)


class _Ended:
    """A finished trial's record seen as the Ray trial ``end_trial`` expects."""

    def __init__(self, record) -> None:
        self.trial_id, self.config = record.trial_id, record.config
        self.last_result = {"epoch": record.epochs}


class _Completed:
    """A trial seen with its config completed by the space (Ray leaves inactive values as None)."""

    def __init__(self, trial, space) -> None:
        self._trial, self.config = trial, space.complete(trial.config)

    def __getattr__(self, name):
        return getattr(self._trial, name)

    def __str__(self) -> str:
        return str(self._trial)
