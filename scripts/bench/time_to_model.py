"""Parts 2 and 3 on one set of real sweeps: the MNIST-1D MLP space (spaces/mlp.py), 4000/4000
split, budget ``max_epochs`` per trial, reduction factor 3, 2 workers. ``Runner`` (the arms) is
shared with the tracking part (tracking_cost.py).

Part 2, time to a good model. First, for each of ``reference_seeds`` seeds (default: every seed),
random search with every trial trained to the end (hpsearch random/FIFO, ``trials``
configurations). Target = the median (over those seeds; the lower median for an even count) of
its best validation accuracy. Then every other arm searches
until it reaches the target, sampling up to ``search_trials`` configurations: giving more
configurations the budget that early stopping frees is the point of early stopping, and a fixed
number of configurations would only measure how good the best of them is. The hpsearch arms use
``goal=target``, Ray Tune used directly a ``Stopper`` with ``stop_all``, Optuna used directly
``study.stop()``: each ends as soon as a trial reports the target. For each arm and seed: the
wall-clock seconds and the epochs consumed until the best validation accuracy reported so far
first reaches the target ("not reached" if the configurations or the time cap run out first);
per arm the median over seeds with its range. The goal is on hpsearch's best arm against the
faster of Ray Tune ASHA and Optuna TPE + Hyperband pruner used directly.

Part 3, worker utilization: seconds spent in the trainable's own code (everything but its calls to
report/load a checkpoint) summed over trials, over wall x 2 workers, per sweep; median over seeds.
Each hpsearch arm is compared with the direct arm that uses the same scheduler: random/ASHA and
TPE+ASHA with Ray Tune ASHA used directly (which runs random/ASHA's very configurations).
Hyperband has no direct twin here. The random/FIFO reference sweep (``trials`` x ``max_epochs``)
has none either (a twin would cost as much again per seed): the tracking part runs hpsearch
random/FIFO and Ray Tune FIFO used directly on the same configurations for that comparison.

Arms in each seed run in a rotated order so that drift on a busy machine spreads over all of them.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback, Stopper

from bench.common import (
    ROOT,
    WORKERS,
    count_children,
    env,
    figure,
    median,
    quiet,
    ratio,
    span,
    start_mlflow_server,
    stop_mlflow_server,
)

SPACE = str(ROOT / "spaces" / "mlp.py")
REDUCTION = 3
ARMS = {  # arm -> label
    "random_fifo": "hpsearch random/FIFO",
    "asha": "hpsearch random/ASHA",
    "hyperband": "hpsearch random/Hyperband",
    "tpe_asha": "hpsearch TPE+ASHA",
    "ray_asha": "Ray Tune ASHA, direct",
    "optuna_tpe_hb": "Optuna TPE+Hyperband pruner, direct",
}
HPSEARCH_SEARCH_ARMS = ("asha", "hyperband", "tpe_asha")
DIRECT_ARMS = ("ray_asha", "optuna_tpe_hb")
SEARCH_ARMS = (*HPSEARCH_SEARCH_ARMS, *DIRECT_ARMS)  # run to the target
MODEL_ARMS = ("random_fifo", *SEARCH_ARMS)
# Issue #12's goals. Time to target: hpsearch's best arm against the faster direct arm.
GOAL_VS_DIRECT, AIM_VS_DIRECT = 1.0, 1.3
# Utilization: at least this, and never below the direct arm with the same scheduler.
GOAL_UTILIZATION = {"fifo": 0.92, "asha": 0.85}
UTILIZATION_TWIN = {"asha": "ray_asha", "tpe_asha": "ray_asha"}  # hpsearch arm -> same-scheduler direct arm


class GoalStopper(Stopper):
    """Ray Tune used directly: end the experiment once a trial reports the target (what a Ray user
    writes for this; Ray's dict stopper stops single trials only)."""

    def __init__(self, metric: str, target: float) -> None:
        self.metric, self.target, self.reached = metric, target, False

    def __call__(self, trial_id, result):
        value = result.get(self.metric)
        self.reached = self.reached or (value is not None and value >= self.target)
        return False

    def stop_all(self):
        return self.reached


class Recorder(Callback):
    """Driver-side: when each epoch's result arrives, and what it says."""

    def __init__(self) -> None:
        self.results: list[tuple[float, float | None, str]] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append((time.time(), result.get("val_acc"), trial.trial_id))


class Runner:
    """The arms, on the one Ray instance: hpsearch, Ray Tune used directly, Optuna used directly."""

    def __init__(self, max_epochs: int, work: Path) -> None:
        from hpsearch.trial.data import load_dataset

        self.max_epochs, self.work = max_epochs, work
        self.data = load_dataset("mnist1d")
        self.sqlite = "sqlite:///" + str(work / "mlflow-sweeps" / "mlflow.db")
        self.server = None
        self.server_uri = None
        self.pool = None

    # -- set-up outside the timings ------------------------------------------------------------

    def open(self, server: bool = False, optuna: bool = False) -> None:
        from mlflow import MlflowClient

        (self.work / "mlflow-sweeps").mkdir(parents=True, exist_ok=True)
        with quiet(self.work / "setup-output.log"):
            MlflowClient(tracking_uri=self.sqlite).search_experiments(max_results=1)  # schema, once
        if server:
            self.server, self.server_uri = start_mlflow_server(self.work / "mlflow-server")
        if optuna:
            from bench import workloads

            # Two worker processes sharing a study in SQLite: Optuna's documented way to use two
            # cores (n_jobs threads share one GIL, and these small MLPs are Python-bound). Started
            # (torch imported) before timing, so the arm is charged only for the optimisation.
            self.pool = cf.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=workloads.instrument_worker)
            [f.result() for f in [self.pool.submit(workloads.warm_up) for _ in range(WORKERS)]]

    def close(self) -> None:
        if self.server is not None:
            stop_mlflow_server(self.server)
        if self.pool is not None:
            self.pool.shutdown()

    # -- arms ----------------------------------------------------------------------------------

    def hpsearch(self, strategy: str, scheduler: str, seed: int, trials: int, *, tracking: str = "sqlite",
                 goal: float | None = None, cap_s: float | None = None, experiment: str = "bench-model") -> dict[str, Any]:
        """One ``hpsearch.sweep``; ``tracking``: off, sqlite (the embedded store) or server."""
        import hpsearch

        uri: Any = {"off": False, "sqlite": self.sqlite, "server": self.server_uri}[tracking]
        rec = Recorder()
        with quiet(self.work / "hpsearch-output.log"):
            t0 = time.time()
            result = hpsearch.sweep(
                SPACE, data=self.data, strategy=strategy, scheduler=scheduler, trials=trials, goal=goal,
                time_budget_s=cap_s, max_epochs=self.max_epochs, reduction_factor=REDUCTION, seed=seed,
                storage=str(self.work / "ray"), tracking_uri=uri, experiment=experiment, progress=False,
                callbacks=[rec],
            )
            wall = time.time() - t0
        out = self._summary(t0, wall, rec.results, {t.trial_id for t in result.trials}, goal)
        out.update(counts=result.counts(), fit_s=result.wall_s, stopped_by=result.stopped_by)
        if result.tracking:
            out["mlflow_children"] = count_children(uri, result.tracking["parent_run_id"])
            out["mlflow_pending"] = result.tracking.get("pending")
        return out

    def ray(self, scheduler: str, seed: int, trials: int, *, target: float | None = None,
            cap_s: float | None = None) -> dict[str, Any]:
        """Ray Tune used directly, with ASHA (hpsearch's rungs) or FIFO, on the configurations
        hpsearch's random strategy runs for ``seed`` (given as points to evaluate), so the two
        differ only in the orchestration."""
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
        from ray.tune.search import BasicVariantGenerator

        from bench import workloads
        from hpsearch.space.modules import load_space_module

        module = load_space_module(SPACE)
        rec = Recorder()
        stopper = GoalStopper("val_acc", target) if target is not None else None
        sched = (ASHAScheduler(time_attr="epoch", max_t=self.max_epochs, grace_period=1, reduction_factor=REDUCTION)
                 if scheduler == "asha" else FIFOScheduler())
        # Ray Tune as its documentation teaches it, with the settings an expert adds (actor reuse,
        # no console tables, no per-result files), a Stopper that ends the experiment at the
        # target and Ray's own time budget. 1 CPU a trial on 2 CPUs: 2 trials at once, as hpsearch.
        points = module.space.sample(trials, seed=seed)
        with env(RAY_AIR_NEW_OUTPUT=None, TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"), \
                quiet(self.work / "ray-output.log"):
            t0 = time.time()
            tuner = tune.Tuner(
                tune.with_parameters(workloads.ray_direct_train, data=self.data, max_epochs=self.max_epochs),
                param_space={name: None for name in module.space.names},
                tune_config=tune.TuneConfig(
                    metric="val_acc", mode="max", num_samples=trials, reuse_actors=True, time_budget_s=cap_s,
                    search_alg=BasicVariantGenerator(points_to_evaluate=points), scheduler=sched,
                ),
                run_config=tune.RunConfig(storage_path=str(self.work / "ray"),
                                          name=f"ray-{scheduler}-{seed}-{time.time_ns()}", verbose=0,
                                          callbacks=[rec], stop=stopper),
            )
            grid = tuner.fit()
            wall = time.time() - t0
        # Every trial of the grid, started or not, for the timings (a trial may start and be
        # stopped before it reports); ``trials`` in the summary counts those that reported.
        ids = {r.metrics.get("trial_id") for r in grid}
        out = self._summary(t0, wall, rec.results, ids, target)
        out.update(errors=sum(1 for r in grid if r.error is not None),
                   stopped_by="goal" if stopper is not None and stopper.reached else None)
        return out

    def optuna(self, seed: int, trials: int, target: float, cap_s: float) -> dict[str, Any]:
        import optuna

        from bench import workloads

        storage = "sqlite:///" + str(self.work / "optuna-sweeps.db")
        name = f"tpe-hb-{seed}-{time.time():.0f}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the workers say the same
        t0 = time.time()
        optuna.create_study(study_name=name, storage=storage, direction="maximize")
        futures = [self.pool.submit(workloads.optuna_worker, storage, name, SPACE, self.max_epochs, trials,
                                    seed * 100 + k, str(self.work / "timings"), target, t0 + cap_s)
                   for k in range(WORKERS)]
        reports = sorted((r for f in futures for r in f.result()), key=lambda r: r["t"])
        wall = time.time() - t0
        study = optuna.load_study(study_name=name, storage=storage)
        tags = {f"{name}:{t.number}" for t in study.trials}
        out = self._summary(t0, wall, [(r["t"], r["val_acc"], f"{name}:{r['trial']}") for r in reports], tags, target)
        states = [t.state.name.lower() for t in study.trials]
        out.update(counts={s: states.count(s) for s in set(states)})
        return out

    def _summary(self, t0: float, wall: float, results: list[tuple[float, float | None, str]], tags: set[str],
                 target: float | None) -> dict:
        """Wall, the result curve, the trials that reported at least once, and where the 2
        workers' time went: training (the trainable's own code), inside report/load_checkpoint,
        and outside any trial (start-up, between trials, end).

        With a ``target``: which trial reached it first, after how many of its own epochs, and how
        many seconds of training those epochs took by themselves. That is only what this sweep's
        winner cost; it bounds nothing (another configuration could reach the target sooner).
        """
        from bench import workloads

        timings = workloads.read_timings(str(self.work / "timings"), tags)
        epochs = [r for r in timings if "epoch" in r]
        train_s = sum(r["train_s"] for r in epochs)
        report_s = sum(r["report_s"] for r in epochs)
        # A trial runs in segments (Hyperband pauses and resumes it): each from a start (its
        # load_checkpoint) to the last report before the next start.
        open_at: dict[str, float] = {}
        last_at: dict[str, float] = {}
        in_trials, segments = 0.0, 0
        for r in timings:  # oldest first
            tag = r["tag"]
            if r.get("event") == "start":
                if tag in open_at and tag in last_at:
                    in_trials += last_at.pop(tag) - open_at[tag]
                open_at[tag] = r["t"]
                segments += 1
            else:
                last_at[tag] = r["t"]
        in_trials += sum(t - open_at[tag] for tag, t in last_at.items() if tag in open_at)
        capacity = wall * WORKERS
        first = min((r["t"] for r in timings), default=t0) - t0
        last = t0 + wall - max((r["t"] for r in timings), default=t0 + wall)
        # Worker time outside any trial that is neither before the first nor after the last one:
        # the hand-over from one trial (or paused segment) to the next: stop, reset or start an
        # actor, fetch the data, build the model.
        between = max(capacity - in_trials - WORKERS * (first + last), 0.0)
        curve = [(round(t - t0, 3), acc) for t, acc, _ in results if acc is not None]
        winner = None
        if target is not None:
            reached = next(((tag, i) for i, (_, acc, tag) in enumerate(results) if acc is not None and acc >= target), None)
            if reached is not None:
                tag, i = reached
                own = sum(1 for _, acc, t in results[: i + 1] if t == tag)  # the winner's epochs so far
                alone = sum(r["train_s"] for r in epochs if r["tag"] == tag and r["epoch"] <= own)
                winner = {"trial": tag, "epochs": own, "own_train_s": alone}
        return {
            "wall_s": wall, "epochs": len(curve), "trials": len({tag for _, _, tag in results}),
            "best_val_acc": max((a for _, a in curve), default=None),
            "train_s": train_s, "report_s": report_s, "utilization": train_s / capacity,
            "report_share": report_s / capacity, "outside_trials_share": 1 - in_trials / capacity,
            "first_trial_start_s": first, "after_last_report_s": last,
            "between_trials_s_per_trial": between / max(segments, 1), "curve": curve, "winner": winner,
        }


def to_target(curve: list, target: float) -> tuple[float, int]:
    """Seconds and epochs until the best reported validation accuracy first reaches ``target``."""
    for i, (t, acc) in enumerate(curve):
        if acc >= target:
            return t, i + 1
    return math.inf, math.inf


def _arm(runner: Runner, arm: str, seed: int, trials: int, search_trials: int, target: float | None,
         cap_s: float | None) -> dict[str, Any]:
    """One sweep of the model part: random/FIFO runs ``trials`` configurations whole; the search
    arms run until ``target``, for at most ``cap_s`` seconds and ``search_trials`` configurations."""
    if arm == "random_fifo":
        return runner.hpsearch("random", "fifo", seed, trials)
    if target is None or cap_s is None:
        raise ValueError(f"{arm}: runs to the target of random/FIFO, which is not known yet")
    if arm == "ray_asha":
        return runner.ray("asha", seed, search_trials, target=target, cap_s=cap_s)
    if arm == "optuna_tpe_hb":
        return runner.optuna(seed, search_trials, target, cap_s)
    strategy, scheduler = {"asha": ("random", "asha"), "hyperband": ("random", "hyperband"),
                           "tpe_asha": ("tpe", "asha")}[arm]
    return runner.hpsearch(strategy, scheduler, seed, search_trials, goal=target, cap_s=cap_s)


def run(trials: int, search_trials: int, max_epochs: int, seeds: int, cap_fraction: float, work: Path,
        log: Callable[[str], None], reference_seeds: int | None = None) -> dict[str, Any]:
    """``cap_fraction``: a search arm stops after random/FIFO's median wall time divided by this
    (a bound on the suite's time). One that has not reached the target by then is slower than
    random/FIFO's median time to the target divided by the cap: the table gives that bound."""
    runner = Runner(max_epochs, work)
    runner.open(optuna=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    target = cap_s = None

    def one(arm: str, seed: int) -> None:
        out = _arm(runner, arm, seed, trials, search_trials, target, cap_s)
        out["seed"] = seed
        runs.setdefault(arm, []).append(out)
        log(f"model seed {seed + 1}/{seeds} {arm:14s} wall {out['wall_s']:6.1f} s  {out['epochs']:5d} epochs  "
            f"{out['trials']:4d} trials  best {out['best_val_acc'] or 0:.4f}  utilization {out['utilization']:.0%}")

    try:
        # Random search first: it sets the target the others run to. It is the costliest sweep (every
        # configuration to the end), so it may run on fewer seeds than the search arms.
        ref = min(seeds, reference_seeds or seeds)
        for seed in range(ref):
            one("random_fifo", seed)
        target = statistics.median_low([r["best_val_acc"] for r in runs["random_fifo"]])
        cap_s = median([r["wall_s"] for r in runs["random_fifo"]]) / cap_fraction
        log(f"model: target val_acc {target:.4f} (median best of random/FIFO over {ref} seed(s)); "
            f"the search arms stop after {cap_s:.0f} s")
        for seed in range(seeds):
            order = list(SEARCH_ARMS)
            for arm in order[seed % len(order):] + order[: seed % len(order)]:
                one(arm, seed)
    finally:
        runner.close()
    size = {"trials": trials, "search_trials": search_trials, "max_epochs": max_epochs, "reduction_factor": REDUCTION,
            "seeds": seeds, "reference_seeds": min(seeds, reference_seeds or seeds), "workers": WORKERS,
            "cap_s": cap_s, "cap_fraction": cap_fraction}
    return {"model": _model_part(runs, size, target), "utilization": _utilization_part(runs, size)}


def _per_seed(values, unit: str) -> str:
    return ", ".join("not reached" if not math.isfinite(x) else (f"{x:.0f} {unit}" if unit == "epochs" else f"{x:.1f} {unit}")
                     for x in values)


def _model_part(runs: dict[str, list[dict]], size: dict, target: float) -> dict[str, Any]:
    # ``target`` is the lower median: with an even number of seeds the plain median (a mean) would
    # be reached by only half of random search's own runs, leaving its median time undefined.
    per_arm: dict[str, Any] = {}
    for arm in MODEL_ARMS:
        secs, epochs = zip(*(to_target(r["curve"], target) for r in runs[arm]))
        winners = [r["winner"]["own_train_s"] for r in runs[arm] if r.get("winner")]
        per_arm[arm] = {"seconds_to_target": list(secs), "epochs_to_target": list(epochs),
                        "median_seconds": median(secs), "range_seconds": span(secs),
                        "median_epochs": median(epochs), "range_epochs": span(epochs),
                        "reached": sum(math.isfinite(s) for s in secs), "median_wall_s": median([r["wall_s"] for r in runs[arm]]),
                        "median_total_epochs": median([r["epochs"] for r in runs[arm]]),
                        "median_trials": median([r["trials"] for r in runs[arm]]),
                        "median_best_val_acc": median([r["best_val_acc"] for r in runs[arm]]),
                        # What the configuration that first reached the target trained by itself
                        # (seeds where one did): a description of the winner, not a bound.
                        "median_winner_own_train_s": median(winners)}
    rnd = per_arm["random_fifo"]
    n = size["seeds"]
    figs = [figure("model", f"target: median best val_acc of random/FIFO, every trial to {size['max_epochs']} epochs",
                   round(target, 4), "", goal="", met=None,
                   note=f"random/FIFO: {size['trials']} configurations per seed; the others search until they "
                        f"reach it, up to {size['search_trials']} configurations and {size['cap_s']:.0f} s (random/FIFO's "
                        f"time / {size['cap_fraction']:g}); {n} seed(s) ({size['reference_seeds']} for random/FIFO), "
                        f"2 workers; times are medians over the seeds")]
    direct = {"Ray Tune ASHA": per_arm["ray_asha"], "Optuna TPE+HB": per_arm["optuna_tpe_hb"]}
    for arm in HPSEARCH_SEARCH_ARMS:
        a = per_arm[arm]
        for what, unit in (("seconds", "s"), ("epochs", "epochs")):
            value = a[f"median_{what}"]
            speedup = ratio(rnd[f"median_{what}"], value) if math.isfinite(value) else None
            base = {"random/FIFO": rnd[f"median_{what}"], **{k: v[f"median_{what}"] for k, v in direct.items()}}
            notes = [f"per seed {_per_seed(a[f'{what}_to_target'], unit)}; reached in {a['reached']} of {n}"]
            notes.append("direct per seed: " + "; ".join(f"{k} {_per_seed(v[f'{what}_to_target'], unit)}"
                                                         for k, v in direct.items()))
            if what == "seconds":
                if a["reached"] < n:
                    notes.append(f"a seed that did not reach it stopped at the {size['cap_s']:.0f}-s cap")
                    if not math.isfinite(value) and math.isfinite(rnd["median_seconds"]):
                        notes.append(f"so its median speed-up over random/FIFO is below "
                                     f"{rnd['median_seconds'] / size['cap_s']:.1f}x (random/FIFO's "
                                     f"{rnd['median_seconds']:.0f} s to the target / the cap)")
                if a["median_winner_own_train_s"]:
                    notes.append(f"the configuration that first reached the target had trained "
                                 f"{a['median_winner_own_train_s']:.0f} s by itself (median over the seeds that reached it)")
            else:
                notes.append(f"tried {a['median_trials']:.0f} configurations and trained {a['median_total_epochs']:.0f} "
                             f"epochs in all (random/FIFO: {rnd['median_trials']:.0f} and "
                             f"{rnd['median_total_epochs']:.0f})")
            figs.append(figure(
                "model", f"{'wall-clock' if what == 'seconds' else 'epochs'} to target, {ARMS[arm]}", value, unit,
                baselines=base, ratio_value=speedup, ratio_text="random / this", goal="", met=None,
                note="; ".join(notes),
            ))
    # The goal: hpsearch's best arm against the faster of the two direct arms.
    best = min(HPSEARCH_SEARCH_ARMS, key=lambda arm: per_arm[arm]["median_seconds"])
    value = per_arm[best]["median_seconds"]
    faster = min(v["median_seconds"] for v in direct.values())
    vs_direct = None if math.isinf(value) and math.isinf(faster) else ratio(faster, value)
    figs.append(figure(
        "model", f"wall-clock to target, hpsearch's best arm ({ARMS[best]})", value, "s",
        baselines={k: v["median_seconds"] for k, v in direct.items()}, ratio_value=vs_direct,
        ratio_text="faster direct / this",
        goal=f">= {GOAL_VS_DIRECT:.1f}x (aim {AIM_VS_DIRECT:.1f}x)",
        met=math.isfinite(value) and vs_direct is not None and vs_direct >= GOAL_VS_DIRECT,
        note=f"the best of {len(HPSEARCH_SEARCH_ARMS)} hpsearch arms by median over {n} seed(s), against the faster "
             f"of the 2 direct arms; not reached counts as the slowest",
    ))
    return {"size": size, "target_val_acc": target, "per_arm": per_arm, "runs": strip_curves(runs, MODEL_ARMS),
            "figures": figs}


UTILIZATION_KEYS = ("utilization", "report_share", "outside_trials_share", "first_trial_start_s",
                    "after_last_report_s", "between_trials_s_per_trial")


def utilization_summary(arm_runs: list[dict]) -> dict[str, Any]:
    """Medians over an arm's sweeps of where the workers' time went, and the utilization's range."""
    out = {f"median_{k}": median([r[k] for r in arm_runs if r.get(k) is not None]) for k in UTILIZATION_KEYS}
    out["range_utilization"] = span([r["utilization"] for r in arm_runs])
    out["sweeps"] = len(arm_runs)
    return out


def breakdown(u: dict[str, Any]) -> str:
    """The rest of the worker time, in words (from ``utilization_summary``)."""
    lo, hi = u["range_utilization"]
    return (f"{f'range {lo:.0%}-{hi:.0%}; ' if u['sweeps'] > 1 else ''}the rest of the worker time: inside report "
            f"(checkpoint, hand-off to the "
            f"driver) {u['median_report_share']:.0%}; outside any trial {u['median_outside_trials_share']:.0%}, of which "
            f"{u['median_first_trial_start_s']:.1f} s before the first trial starts, "
            f"{u['median_after_last_report_s']:.1f} s after the last report until the sweep returns, and "
            f"{u['median_between_trials_s_per_trial']:.2f} s per trial (or resumed segment) between trials")


def _utilization_part(runs: dict[str, list[dict]], size: dict) -> dict[str, Any]:
    per_arm = {arm: utilization_summary(runs[arm]) for arm in MODEL_ARMS}
    pct = {arm: 100 * per_arm[arm]["median_utilization"] for arm in MODEL_ARMS}
    sweeps = f"median of {size['seeds']} seed(s)"
    figs = [figure(
        "utilization", f"worker utilization, {ARMS['random_fifo']} ({size['trials']} configurations x "
                       f"{size['max_epochs']} epochs)", pct["random_fifo"], "%",
        goal=f">= {100 * GOAL_UTILIZATION['fifo']:.0f}%",
        met=per_arm["random_fifo"]["median_utilization"] >= GOAL_UTILIZATION["fifo"],
        note=f"{sweeps}; {breakdown(per_arm['random_fifo'])}; no direct baseline for this sweep (the tracking part "
             f"compares random/FIFO with Ray Tune FIFO used directly on the same configurations)",
    )]
    for arm in HPSEARCH_SEARCH_ARMS:
        twin = UTILIZATION_TWIN.get(arm)
        u = per_arm[arm]
        if twin is None:
            figs.append(figure(
                "utilization", f"worker utilization, {ARMS[arm]}", pct[arm], "%", goal="", met=None,
                note=f"{sweeps}; {breakdown(u)}; no direct baseline (no goal in issue #12)",
            ))
            continue
        goal = GOAL_UTILIZATION["asha"]
        same = "on the same configurations" if arm == "asha" else "TPE proposes its own configurations"
        figs.append(figure(
            "utilization", f"worker utilization, {ARMS[arm]}", pct[arm], "%",
            baselines={ARMS[twin]: pct[twin]}, ratio_value=ratio(pct[arm], pct[twin]),
            ratio_text=f"this / {ARMS[twin]}", goal=f">= {100 * goal:.0f}% and >= {ARMS[twin]}",
            met=u["median_utilization"] >= goal and pct[arm] >= pct[twin],
            note=f"{sweeps}; {breakdown(u)}. {ARMS[twin]} ({same}): {breakdown(per_arm[twin])}. "
                 f"These sweeps end at the target or the cap, so their length varies by arm and seed",
        ))
    return {"size": size, "per_arm": per_arm, "figures": figs}


def strip_curves(runs: dict[str, list[dict]], arms) -> dict[str, list[dict]]:
    """Raw numbers per run, with the result curve thinned to where the best improved."""
    out = {}
    for arm in arms:
        out[arm] = []
        for r in runs[arm]:
            best, steps = -1.0, []
            for i, (t, acc) in enumerate(r["curve"]):
                if acc > best:
                    best = acc
                    steps.append({"s": t, "epochs": i + 1, "val_acc": round(acc, 4)})
            out[arm].append({**{k: v for k, v in r.items() if k != "curve"}, "best_so_far": steps})
    return out
