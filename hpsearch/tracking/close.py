"""The end of a tracked sweep: the best model and the report on the parent run (once every write
has landed, since they read back from MLflow), the parent's summary, and what could not be
delivered kept on disk for ``hpsearch sync``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from hpsearch.environment import drain_seconds
from hpsearch.results import SweepResult
from hpsearch.text import mask, mask_config
from hpsearch.tracking.analysis import SweepData, TrialRow, log_report
from hpsearch.tracking.store import log_model, param_value
from hpsearch.tracking.tracker import SweepTracker
from hpsearch.vocab import TAG_BEST_CONFIG, TAG_BEST_MODEL, TAG_REGISTERED, TAG_SWEEP, TAG_TRIAL, TrialStatus

log = logging.getLogger(__name__)


def close_sweep(tracker: SweepTracker, result: SweepResult, model: Callable[[], Any], data) -> None:
    """The sweep's end: best model and report (they read back from MLflow, so only once every
    write landed), the parent's summary, and what could not be delivered kept on disk. A step that
    fails leaves the others and is a line of ``result.end_errors``. Runs after ``sweep()`` returned,
    on the result's ``SweepEnd`` thread (an interrupted sweep's end: before)."""
    tracker.flush()
    if result.interrupted:  # quickly: the best model and the report come when resume ends the sweep
        tracker.finish(result, status="KILLED")
    elif tracker.writer.drain(drain_seconds()):
        # Two tries: the results are safe in MLflow, and one extra failing must not cost the other.
        try:
            log_best_model(tracker, result, model(), data)
        except Exception as exc:  # noqa: BLE001
            log.warning("best model not logged: %s: %s", type(exc).__name__, exc)
            result.end_errors.append(f"best model not logged: {type(exc).__name__}: {exc}")
        try:
            log_report(tracker.client, tracker.parent_id, sweep_data(tracker, result))
        except Exception as exc:  # noqa: BLE001
            log.warning("report not logged: %s: %s", type(exc).__name__, exc)
            result.end_errors.append(f"report not logged: {type(exc).__name__}: {exc}")
    if not result.interrupted:
        tracker.finish(result)
    pending = tracker.close()
    result.tracking = {"uri": tracker.uri, "experiment_id": tracker.experiment_id, "parent_run_id": tracker.parent_id,
                       "children": tracker.children, "refused": list(tracker.writer.refused),
                       "pending": None if pending is None else {"path": str(pending[0]), "writes": pending[1]}}


def log_best_model(tracker: SweepTracker, result: SweepResult, best, data) -> None:
    """The best trial's model on the parent run and, with ``register_model``, as a new version in
    the Model Registry tagged with the sweep, the trial, its config and its metric."""
    name = tracker.settings.register_model
    if best is None:
        if name:
            log.warning("register_model: the best trial's checkpoint holds no model to register %r (give the "
                        "space a MODEL builder, or report checkpoint={'model': model})", name)
        return
    example = data.x_val[:2] if data is not None else None
    uri, version = log_model(tracker.uri, tracker.parent_id, best, example, register=name)
    tags = {TAG_BEST_MODEL: uri}
    if version is not None:
        b = result.best
        for key, value in {TAG_SWEEP: result.name, TAG_TRIAL: b.trial_id, TAG_BEST_CONFIG: json.dumps(mask_config(b.config), default=str),
                           "hpsearch.metric": result.metric, "hpsearch.metric_value": repr(b.metric),
                           "hpsearch.sweep_run_id": tracker.parent_id}.items():
            tracker.client.set_model_version_tag(name, version, key, str(value))
        tags[TAG_REGISTERED] = f"models:/{name}/{version}"
        result.registered = tags[TAG_REGISTERED]
    tracker.tag("parent", tags)


def sweep_data(tracker: SweepTracker, result: SweepResult):
    """The report's input, from what the tracker saw; None for a resumed sweep, whose earlier
    curves only MLflow holds."""
    if tracker.continued:
        return None
    rows, children = [], tracker.children
    for t in result.trials:
        run_id = children.get(t.trial_id)
        if run_id is None:  # never started
            continue
        curve = sorted(tracker.curves.get(t.trial_id, {}).items())
        status = TrialStatus.INTERRUPTED if t.status in (TrialStatus.RUNNING, TrialStatus.PENDING) else t.status
        rows.append(TrialRow(
            run_id=run_id, trial_id=t.trial_id, status=str(status), epochs=t.epochs,
            params={k: param_value(mask(k, v)) for k, v in t.config.items()},
            value=curve[-1][1] if curve else None, curve=curve,
        ))
    rows.sort(key=lambda r: r.trial_id)
    s = tracker.settings
    return SweepData(s.name, tracker.parent_id, s.metric, str(s.mode), s.max_epochs, tracker.space, rows)
