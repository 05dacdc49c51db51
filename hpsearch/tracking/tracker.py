"""MLflow: one parent run per sweep, one nested child run per trial, written from the driver.

A Ray Tune callback on the driver (``hpsearch.ray.callbacks.MlflowCallback``) feeds the tracker,
which is the only writer: trials never talk to MLflow, so there is
no "database is locked" from many processes, and the same code serves SQLite and a remote
``http://`` server. The tracker turns trial events into operations for the one ``Writer``
(``hpsearch.tracking.writer``); ``Buffers`` batches a run's parameters, metrics and tags into few calls;
a child run is found again by its trial id, so a retried or resumed trial continues its own run.
Child runs are named after their parameters (``hpsearch.tracking.names``); one a scheduler stopped
early is renamed with a marker and carries a ``stopped_at_epoch`` metric. While the sweep runs, the
parent carries its live figures (``live_figures``): counts, epochs, best so far, elapsed.

Example:
    >>> b = Buffers(); b.add("trial:1", metrics=[("acc", 0.5, 0, 1)], params={"lr": "0.1"})
    >>> [(op["ref"], op["params"], len(op["metrics"])) for op in b.take()]
    [('trial:1', {'lr': '0.1'}, 1)]
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hpsearch.environment import drain_seconds
from hpsearch.results import SweepResult, status_of
from hpsearch.settings import SweepSettings
from hpsearch.space import Space
from hpsearch.storage import Location
from hpsearch.text import mask, mask_config
from hpsearch.tracking.buffers import Buffers, report_ms
from hpsearch.tracking.names import run_name, stopped_name
from hpsearch.tracking.output import OUTPUT_ARTIFACT, output_text, read_output
from hpsearch.tracking.process import StoreProcess
from hpsearch.tracking.store import git_commit, open_client, param_value
from hpsearch.tracking.writer import Writer, children_of, spill
from hpsearch.vocab import (
    PENDING_FILE,
    RAY_KEYS,
    REUSED_KEY,
    ROLE_SWEEP,
    ROLE_TRIAL,
    TAG_BEST,
    TAG_BEST_CONFIG,
    TAG_BEST_TRIAL,
    TAG_CONFIG_HASH,
    TAG_EPOCHS,
    TAG_ERROR,
    TAG_FORECAST,
    TAG_GIT_COMMIT,
    TAG_NOTE,
    TAG_PARENT,
    TAG_RAY_RESOURCES,
    TAG_RETRIES,
    TAG_REUSED_EPOCHS,
    TAG_REUSED_FROM,
    TAG_ROLE,
    TAG_SPACE,
    TAG_STATUS,
    TAG_STOPPED_AT,
    TAG_STOPPED_BY,
    TAG_SWEEP,
    TAG_TRIAL,
    TAG_VERSION,
    VERSION,
    Mode,
    StopReason,
    TrialStatus,
    plain_number,
    sqlite_path,
)

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0
# The parent's live figures are sent at most this often (and once more at the end): each is one
# small log_batch, and the MLflow UI is read by people, who refresh in seconds, not milliseconds.
LIVE_SECONDS = 5.0
METRIC_STOPPED_AT = "stopped_at_epoch"  # on a stopped trial's child run: a column the runs table can sort and show
def live_figures(trials: Sequence[Any], metric: str, mode: str, max_epochs: int,
                 ended: dict[str, tuple[TrialStatus, int, float | None]] | None = None) -> dict[str, float]:
    """A sweep's figures as the parent run shows them, from Ray's trials (each with ``status`` and
    ``last_result``): how many trials are in each state (``trials_<status>``, zeros included, so a
    later figure replaces an earlier one), epochs trained (``total_epochs``), and ``best_<metric>``:
    the best last value of a trial that has not failed, the rule the sweep's end picks its best by.

    ``ended``: what each finished (TERMINATED) trial adds, by trial id, kept between calls by the
    caller: a finished trial's part never changes, and reading Ray's ``last_result`` of every trial
    each time made the call grow with the sweep (py-spy, 300 trials into a sweep of no-op trials:
    16% of the driver loop's samples).

    Example:
        >>> from types import SimpleNamespace as T
        >>> f = live_figures([T(status="TERMINATED", last_result={"epoch": 4, "acc": 0.8}),
        ...                   T(status="TERMINATED", last_result={"epoch": 1, "acc": 0.3}),
        ...                   T(status="RUNNING", last_result={"epoch": 2, "acc": 0.9}),
        ...                   T(status="ERROR", last_result={"epoch": 1, "acc": 0.95}),
        ...                   T(status="PENDING", last_result={})], "acc", "max", 4)
        >>> {k: v for k, v in f.items() if v}
        {'trials_completed': 1.0, 'trials_stopped': 1.0, 'trials_failed': 1.0, 'trials_running': 1.0, \
'trials_pending': 1.0, 'total_epochs': 8.0, 'best_acc': 0.9}
    """
    counts = {str(s): 0 for s in TrialStatus}
    epochs, best, better = 0, None, Mode(mode).better
    for t in trials:
        part = ended.get(t.trial_id) if ended is not None else None
        if part is None:
            last = t.last_result or {}
            part = (status_of(t, max_epochs), int(last.get("epoch", 0) or 0), plain_number(last.get(metric)))
            if ended is not None and t.status == "TERMINATED":
                ended[t.trial_id] = part
        status, trained, value = part
        counts[str(status)] += 1
        epochs += trained
        if status != TrialStatus.FAILED and value is not None and (best is None or better(value, best)):
            best = value
    figures = {f"trials_{k}": float(v) for k, v in counts.items()}
    figures["total_epochs"] = float(epochs)
    if best is not None:
        figures[f"best_{metric}"] = best
    return figures


def experiment_id(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created if missing (a SQLite store's artifacts beside it in
    ``mlartifacts/``, the folder ``mlflow server`` uses for its own, rather than in ./mlruns)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    path = sqlite_path(uri)
    artifact_location = (Path(path).parent / "mlartifacts").as_uri() if path else None
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # another sweep created it in the meantime
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def parent_run(client, experiment: str, s: SweepSettings, space: Space,
               resources: Mapping[str, float] | None = None, note: Sequence[str] = (),
               extra_tags: Mapping[str, str] | None = None) -> tuple[dict[str, str], bool]:
    """The sweep's parent run and the child runs it already has (``parent``, ``trial:<id>`` -> run
    id), and whether it existed: a resumed sweep continues its own runs. Created synchronously,
    so an unusable store fails here, before any trial. ``note``: lines added to the run's
    description (what ``--budget`` chose and promised)."""
    found = client.search_runs(
        [experiment], f"tags.`{TAG_SWEEP}` = '{s.name}' and tags.`{TAG_ROLE}` = '{ROLE_SWEEP}'", max_results=1
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        if found[0].data.tags.get(TAG_STOPPED_BY):  # what ended the earlier start (an interrupt) no longer holds
            client.delete_tag(run_id, TAG_STOPPED_BY)
        return {"parent": run_id, **children_of(client, experiment, run_id)}, True
    from mlflow.entities import Param  # heavy (MLflow): imported once Ray runs, on the start-up thread

    tags = {
        TAG_SWEEP: s.name, TAG_ROLE: ROLE_SWEEP, TAG_VERSION: VERSION, TAG_SPACE: space.fingerprint(),
        TAG_RAY_RESOURCES: json.dumps({k: v for k, v in (resources or {}).items() if not k.startswith("node:")}),
        TAG_NOTE: f"hpsearch sweep {s.name}: {s.strategy} search, {s.scheduler} scheduler, "
                  f"{s.trials} trials of up to {s.max_epochs} epochs, optimising {s.metric} ({s.mode})."
                  + "".join(f"\n\n{line}" for line in note),
    }
    tags.update(extra_tags or {})
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    run = client.create_run(experiment, tags=tags, run_name=s.name)
    params = {k: v for k, v in s.to_json().items() if k not in ("name", "tracking_uri")}
    client.log_batch(run.info.run_id, params=[Param(k, param_value(mask(k, v))) for k, v in params.items()])
    client.log_text(run.info.run_id, space.to_json(masked=True), "space.json")
    return {"parent": run.info.run_id}, False


class SweepTracker:
    """The MLflow side of one sweep: the parent run, one child per trial, their endings."""

    def __init__(self, settings: SweepSettings, space: Space, client=None,
                 resources: Mapping[str, float] | None = None, note: Sequence[str] = (),
                 tags: Mapping[str, str] | None = None) -> None:
        """``client``: the store already opened by ``open_client`` (else opened here); ``resources``:
        the cluster's, recorded on a new parent run."""
        if not settings.tracking_uri:
            raise ValueError("tracking_uri: tracking is off for this sweep")
        self.uri, self.settings, self.space = settings.tracking_uri, settings, space
        self.client = client or open_client(self.uri)
        self.buffers = Buffers()
        self._last_flush = time.monotonic()
        self._known: set[str] = set()  # trials whose child run is created or queued
        # Steps already sent per run: a trial resumed from a checkpoint older than its last report
        # repeats an epoch (Ray snapshots its state periodically); its curve keeps one point a step.
        self.steps: dict[str, set[int]] = {}
        self._ended: set[str] = set()  # trials whose ending is queued
        self._reused: dict[str, tuple[str, int]] = {}  # ref -> (source, epochs replayed)
        # trial id -> {epoch: value of the sweep's metric}: the report at the end draws from this
        # rather than reading every curve back from MLflow.
        self.curves: dict[str, dict[int, float]] = {}
        self.experiment_id = experiment_id(self.client, settings.experiment, self.uri)
        # continued: the parent run existed (a resumed sweep, reconciled before going on)
        runs, self.continued = parent_run(self.client, self.experiment_id, settings, space, resources, note, tags)
        self.parent_id = runs["parent"]
        self._known |= {ref.split(":", 1)[1] for ref in runs if ref.startswith("trial:")}
        self._earlier = set(self._known)  # trials with a child run from an earlier start of the sweep
        self._started = time.strftime("%Y-%m-%d_%H-%M-%S")
        self._start = time.monotonic()
        # The parent's live figures: when last sent, what (less the clock), and the step they went
        # at (the epochs trained: the final summary goes at a step no lower, so it is what the UI
        # shows as the latest value).
        self._live_at = float("-inf")
        self._live_sent: dict[str, float] | None = None
        self.live_step = 0
        # What the figures are now, set by the driver's callback: sent once more when the sweep ends
        # abruptly (a second interrupt, a failure), where the throttle may have held the last change.
        self.live_source: Callable[[], Mapping[str, float]] | None = None
        # The writes move to a process of their own (``StoreProcess``) when they take a share of a
        # core (many short trials), off the GIL of the driver's loop; the driver keeps this client
        # for its own reads and the sweep's end.
        self.writer = Writer(self.client, self.experiment_id, runs, apart=lambda: StoreProcess(self.uri))

    @property
    def children(self) -> dict[str, str]:
        """Trial id -> child run id, for the runs created so far."""
        return {ref.split(":", 1)[1]: rid for ref, rid in self.writer.runs_snapshot().items() if ref.startswith("trial:")}

    def child(self, trial) -> str:
        """The reference of a trial's child run: created once, found again on retry or resume."""
        ref = f"trial:{trial.trial_id}"
        if trial.trial_id in self._known:
            return ref
        self._known.add(trial.trial_id)
        config = dict(trial.config)
        self.writer.submit({"op": "create_run", "ref": ref, "name": self.name(trial), "tags": {
            TAG_PARENT: self.parent_id, TAG_SWEEP: self.settings.name, TAG_TRIAL: trial.trial_id,
            TAG_ROLE: ROLE_TRIAL, TAG_STATUS: str(TrialStatus.RUNNING), TAG_CONFIG_HASH: self.space.config_hash(config)}})
        # The parameters go with the trial's first batch of metrics (or its ending): one SQLite
        # transaction instead of two, ~5 ms of CPU a trial, which short trials notice.
        self.buffers.add(ref, params={k: param_value(mask(k, v)) for k, v in sorted(config.items())})
        return ref

    def name(self, trial) -> str:
        """A trial's child run name (``hpsearch.tracking.names.run_name``)."""
        return run_name(trial.config, self.space, trial.trial_id)

    def tag(self, ref: str, tags: Mapping[str, str]) -> None:
        """Queue tags for a run now, with whatever it has buffered."""
        self.buffers.add(ref, tags=tags)
        self.flush(ref)

    def add_result(self, trial, result: Mapping[str, Any]) -> bool:
        """Queue a result's metrics for the trial's child run; False if its epoch was already sent
        or it holds no metric MLflow can keep (only NaN, infinite or non-numeric values)."""
        ref = self.child(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)) or 0)
        steps = self.steps.setdefault(ref, set())
        if step in steps:
            return False
        steps.add(step)
        if REUSED_KEY in result:
            source, n = self._reused.get(ref, (str(result[REUSED_KEY]), 0))
            self._reused[ref] = (source, n + 1)
        value = plain_number(result.get(self.settings.metric))
        if value is not None:
            self.curves.setdefault(trial.trial_id, {})[step] = value
        when = report_ms(result.get("timestamp"), time.time())
        metrics = [(k, v, when, step) for k, v in ((k, plain_number(v)) for k, v in result.items() if k not in RAY_KEYS)
                   if v is not None]
        self.buffers.add(ref, metrics=metrics)
        self.maybe_flush()
        return bool(metrics)

    def live_due(self) -> bool:
        """Whether the parent's live figures may be sent again (``LIVE_SECONDS`` since the last)."""
        return time.monotonic() - self._live_at >= LIVE_SECONDS

    def live(self, figures: Mapping[str, float], force: bool = False) -> bool:
        """Queue the sweep's live figures (``live_figures``) for the parent run, with the seconds
        since this start (``wall_seconds``), at step ``total_epochs``: at most every
        ``LIVE_SECONDS`` unless ``force``, and only when a figure changed. Returns whether queued."""
        if not force and not self.live_due():
            return False
        self._live_at = time.monotonic()
        if dict(figures) == self._live_sent:
            return False
        self._live_sent = dict(figures)
        self.live_step = max(self.live_step, int(figures.get("total_epochs", 0)))
        now = int(time.time() * 1000)
        metrics = [(k, float(v), now, self.live_step) for k, v in figures.items()]
        metrics.append(("wall_seconds", round(time.monotonic() - self._start, 1), now, self.live_step))
        self.writer.submit({"op": "log_batch", "ref": "parent", "metrics": metrics})
        return True

    def forecast(self, band: tuple[float, float, float], text: str) -> None:
        """A budgeted sweep's forecast of its spending, on the parent run: ``forecast_spend`` and its
        10th and 90th percentiles as metrics at the sweep's epochs so far (a chart of how the
        forecast moved), and the latest as the ``hpsearch.forecast`` tag."""
        now, step = int(time.time() * 1000), self.live_step
        metrics = [(name, float(v), now, step) for name, v in zip(("forecast_spend", "forecast_spend_p10",
                                                                    "forecast_spend_p90"), band) if v == v]
        self.writer.submit({"op": "log_batch", "ref": "parent", "metrics": metrics, "tags": {TAG_FORECAST: text}})

    def _live_now(self) -> None:
        if self.live_source is None:
            return
        try:
            self.live(self.live_source(), force=True)
        except Exception as exc:  # noqa: BLE001 - figures are a help; the ending they precede must happen
            log.warning("live figures not sent: %s: %s", type(exc).__name__, exc)

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self, ref: str | None = None) -> None:
        if ref is None:
            self._last_flush = time.monotonic()
        for op in self.buffers.take(ref):
            self.writer.submit(op)

    def end_trial(self, trial, status: TrialStatus, error: str | None = None, traceback: str | None = None,
                  by: str | None = None) -> None:
        """``by``: what stopped a trial early: the scheduler (default), or a ``StopReason``."""
        ref = self.child(trial)
        self._ended.add(trial.trial_id)
        epochs = int((trial.last_result or {}).get("epoch", 0) or 0)
        tags = {TAG_STATUS: str(status), TAG_EPOCHS: str(epochs)}
        notes = []
        if ref in self._reused:
            source, n = self._reused[ref]
            tags.update({TAG_REUSED_FROM: source, TAG_REUSED_EPOCHS: str(n)})
            notes.append(f"Not trained again for {'epoch 1' if n == 1 else f'epochs 1-{n}'}: reused the result of "
                         f"{source} (same configuration, budget, data and code version).")
        stopped_metric = []
        if status == TrialStatus.STOPPED:
            # The run ends FINISHED like a completed one (KILLED is what an interrupted trial shows,
            # and a stop by the scheduler is the search working, not a crash): the name's marker and
            # the metric are what tell it apart in the runs table.
            self.writer.submit({"op": "set_name", "ref": ref, "name": stopped_name(self.name(trial), epochs)})
            stopped_metric = [(METRIC_STOPPED_AT, float(epochs), int(time.time() * 1000), epochs)]
            tags[TAG_STOPPED_AT] = str(epochs)
            tags[TAG_STOPPED_BY] = str(by or self.settings.scheduler)
            notes.append(f"Stopped early by {'the ' + str(by or f'{self.settings.scheduler} scheduler')} at epoch "
                         f"{epochs} of {self.settings.max_epochs}.")
        if notes:
            tags[TAG_NOTE] = " ".join(notes)
        if status == TrialStatus.FAILED:
            tags[TAG_ERROR] = (error or "unknown error")[:5000]
        self.buffers.add(ref, metrics=stopped_metric)
        self.tag(ref, tags)  # with the trial's last metrics (and parameters, if still held): one write
        if status == TrialStatus.FAILED and traceback:
            self.writer.submit({"op": "log_text", "ref": ref, "text": traceback, "file": "traceback.txt"})
        self.writer.submit({"op": "set_status", "ref": ref, "status": "FAILED" if status == TrialStatus.FAILED else "FINISHED"})

    def log_outputs(self, trials: Sequence[tuple[Any, str | None, str | None, str | None]]) -> int:
        """Queue each trial's output (``output_text``) as ``OUTPUT_ARTIFACT`` on its child run; returns
        how many were queued. ``trials``: (trial, its folder's name in the sweep's storage, its
        working folder on this machine, the error that ended it), read once Ray let go of the trials'
        files (``read_output``). A trial continued from an earlier start of the sweep gets a file of
        its own for this start's output (Ray began it anew), so the earlier one stays."""
        folder = self.settings.folder if any(name for _, name, _, _ in trials) else None

        def read(item):
            trial, name, local, error = item
            return trial, output_text(read_output(local, folder / name if folder and name else None), error)

        with ThreadPoolExecutor(min(8, max(len(trials), 1)), thread_name_prefix="hpsearch-output") as pool:
            texts = list(pool.map(read, trials))  # a bucket answers in tens of ms a file: read them together
        queued = 0
        for trial, text in texts:
            if not text:
                continue
            file = OUTPUT_ARTIFACT if trial.trial_id not in self._earlier else \
                OUTPUT_ARTIFACT.replace(".log", f"-{self._started}.log")
            self.writer.submit({"op": "log_text", "ref": self.child(trial), "text": text, "file": file})
            queued += 1
        return queued

    def retrying(self, trial) -> None:
        ref = self.child(trial)
        self.flush(ref)
        self.tag(ref, {TAG_RETRIES: str(trial.num_failures)})

    def knows(self, trial_id: str) -> bool:
        return trial_id in self._known

    def finish(self, result: SweepResult, status: str = "FINISHED") -> None:
        """Close the sweep: best trial's metrics and a pointer to its child run on the parent."""
        self.flush()
        now = int(time.time() * 1000)
        # Trials Ray never ended (a deadline, an interrupt) must not stay RUNNING in the UI.
        for t in result.trials:
            if t.trial_id not in self._known or t.trial_id in self._ended:
                continue
            if t.status in (TrialStatus.RUNNING, TrialStatus.PENDING, TrialStatus.INTERRUPTED):
                self.tag(f"trial:{t.trial_id}", {TAG_STATUS: str(TrialStatus.INTERRUPTED)})
                self.writer.submit({"op": "set_status", "ref": f"trial:{t.trial_id}", "status": "KILLED"})
            else:  # stopped by Ray without a trial event: the deadline or the goal
                self.end_trial(EndedTrial(t), t.status, by=result.stopped_by or StopReason.DRIVER)
        # At the live figures' step or later, so these are the values the UI shows as the latest;
        # every status counted, zeros included, so none of the live counts is left standing.
        step = self.live_step = max(self.live_step, int(result.total_epochs))
        counts = {str(s): 0 for s in TrialStatus} | result.counts()
        metrics = [(f"trials_{k}", float(v), now, step) for k, v in counts.items()]
        metrics += [("total_epochs", float(result.total_epochs), now, step), ("wall_seconds", float(result.wall_s), now, step)]
        metrics += [(k, float(v), now, step) for k, v in result.expected.items()]  # plan against actual
        tags = {TAG_STOPPED_BY: str(result.stopped_by)} if result.stopped_by else {}
        if result.best is not None:
            metrics += [(f"best_{k}", float(v), now, step) for k, v in result.best.metrics.items()
                        if plain_number(v) is not None]
            tags.update({TAG_BEST: self.children.get(result.best.trial_id, ""), TAG_BEST_TRIAL: result.best.trial_id,
                         TAG_BEST_CONFIG: json.dumps(mask_config(result.best.config))[:5000]})
        self.writer.submit({"op": "log_batch", "ref": "parent", "metrics": metrics, "tags": tags})
        self.writer.submit({"op": "set_status", "ref": "parent", "status": status})

    def close(self, drain_s: float | None = None) -> tuple[Location, int] | None:
        """Deliver what is queued; if MLflow stays unreachable, keep the rest in the sweep's folder
        for ``sync``.

        Returns the journal's path and how many writes it holds, or None when all were delivered.
        """
        self.flush()
        left = self.writer.close(drain_seconds() if drain_s is None else drain_s)
        if not left:
            return None
        path = self.settings.folder / PENDING_FILE
        spill(path, {"tracking_uri": self.uri, "experiment_id": self.experiment_id, "parent_run_id": self.parent_id,
                     "runs": self.writer.runs_snapshot()}, left)
        log.warning("MLflow unreachable at the end of the sweep: %d writes kept in %s", len(left), path)
        return path, len(left)

    def interrupt(self) -> None:
        """A second interrupt: mark the parent interrupted (KILLED, as the UI shows it) and deliver
        what is queued without waiting long; ``resume`` reconciles the rest from Ray's records. The
        parent keeps the sweep's figures as they stand now (``live_source``)."""
        self._live_now()
        self.writer.submit({"op": "log_batch", "ref": "parent", "metrics": [],
                            "tags": {TAG_STOPPED_BY: str(StopReason.INTERRUPTED)}})
        self.writer.submit({"op": "set_status", "ref": "parent", "status": "KILLED"})
        self.close(drain_s=min(drain_seconds(), 10.0))

    def abandon(self) -> None:
        """The sweep itself failed: mark the parent FAILED and deliver (or keep) what is queued."""
        self._live_now()
        self.writer.submit({"op": "set_status", "ref": "parent", "status": "FAILED"})
        self.close()


class EndedTrial:
    """A finished trial's record (``TrialRecord``) seen as the Ray trial ``end_trial`` expects."""

    def __init__(self, record) -> None:
        self.trial_id, self.config = record.trial_id, record.config
        self.last_result = {"epoch": record.epochs}
