"""The nightly tunes its own scheduler: before a night launches, every earlier night's whole curves
are replayed through Ray's schedulers (``hpsearch.simulate``) at tonight's settings and at each
alternative grace period and reduction factor, over ``SEEDS`` seeds, and an alternative is adopted
only when its gain in the best metric found is beyond the seeds' noise.

The comparison is paired: each seed draws the same configurations for every setting, so the
per-seed differences in the best metric carry no configuration luck, and the noise is their
standard error. An alternative is adopted when its mean gain exceeds twice that (about 95%
one-sided). Settings the config names are kept (never tuned), as ``--budget`` keeps them; a night
with a budget has its settings chosen by the budget instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Collection

import numpy as np

from hpsearch.nightly.config import NightlyConfig
from hpsearch.nightly.ledger import Ledger, earlier_trials, unmask
from hpsearch.record import PreparedSweep
from hpsearch.simulate.budget import GRACE_PERIODS, REDUCTION_FACTORS, slots_here
from hpsearch.simulate.curves import CurveTable
from hpsearch.simulate.events import Setting
from hpsearch.simulate.many import simulate_many
from hpsearch.simulate.sources import MIN_EARLIER
from hpsearch.vocab import TAG_TPE_TOLD, Mode, TrialStatus

SEEDS = 30
TUNED = ("grace_period", "reduction_factor")


@dataclass
class SchedulerTuning:
    """What the nightly decided about tonight's scheduler settings, and the line that says why."""

    changes: dict[str, Any] = field(default_factory=dict)  # empty: kept
    line: str = ""


def nights_table(ledger: Ledger, night: str, space, metric: str, mode: str, max_epochs: int) -> tuple[CurveTable | None, int]:
    """The whole curves (``max_epochs`` epochs of ``metric``) of every night done before ``night``,
    one per configuration (the latest night's), and how many nights gave some. The ledger keeps no
    epoch times: each epoch counts one second, so the comparison is on epochs."""
    curves: dict[str, tuple[dict[str, Any], list[float]]] = {}
    nights = 0
    for entry in ledger.done_before(night):
        found = False
        for t in entry.get("trials", []):
            values = [row.get(metric) for row in t.get("curve", [])]
            if t.get("status") == TrialStatus.FAILED or len(values) < max_epochs or \
                    not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values[:max_epochs]):
                continue
            try:
                config = space.validate_config(unmask(space, t["config"]))
            except ValueError:  # the space changed since: this curve no longer answers it
                continue
            curves[space.config_hash(config)] = (config, [float(v) for v in values[:max_epochs]])
            found = True
        nights += found
    if len(curves) < MIN_EARLIER:
        return None, nights
    configs, values = zip(*curves.values())
    return CurveTable.build(space, metric, mode, list(configs), list(values), [[1.0] * max_epochs] * len(values),
                            source=f"{len(curves)} whole curves of {nights} earlier night(s)"), nights


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(name: str, value: Any) -> str:
    return f"{name.replace('_', ' ')} {_value(value)}"


