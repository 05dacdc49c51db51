"""Part 8 (issue #26), does ``--budget`` keep its promise? Budgets of 1/4, 1/2 and 1x random
search's full cost (random/FIFO, 20 trials to the last epoch, simulated on the same curves at the
epoch time measured here), on two sources of curves: the table shipped with spaces/mlp.py, and a
real FIFO sweep recorded here first (``recorded_trials`` configurations to ``recorded_epochs``).

Simulated, per budget and source, over ``seeds`` seeds (the same seeds for every arm): the best
val_acc found when the budget is spent, for the settings ``--budget`` chooses
(``hpsearch.simulate.budget.choose``), for the defaults (random/ASHA, 20 trials, grace 1,
reduction factor 3, cut by the budget), and for Optuna used directly with TPE and its Hyperband
pruner (20 trials, cut by the budget). Figures: chosen / defaults and chosen / Optuna, the paired
ratio of the per-seed best (geometric mean, 90% t interval); goal >= 1 for the defaults.

Every arm assumes this machine's costs outside training, as the recorded sweep showed them
(``hpsearch.simulate.sources.sweep_costs``, what ``run --budget`` takes from an earlier sweep of the
space in its store).

Real, per budget, ``real_sweeps`` sweeps of the chosen settings on this machine (mlp, reference
trainable, SQLite tracking, seeds 0..), each beside a real sweep of the defaults on the same seed,
both ended by the budget: the chosen sweep's wall-clock (the command's, Ray already up) against the
promised 10-90% band, and the chosen sweeps' median best against the defaults' at that budget.
Goals (issue #26): within the band in >= 8 of 9 sweeps, best at least the defaults' median.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from bench.common import ROOT, figure, paired_ratio, quiet, verdict

FRACTIONS = (0.25, 0.5, 1.0)
DEFAULT_TRIALS = 20
# A sweep the budget ends stops within a result's arrival of it, and MLflow's end takes a second or
# two more: the band's edges are that uncertain.
SLACK_S = 2.0


def _arms(table, max_epochs: int, epoch_s: float, measured, seeds: int, slots: int, fraction: float,
          log) -> dict[str, Any] | None:
    """One budget on one table: the choice and the three arms' per-seed best at the budget (None:
    the budget refused, with its one line logged)."""
    from hpsearch.budget import Budget
    from hpsearch.simulate.budget import Scored, choose
    from hpsearch.simulate.events import Setting
    from hpsearch.simulate.many import simulate_many

    costs = replace(measured, epoch_scale=epoch_s / table.median_seconds)
    full = Setting("random", "fifo", DEFAULT_TRIALS, max_epochs, workers=slots)
    full_wall = statistics.median(r.wall_s for r in simulate_many(table, [full], seeds, costs)[full])
    budget = Budget("wall", round(fraction * full_wall, 1))
    base = Setting("random", "asha", DEFAULT_TRIALS, max_epochs, 1, 3, slots)
    started = time.perf_counter()
    try:
        choice = choose(table, base, budget, (), epoch_s=epoch_s, units=1.0, slots=slots, costs=measured,
                        seeds=(6, seeds))
    except ValueError as exc:
        log(f"budget {fraction:g}x ({budget}): refused: {exc}")
        return None
    took = time.perf_counter() - started
    optuna = Setting("optuna", "hyperband", DEFAULT_TRIALS, max_epochs, 1, 3, slots)
    optuna_runs = simulate_many(table, [optuna], seeds, costs)[optuna]
    optuna_scored = Scored(optuna, optuna_runs, budget, epoch_s, 1.0, table.mode, costs.end_s, costs.end_trial_s)

    def per_seed(scored) -> list[float | None]:
        return [scored.best_at_budget(r) for r in sorted(scored.runs, key=lambda r: r.seed)]

    st = choice.chosen.setting
    log(f"budget {fraction:g}x ({budget}): chose {st.scheduler} grace {st.grace_period} rf {st.reduction_factor:g}, "
        f"{st.trials} trials, {st.workers} at once in {took:.0f} s; best {choice.chosen.best[0]:.4f} vs defaults "
        f"{choice.defaults.best[0]:.4f} vs optuna {optuna_scored.best[0]:.4f}")
    return {"fraction": fraction, "budget": str(budget), "budget_s": budget.amount, "full_wall_s": full_wall,
            "choose_s": took, "choice": choice,
            "chosen": {"setting": st.label, "trials": st.trials, "grace_period": st.grace_period,
                       "reduction_factor": st.reduction_factor, "workers": st.workers,
                       "wall": choice.chosen.wall, "epochs": choice.chosen.epochs, "best": choice.chosen.best},
            "best_per_seed": {"chosen": per_seed(choice.chosen), "defaults": per_seed(choice.defaults),
                              "optuna": per_seed(optuna_scored)},
            "defaults_best": choice.defaults.best, "optuna_best": optuna_scored.best}


def _record_sweep(trials: int, epochs: int, sqlite: str, work: Path, log) -> tuple[Any, Any]:
    """A real FIFO sweep of mlp, read back from MLflow: its curves as a table, and the costs outside
    training it showed (what ``run --budget`` takes from an earlier sweep of the space in its store)."""
    from hpsearch.engine import prepare, run_prepared
    from hpsearch.settings import SweepSettings
    from hpsearch.simulate.curves import CurveTable
    from hpsearch.simulate.sources import sweep_costs
    from hpsearch.tracking.analysis import find_parent
    from mlflow import MlflowClient

    settings = SweepSettings(strategy="random", scheduler="fifo", trials=trials, max_epochs=epochs, seed=7,
                             storage=str(work / "ray-budget"), tracking_uri=sqlite, experiment="bench-budget",
                             name="budget-recorded")
    with quiet(work / "budget-output.log"):
        result = run_prepared(prepare("mlp", settings), progress=False)
        result.wait()
        client = MlflowClient(tracking_uri=sqlite)
        parent = find_parent(client, "budget-recorded", "bench-budget")
        table = CurveTable.from_parent(client, parent)
        costs = sweep_costs(client, parent)
    log(f"budget: recorded a real sweep of {trials} trials x {epochs} epochs ({result.wall_s:.0f} s): {table.describe()}; "
        f"{costs}")
    return table, costs


def run(seeds: int, real_sweeps: int, recorded_trials: int, recorded_epochs: int, work: Path,
        log: Callable[[str], None]) -> dict[str, Any]:
    from hpsearch.engine import prepare
    from hpsearch.settings import SweepSettings
    from hpsearch.simulate.budget import slots_here
    from hpsearch.simulate.curves import CurveTable
    from hpsearch.simulate.events import Costs
    from hpsearch.simulate.explain import measure_epoch_seconds
    from hpsearch.space.modules import load_space_module

    sqlite = "sqlite:///" + str(work / "mlflow-budget" / "mlflow.db")
    (work / "mlflow-budget").mkdir(parents=True, exist_ok=True)
    slots = slots_here(1, 1)
    alone, noise = measure_epoch_seconds(prepare("mlp", SweepSettings(tracking_uri=False)))
    recorded, measured = _record_sweep(recorded_trials, recorded_epochs, sqlite, work, log)
    measured = measured or Costs()
    # The epoch time every arm assumes: as epochs ran in the recorded sweep here, beside another
    # trial and the driver (what run --budget takes from an earlier sweep of the space in its store).
    epoch_s = recorded.median_seconds
    log(f"budget: an epoch of mlp takes {alone:.3g} s timed alone here{' (' + noise + ')' if noise else ''}, "
        f"{epoch_s:.3g} s in the recorded sweep; {slots} workers")
    mlp_epochs = load_space_module("mlp").max_epochs
    tables = {"shipped table (spaces/mlp.curves.npz)": (CurveTable.load(ROOT / "spaces" / "mlp.curves.npz"), mlp_epochs),
              f"recorded real sweep ({recorded_trials} x {recorded_epochs} epochs)": (recorded, recorded_epochs)}
    out: dict[str, Any] = {"size": {"seeds": seeds, "real_sweeps": real_sweeps, "fractions": FRACTIONS,
                                    "default_trials": DEFAULT_TRIALS, "workers": slots, "epoch_s": epoch_s,
                                    "epoch_s_alone": alone},
                           "costs": {"start_s": measured.start_s, "trial_s": measured.trial_s, "end_s": measured.end_s},
                           "simulated": {}, "real": []}
    figures = []
    for source, (table, max_epochs) in tables.items():
        out["simulated"][source] = []
        for fraction in FRACTIONS:
            arms = _arms(table, max_epochs, epoch_s, measured, seeds, slots, fraction, log)
            if arms is None:
                out["simulated"][source].append({"fraction": fraction, "refused": True})
                continue
            choice = arms.pop("choice")
            out["simulated"][source].append(arms)
            figures += _simulated_figures(arms, source, fraction, seeds)
            if source.startswith("shipped"):
                for i in range(real_sweeps):
                    out["real"].append(_real(choice, arms, i, sqlite, work, log))
    if out["real"]:
        figures += _real_figures(out["real"])
    out["figures"] = figures
    return out


def _simulated_figures(arms: dict[str, Any], source: str, fraction: float, seeds: int) -> list[dict[str, Any]]:
    figures = []
    b = arms["best_per_seed"]
    for other, goal in (("defaults", ">="), ("optuna", "")):
        paired = paired_ratio([x if x is not None else 0.0 for x in b["chosen"]],
                              [x if x is not None else 0.0 for x in b[other]])
        r = paired["ratio"] if paired else None
        figures.append(figure(
            "budget", f"best val_acc at a budget of {fraction:g}x random search's cost ({arms['budget']}), "
                      f"{source}: chosen / {'defaults' if other == 'defaults' else 'Optuna TPE+Hyperband'}",
            arms["chosen"]["best"][0], "",
            baselines={other: (arms["defaults_best"] if other == "defaults" else arms["optuna_best"])[0]},
            ratio_value=r, ratio_text=f"chosen / {other}", interval=paired["interval"] if paired else None,
            goal=">= 1.00x" if goal else "", seeds=seeds,
            verdict=verdict(r, ">=", 1.0, paired["interval"] if paired else None) if goal else None,
            note=f"chosen {arms['chosen']['setting']}, {arms['chosen']['trials']} trials, "
                 f"{arms['chosen']['workers']} at once; simulated, {seeds} seeds, paired by seed"))
    return figures


def _real_figures(real: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The real sweeps' two goals: ending within the promised band, and, at each budget, the chosen
    settings' median best at least the defaults' (real sweeps of both on the same seeds, so on the
    same configurations drawn first: where the choice is the defaults, the two are the same sweep)."""
    n = len(real)
    within = sum(r["within"] for r in real)
    budgets: dict[str, tuple[list[float], list[float]]] = {}
    for r in real:
        chosen, defaults = budgets.setdefault(r["budget"], ([], []))
        chosen.append(r["best"] if r["best"] is not None else 0.0)
        defaults.append(r["defaults_best"] if r["defaults_best"] is not None else 0.0)
    medians = {b: (statistics.median(c), statistics.median(d)) for b, (c, d) in budgets.items()}
    met = sum(c >= d for c, d in medians.values())
    paired = paired_ratio([r["best"] or 0.0 for r in real], [r["defaults_best"] or 0.0 for r in real])
    return [
        figure("budget", f"real sweeps of the chosen settings ending within the promised wall-clock band ({n} sweeps, "
                         f"{len(FRACTIONS)} budgets)", within, "sweeps", goal=f">= {n - 1} of {n}",
               verdict="met" if within >= n - 1 else "missed", seeds=n,
               note="; ".join(f"{r['budget']}: {r['wall_s']:.0f} s in [{r['band'][1]:.0f}, {r['band'][2]:.0f}]"
                              for r in real)),
        figure("budget", "budgets at which the real sweeps of the chosen settings find a median best at least the "
                         "real defaults' median (same seeds)", met, "budgets", goal=f"{len(medians)} of {len(medians)}",
               verdict="met" if met == len(medians) else "missed", seeds=n,
               ratio_value=paired["ratio"] if paired else None, ratio_text="chosen / defaults, every sweep paired by seed",
               interval=paired["interval"] if paired else None,
               note="; ".join(f"{b}: median {_num(c)} vs {_num(d)} (per seed " + ", ".join(
                   f"{_num(r['best'])} vs {_num(r['defaults_best'])}" for r in real if r["budget"] == b) + ")"
                   for b, (c, d) in medians.items())),
    ]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _sweep(settings, forecast=None) -> tuple[float, Any]:
    """One real sweep, timed as its user would time the command once Ray runs: to its end written to
    MLflow (``forecast``: the choice's, which ``run --budget`` watches the sweep against)."""
    from hpsearch.engine import prepare, run_prepared

    with quiet(Path(settings.storage).parent / "budget-output.log"):
        prep = prepare("mlp", settings)
        prep.forecast = forecast
        t0 = time.time()
        result = run_prepared(prep, progress=False)  # the stopper's clock starts in here
        result.wait()
        wall = time.time() - t0
    return wall, result


