"""Ray's ``OptunaSearch``, telling Optuna the truth about trials a scheduler stopped early.

Ray's ``OptunaSearch.on_trial_complete`` tells Optuna every trial that ended with a result as
COMPLETE with its last value, also one that ASHA stopped after one epoch of 81. TPE then takes a
cut-short value for a final one, and learns to prefer configurations that start fast. Optuna has
a state for exactly this: PRUNED, with the trial's intermediate values; its TPE sampler ranks
pruned trials below complete ones, by how far they got and then by their last value. This
subclass tells a trial that ended before ``max_epochs`` as PRUNED. (Written here because no
library does it: Ray's searcher has no option for it; issue #13 measures the difference.)

Tune never passes the result that carried a STOP decision to ``on_trial_result``, so that last
value is reported to the Optuna trial here before it is told. A driver-side module: importing it
imports Ray Tune and Optuna (``hpsearch.strategies`` imports it only when TPE is asked for).
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class PrunedAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells a trial ended before ``max_epochs`` (by ``time_attr``) as PRUNED."""

    def __init__(self, *args: Any, max_epochs: int, time_attr: str = "epoch", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = int(max_epochs)
        self._time_attr = time_attr

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        reached = (result or {}).get(self._time_attr)
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        if (error or value is None or reached is None or reached >= self._max_epochs
                or trial_id in self._completed_trials or trial_id not in self._ot_trials):
            return super().on_trial_complete(trial_id, result=result, error=error)
        ot_trial = self._ot_trials[trial_id]
        try:
            step = int(result.get("training_iteration", reached))  # the step on_trial_result reports with
            ot_trial.report(float(value), step)
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - as Ray's own: a bad value must not end the sweep
            log.warning("optuna: could not tell trial %s as pruned: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
