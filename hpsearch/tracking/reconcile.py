"""After a resume, MLflow made to hold everything Ray recorded.

A killed driver loses what it had buffered (up to ``FLUSH_SECONDS`` of metrics) and the endings of
trials that finished meanwhile; Ray persisted both (each trial's result.json and state). And a
trial the killed driver started after Ray's last snapshot is unknown to the resumed experiment.
"""

from __future__ import annotations

from hpsearch.results import error_text, read_results, status_of, trial_dir
from hpsearch.tracking.tracker import SweepTracker
from hpsearch.vocab import TAG_NOTE, TAG_STATUS, TrialStatus, plain_number


def reconcile(tracker: SweepTracker, trials) -> int:
    """After a resume, make MLflow hold everything Ray recorded; returns the epochs backfilled
    (those with at least one finite metric: the others have nothing MLflow can hold).

    A killed driver loses what it had buffered (up to FLUSH_SECONDS of metrics) and the endings
    of trials that finished meanwhile; Ray persisted both (each trial's result.json and state).
    """
    backfilled = 0
    metric = tracker.settings.metric
    for trial in trials:
        results = read_results(trial_dir(trial))
        if not results and not tracker.knows(trial.trial_id):
            continue
        run_id = tracker.writer.runs_snapshot().get(f"trial:{trial.trial_id}")
        ref = tracker.child(trial)
        run = tracker.client.get_run(run_id) if run_id else None
        if run is not None:
            # The epochs MLflow holds, from the sweep's metric; an epoch where it was NaN or infinite
            # (a diverging trial) is missing from that curve only, so then from every curve of the run.
            finite = all(plain_number(r.get(metric)) is not None for r in results)
            keys = [metric] if finite else list(run.data.metrics)
            tracker.steps.setdefault(ref, set()).update(
                m.step for key in keys for m in tracker.client.get_metric_history(run_id, key))
        for result in results:
            backfilled += tracker.add_result(trial, result)  # epochs already in MLflow are skipped
        tracker.flush(ref)
        running = run is None or run.info.status == "RUNNING"
        if trial.status in ("TERMINATED", "ERROR") and running:
            tracker.end_trial(trial, status_of(trial, tracker.settings.max_epochs), error=error_text(trial))
    end_lost_trials(tracker, {t.trial_id for t in trials})
    return backfilled


def end_lost_trials(tracker: SweepTracker, restored: set[str]) -> None:
    """A trial the killed driver started after Ray's last experiment snapshot is unknown to the
    resumed experiment (Ray proposes its configuration again, as a new trial); its child run would
    stay RUNNING for ever. It ends KILLED, saying so."""
    for ref, run_id in tracker.writer.runs_snapshot().items():
        if not ref.startswith("trial:") or ref.split(":", 1)[1] in restored:
            continue
        if tracker.client.get_run(run_id).info.status != "RUNNING":
            continue
        tracker.tag(ref, {TAG_STATUS: str(TrialStatus.INTERRUPTED), TAG_NOTE: (
            "Lost when the driver was killed: Ray had not recorded this trial yet, so the resumed sweep "
            "started its configuration again as a new trial.")})
        tracker.writer.submit({"op": "set_status", "ref": ref, "status": "KILLED"})
