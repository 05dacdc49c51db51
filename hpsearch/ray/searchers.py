"""The Ray Tune search algorithm of a strategy (``make_search_alg``), and Ray's ``OptunaSearch``
telling Optuna the truth about trials a scheduler stopped early (``PrunedAwareOptunaSearch``).

Ray's ``OptunaSearch.on_trial_complete`` tells Optuna every trial that ended with a result as
COMPLETE with its last value, also one that ASHA stopped after one epoch of 81. TPE then takes a
cut-short value for a final one, and learns to prefer configurations that start fast. Optuna has
a state for exactly this: PRUNED, with the trial's intermediate values; its TPE sampler ranks
pruned trials below complete ones, by how far they got and then by their last value. This
subclass tells a trial that ended before ``max_epochs`` as PRUNED. (Written here because no
library does it: Ray's searcher has no option for it; the search benchmark measures the difference.)

Tune never passes the result that carried a STOP decision to ``on_trial_result``, so that last
value is reported to the Optuna trial here before it is told. Driver side: importing this module
imports Ray Tune and Optuna.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from hpsearch.ray import compat
from hpsearch.search.strategies import define_by_run, initial_points, to_optuna_distributions
from hpsearch.space import Derived, Fixed, Space
from hpsearch.vocab import Strategy

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
        ot_trial = compat.optuna_trial(self, trial_id)
        if (error or value is None or reached is None or reached >= self._max_epochs
                or trial_id in compat.optuna_told(self) or ot_trial is None):
            return super().on_trial_complete(trial_id, result=result, error=error)
        try:
            step = int(result.get("training_iteration", reached))  # the step on_trial_result reports with
            ot_trial.report(float(value), step)
            compat.optuna_study(self).tell(ot_trial, state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - as Ray's own: a bad value must not end the sweep
            log.warning("optuna: could not tell trial %s as pruned: %s", trial_id, exc)
        compat.optuna_told(self).add(trial_id)


def tell_earlier(searcher: OptunaSearch, space: Space, told: Sequence[Mapping[str, Any]]) -> int:
    """Add trials evaluated before to the searcher's Optuna study, as finished trials: ``config``,
    ``state`` (completed, stopped or failed: COMPLETE with ``value``, PRUNED with the ``curve`` as
    intermediate values, FAIL) and ``night``, kept as the trial's user attribute ``hpsearch.told``.
    Ray's ``add_evaluated_point`` refuses a define-by-run space (ours: conditional parameters), so
    the trials go to the study itself, each with the distributions of its active parameters.
    Returns how many were added; one that no longer fits the space is left out."""
    distributions = to_optuna_distributions(space)
    study, added = compat.optuna_study(searcher), 0
    for t in told:
        config = t["config"]
        params = {p.name: config[p.name] for p in space.tuned
                  if p.name in distributions and p.name in config and p.active(config)}
        state = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED, "failed": TrialState.FAIL}.get(t["state"])
        if state is None or (state == TrialState.COMPLETE and t.get("value") is None):  # never ran, or no result
            continue
        try:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: distributions[k] for k in params}, state=state,
                value=float(t["value"]) if state == TrialState.COMPLETE else None,
                intermediate_values={i + 1: float(v) for i, v in enumerate(t.get("curve") or [])},
                user_attrs={"hpsearch.told": t.get("night", "earlier")}))
        except ValueError as exc:  # a value outside tonight's distributions
            log.debug("optuna: earlier trial not told: %s", exc)
            continue
        added += 1
    return added


def make_search_alg(
    strategy: str,
    space: Space,
    metric: str,
    mode: str,
    trials: int,
    seed: int,
    concurrency: int | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] = (),
    max_epochs: int | None = None,
    told: Sequence[Mapping[str, Any]] = (),
):
    """The Ray Tune search algorithm for a strategy. ``points_to_evaluate`` run first (warm start);
    ``told``: trials evaluated before (an earlier night's), which TPE learns from without running
    them again (``tell_earlier``).

    OptunaSearch gets metric and mode here: given its own space, it ignores TuneConfig's. With
    ``max_epochs`` (what sweeps pass), TPE is told a trial stopped before it as pruned
    (``PrunedAwareOptunaSearch``); without, it is Ray's ``OptunaSearch`` as is (the simulator measures both).
    """
    strategy = Strategy.parse(strategy)
    warm = [space.validate_config(p) for p in points_to_evaluate]
    if strategy == "tpe":
        cls, extra = (OptunaSearch, {}) if max_epochs is None else (PrunedAwareOptunaSearch, {"max_epochs": max_epochs})
        alg = cls(
            space=define_by_run(space), metric=metric, mode=mode, **extra,
            sampler=optuna.samplers.TPESampler(seed=seed),
            points_to_evaluate=[{k: v for k, v in p.items() if not isinstance(space[k], (Fixed, Derived))} for p in warm] or None,
        )
        tell_earlier(alg, space, told)
    else:
        points = warm + initial_points(space, strategy, trials, seed)
        return BasicVariantGenerator(points_to_evaluate=points[:trials], max_concurrent=concurrency or 0)
    if concurrency:
        return ConcurrencyLimiter(alg, max_concurrent=concurrency)
    return alg