def tune_scheduler(prep, ledger: Ledger, night: str, given: Collection[str], workers: int,
                   seeds: int = SEEDS, processes: int | None = None) -> SchedulerTuning | None:
    """Tonight's grace period and reduction factor, from the earlier nights' curves (see the module
    docstring); None where there is nothing to tune (FIFO, a budget, every setting named)."""
    s = prep.settings
    scheduler = str(s.scheduler)
    free = [n for n in TUNED if n not in given and (n != "grace_period" or scheduler == "asha")]
    if scheduler == "fifo" or s.budget or not free:
        return None
    table, nights = nights_table(ledger, night, prep.space, s.metric, str(s.mode), s.max_epochs)
    now = {n: getattr(s, n) for n in free}
    kept = ", ".join(_label(n, v) for n, v in now.items())
    if table is None:
        return SchedulerTuning(line=f"Scheduler: {kept} kept (fewer than {MIN_EARLIER} whole curves in the earlier "
                                    f"nights to simulate on).")
    current = Setting(str(s.strategy), scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor, workers)
    options = [current]
    for grace in ([g for g in GRACE_PERIODS if g < s.max_epochs] if "grace_period" in free else [s.grace_period]):
        for rf in (REDUCTION_FACTORS if "reduction_factor" in free else [s.reduction_factor]):
            options.append(replace(current, grace_period=grace, reduction_factor=float(rf)))
    options = list(dict.fromkeys(options))
    runs = simulate_many(table, options, seeds, processes=processes)
    sign = 1.0 if Mode(str(s.mode)) is Mode.MAX else -1.0

    def bests(setting: Setting) -> np.ndarray:
        by_seed = sorted(runs[setting], key=lambda r: r.seed)
        return np.array([sign * (r.best_value if r.best_value is not None else -math.inf * sign) for r in by_seed])

    def epochs(setting: Setting) -> float:
        return float(np.median([r.epochs for r in runs[setting]]))

    base = bests(current)
    scored = []
    for option in options[1:]:
        diff = bests(option) - base
        diff = diff[np.isfinite(diff)]
        if not len(diff):
            continue
        gain = float(diff.mean())
        noise = 2 * float(diff.std(ddof=1)) / math.sqrt(len(diff)) if len(diff) > 1 else math.inf
        scored.append((gain, noise, option))
    where = f"simulated on {table.source}, {seeds} seeds"
    if not scored:
        return SchedulerTuning(line=f"Scheduler: {kept} kept ({where}: no alternative reported {s.metric}).")
    gain, noise, best = max(scored, key=lambda g: g[0] - g[1])
    changes = {n: getattr(best, n) for n in free if getattr(best, n) != getattr(current, n)}
    said = ", ".join(_label(n, v) for n, v in changes.items())
    if gain > noise and gain > 0:
        moved = ", ".join(f"{_label(n, now[n])} -> {_value(v)}" for n, v in changes.items())
        return SchedulerTuning(changes, f"Scheduler: {moved} adopted ({where}: best {s.metric} {gain:+.4g} ± "
                                        f"{noise:.2g} per sweep; epochs {epochs(current):.0f} -> {epochs(best):.0f}).")
    return SchedulerTuning(line=f"Scheduler: {kept} kept ({where}: the best alternative, {said}, gains "
                                f"{gain:+.4g} ± {noise:.2g}, within the seeds' noise).")


def tell_tpe(prep: PreparedSweep, ledger: Ledger, tonight: str) -> int:
    """TPE starts from every earlier night's trials (``earlier_trials``), told without running them
    again: how many, said on the parent run (its description and ``hpsearch.tpe_told``)."""
    if str(prep.settings.strategy) != "tpe":
        return 0
    prep.told = earlier_trials(ledger, tonight, prep.space, prep.settings.metric)
    if prep.told:
        nights = len({t["night"] for t in prep.told})
        prep.budget_lines.append(f"TPE starts from {len(prep.told)} trials of {nights} earlier night(s), told to it "
                                 "as finished (not run again).")
        prep.parent_tags[TAG_TPE_TOLD] = str(len(prep.told))
    return len(prep.told)


def tune_night(prep: PreparedSweep, ledger: Ledger, tonight: str, cfg: NightlyConfig) -> SchedulerTuning | None:
    """Tonight's scheduler settings from the earlier nights' curves (``hpsearch.nightly.tune``), put in
    ``prep.settings`` when adopted; the line that says what and why goes to the parent run too."""
    s = prep.settings
    tuning = tune_scheduler(prep, ledger, tonight, cfg.given, s.concurrency or slots_here(s.cpus_per_trial, s.workers_per_trial))
    if tuning is not None:
        prep.settings = s.replace(**tuning.changes)
        prep.budget_lines.append(tuning.line)
    return tuning