def _real(choice, arms, seed, sqlite, work, log) -> dict[str, Any]:
    """One real sweep of the chosen settings and one of the defaults, on the same seed (so the same
    configurations drawn first), each ended by the budget as ``run --budget`` would end it."""
    from hpsearch.settings import SweepSettings

    st = choice.chosen.setting
    common = dict(strategy="random", max_epochs=st.max_epochs, seed=seed, budget=arms["budget"],
                  storage=str(work / "ray-budget"), tracking_uri=sqlite, experiment="bench-budget")
    wall, result = _sweep(SweepSettings(
        scheduler=st.scheduler, trials=st.trials, grace_period=st.grace_period, reduction_factor=st.reduction_factor,
        concurrency=st.workers, name=f"budget-{arms['fraction']:g}-{seed}", **common), choice.forecast)
    _, defaults = _sweep(SweepSettings(
        scheduler="asha", trials=DEFAULT_TRIALS, grace_period=1, reduction_factor=3,
        name=f"budget-defaults-{arms['fraction']:g}-{seed}", **common))
    band = choice.chosen.wall
    row = {"budget": arms["budget"], "seed": seed, "wall_s": wall, "fit_s": result.wall_s, "band": band,
           "within": band[1] - SLACK_S <= wall <= band[2] + SLACK_S, "epochs": result.total_epochs,
           "best": result.best_metric, "defaults_best": defaults.best_metric,
           "defaults_simulated_median": arms["defaults_best"][0],
           "stopped_by": str(result.stopped_by) if result.stopped_by else None}
    log(f"budget real {arms['budget']} seed {seed}: {wall:.0f} s (band {band[1]:.0f}-{band[2]:.0f}), "
        f"{result.total_epochs} epochs, best {result.best_metric} (defaults {defaults.best_metric}), "
        f"stopped by {row['stopped_by']}")
    return row
