"""Parts 2-4 on one set of real sweeps: the MNIST-1D MLP space (spaces/mlp.py), 4000/4000 split,
budget ``max_epochs`` per trial, reduction factor 3, 2 workers.

Part 2, time to a good model. First, for every seed, random search with every trial trained to
the end (hpsearch random/FIFO, ``trials`` configurations). Target = the median (over seeds; the
lower median for an even count) of its best validation accuracy. Then every other arm searches
until it reaches the target, sampling up to ``search_trials`` configurations: giving more
configurations the budget that early stopping frees is the point of early stopping, and a fixed
number of configurations would only measure how good the best of them is. The hpsearch arms use
``goal=target``, Ray Tune used directly a ``Stopper`` with ``stop_all``, Optuna used directly
``study.stop()``: each ends as soon as a trial reports the target. For each arm and seed: the
wall-clock seconds and the epochs consumed until the best validation accuracy reported so far
first reaches the target ("not reached" if the configurations run out first); medians over seeds;
the ratio is random's median over the arm's.

Part 3, worker utilization: seconds spent in the trainable's own code (everything but its calls to
report/load a checkpoint) summed over trials, over wall x 2 workers, for the hpsearch sweeps of
part 2.

Part 4, tracking cost: one fixed sweep, hpsearch random/ASHA over ``trials`` configurations (no
target, so each variant does the same work), with tracking off, into the embedded SQLite store,
and into a real ``mlflow server`` on 127.0.0.1; the ratio of median seconds per epoch trained.

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

from bench.common import (ROOT, WORKERS, count_children, env, figure, median, quiet, ratio, start_mlflow_server,
                          stop_mlflow_server)

SPACE = str(ROOT / "spaces" / "mlp.py")
REDUCTION = 3
ARMS = {  # arm -> label
    "random_fifo": "hpsearch random/FIFO",
    "asha": "hpsearch random/ASHA",
    "hyperband": "hpsearch random/Hyperband",
    "tpe_asha": "hpsearch TPE+ASHA",
    "ray_asha": "Ray Tune ASHA, direct",
    "optuna_tpe_hb": "Optuna TPE+Hyperband pruner, direct",
    "track_off": "hpsearch random/ASHA, tracking off",
    "track_sqlite": "hpsearch random/ASHA, embedded SQLite",
    "track_server": "hpsearch random/ASHA, mlflow server",
}
SEARCH_ARMS = ("asha", "hyperband", "tpe_asha", "ray_asha", "optuna_tpe_hb")  # run to the target
MODEL_ARMS = ("random_fifo", *SEARCH_ARMS)
TRACKING_ARMS = ("track_off", "track_sqlite", "track_server")
HPSEARCH_ARMS = ("random_fifo", "asha", "hyperband", "tpe_asha")
GOAL_SPEEDUP = 8.0
GOAL_UTILIZATION = 0.95
GOAL_TRACKING = 1.03


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
    def __init__(self, trials: int, search_trials: int, max_epochs: int, work: Path, log: Callable[[str], None]) -> None:
        from hpsearch.data import load_dataset

        self.trials, self.search_trials, self.max_epochs, self.work, self.log = trials, search_trials, max_epochs, work, log
        self.data = load_dataset("mnist1d")
        self.sqlite = "sqlite:///" + str(work / "mlflow-sweeps" / "mlflow.db")
        self.server = None
        self.server_uri = None
        self.pool = None

    # -- set-up outside the timings ------------------------------------------------------------

    def open(self, arms: set[str]) -> None:
        from mlflow import MlflowClient

        (self.work / "mlflow-sweeps").mkdir(parents=True, exist_ok=True)
        with quiet(self.work / "setup-output.log"):
            MlflowClient(tracking_uri=self.sqlite).search_experiments(max_results=1)  # schema, once
        if "track_server" in arms:
            self.server, self.server_uri = start_mlflow_server(self.work / "mlflow-server")
        if "optuna_tpe_hb" in arms:
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

    def run(self, arm: str, seed: int, target: float | None = None, cap_s: float | None = None) -> dict[str, Any]:
        """One sweep. The search arms run until ``target``, for at most ``cap_s`` seconds and
        ``search_trials`` configurations; random/FIFO and the tracking arms run ``trials``
        configurations whole."""
        if arm in SEARCH_ARMS and (target is None or cap_s is None):
            raise ValueError(f"{arm}: runs to the target of random/FIFO, which is not known yet")
        if arm == "ray_asha":
            return self._ray(seed, target, cap_s)
        if arm == "optuna_tpe_hb":
            return self._optuna(seed, target, cap_s)
        strategy, scheduler = {"random_fifo": ("random", "fifo"), "hyperband": ("random", "hyperband"),
                               "tpe_asha": ("tpe", "asha")}.get(arm, ("random", "asha"))
        uri: Any = {"track_off": False, "track_server": self.server_uri}.get(arm, self.sqlite)
        if arm in SEARCH_ARMS:
            return self._hpsearch(strategy, scheduler, uri, seed, self.search_trials, target, cap_s)
        return self._hpsearch(strategy, scheduler, uri, seed, self.trials, None, None)

    def _hpsearch(self, strategy: str, scheduler: str, uri: Any, seed: int, trials: int, goal: float | None,
                  cap_s: float | None) -> dict[str, Any]:
        import hpsearch

        rec = Recorder()
        with quiet(self.work / "hpsearch-output.log"):
            t0 = time.time()
            result = hpsearch.sweep(
                SPACE, data=self.data, strategy=strategy, scheduler=scheduler, trials=trials, goal=goal,
                time_budget_s=cap_s, max_epochs=self.max_epochs, reduction_factor=REDUCTION, seed=seed,
                storage=str(self.work / "ray"), tracking_uri=uri, experiment="bench-model", progress=False,
                callbacks=[rec],
            )
            wall = time.time() - t0
        out = self._summary(t0, wall, rec.results, {t.trial_id for t in result.trials}, goal)
        out.update(trials=sum(1 for t in result.trials if t.status != "pending"), counts=result.counts(),
                   fit_s=result.wall_s, stopped_by=result.stopped_by)
        if result.tracking:
            out["mlflow_children"] = count_children(uri, result.tracking["parent_run_id"])
            out["mlflow_pending"] = result.tracking.get("pending")
        return out

    def _ray(self, seed: int, target: float, cap_s: float) -> dict[str, Any]:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import BasicVariantGenerator

        from bench import workloads
        from hpsearch.modules import load_space_module

        module = load_space_module(SPACE)
        rec = Recorder()
        stopper = GoalStopper("val_acc", target)
        # Ray Tune as its documentation teaches it, with the settings an expert adds (actor reuse,
        # no console tables, no per-result files), the same ASHA rungs, a Stopper that ends the
        # experiment at the target and Ray's own time budget. It runs the very configurations
        # hpsearch random/ASHA runs for this seed (given as points to evaluate), so the two differ
        # only in the orchestration: time to the target depends on the order good ones come in.
        points = module.space.sample(self.search_trials, seed=seed)
        with env(RAY_AIR_NEW_OUTPUT=None, TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"), \
                quiet(self.work / "ray-output.log"):
            t0 = time.time()
            tuner = tune.Tuner(
                tune.with_parameters(workloads.ray_direct_train, data=self.data, max_epochs=self.max_epochs),
                param_space={name: None for name in module.space.names},
                tune_config=tune.TuneConfig(
                    metric="val_acc", mode="max", num_samples=self.search_trials, reuse_actors=True,
                    time_budget_s=cap_s, search_alg=BasicVariantGenerator(points_to_evaluate=points),
                    scheduler=ASHAScheduler(time_attr="epoch", max_t=self.max_epochs, grace_period=1,
                                            reduction_factor=REDUCTION),
                ),
                run_config=tune.RunConfig(storage_path=str(self.work / "ray"), name=f"ray-asha-{seed}-{t0:.0f}",
                                          verbose=0, callbacks=[rec], stop=stopper),
            )
            grid = tuner.fit()
            wall = time.time() - t0
        ids = {r.metrics.get("trial_id") for r in grid}
        out = self._summary(t0, wall, rec.results, ids, target)
        out.update(trials=sum(1 for r in grid if r.metrics), errors=sum(1 for r in grid if r.error is not None),
                   stopped_by="goal" if stopper.reached else None)
        return out

    def _optuna(self, seed: int, target: float, cap_s: float) -> dict[str, Any]:
        import optuna

        from bench import workloads

        storage = "sqlite:///" + str(self.work / "optuna-sweeps.db")
        name = f"tpe-hb-{seed}-{time.time():.0f}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the workers say the same
        t0 = time.time()
        optuna.create_study(study_name=name, storage=storage, direction="maximize")
        futures = [self.pool.submit(workloads.optuna_worker, storage, name, SPACE, self.max_epochs, self.search_trials,
                                    seed * 100 + k, str(self.work / "timings"), target, t0 + cap_s)
                   for k in range(WORKERS)]
        reports = sorted((r for f in futures for r in f.result()), key=lambda r: r["t"])
        wall = time.time() - t0
        study = optuna.load_study(study_name=name, storage=storage)
        tags = {f"{name}:{t.number}" for t in study.trials}
        out = self._summary(t0, wall, [(r["t"], r["val_acc"], f"{name}:{r['trial']}") for r in reports], tags, target)
        states = [t.state.name.lower() for t in study.trials]
        out.update(trials=len(study.trials), counts={s: states.count(s) for s in set(states)})
        return out

    def _summary(self, t0: float, wall: float, results: list[tuple[float, float | None, str]], tags: set[str],
                 target: float | None) -> dict:
        """Wall, the result curve, and where the 2 workers' time went: training (the trainable's own
        code), inside report/load_checkpoint, and outside any trial (start-up, between trials, end).

        With a ``target``: which trial reached it first, after how many of its own epochs, and how
        many seconds of training those epochs took by themselves. No scheduler reaches the target
        sooner than that configuration takes to train, which bounds the possible speed-up.
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
                winner = {"trial": tag, "epochs": own, "train_s": alone}
        return {
            "wall_s": wall, "epochs": len(curve), "best_val_acc": max((a for _, a in curve), default=None),
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


def run(trials: int, search_trials: int, max_epochs: int, seeds: int, tracking_seeds: int, cap_fraction: float,
        parts: list[str], work: Path, log) -> dict[str, Any]:
    """``cap_fraction``: a search arm stops after random/FIFO's median wall time divided by this
    (a bound on the suite's time). One that has not reached the target by then is slower than
    random/FIFO's median time to the target divided by the cap: the table gives that bound."""
    model, tracking = "model" in parts, "tracking" in parts
    runner = Runner(trials, search_trials, max_epochs, work, log)
    runner.open(set(MODEL_ARMS if model else ()) | set(TRACKING_ARMS if tracking else ()))
    runs: dict[str, list[dict[str, Any]]] = {}
    target = cap_s = None

    def one(arm: str, seed: int) -> None:
        out = runner.run(arm, seed, target, cap_s)
        out["seed"] = seed
        runs.setdefault(arm, []).append(out)
        log(f"model seed {seed + 1}/{seeds} {arm:14s} wall {out['wall_s']:6.1f} s  {out['epochs']:5d} epochs  "
            f"{out['trials']:4d} trials  best {out['best_val_acc'] or 0:.4f}  utilization {out['utilization']:.0%}")

    try:
        if model:  # random search first, every seed: it sets the target the others run to
            for seed in range(seeds):
                one("random_fifo", seed)
            target = statistics.median_low([r["best_val_acc"] for r in runs["random_fifo"]])
            cap_s = median([r["wall_s"] for r in runs["random_fifo"]]) / cap_fraction
            log(f"model: target val_acc {target:.4f} (median best of random/FIFO over {seeds} seed(s)); "
                f"the search arms stop after {cap_s:.0f} s")
        for seed in range(max(seeds if model else 0, tracking_seeds if tracking else 0)):
            later = (list(SEARCH_ARMS) if model and seed < seeds else []) + \
                    (list(TRACKING_ARMS) if tracking and seed < tracking_seeds else [])
            for arm in later[seed % len(later):] + later[: seed % len(later)]:
                one(arm, seed)
    finally:
        runner.close()
    size = {"trials": trials, "search_trials": search_trials, "max_epochs": max_epochs, "reduction_factor": REDUCTION,
            "seeds": seeds, "tracking_seeds": tracking_seeds, "workers": WORKERS, "cap_s": cap_s,
            "cap_fraction": cap_fraction}
    out: dict[str, Any] = {}
    if model:
        out["model"] = _model_part(runs, size, target)
        out["utilization"] = _utilization_part(runs, size)
    if tracking:
        out["tracking"] = _tracking_part(runs, size)
    return out


def _model_part(runs: dict[str, list[dict]], size: dict, target: float) -> dict[str, Any]:
    # ``target`` is the lower median: with an even number of seeds the plain median (a mean) would
    # be reached by only half of random search's own runs, leaving its median time undefined.
    per_arm: dict[str, Any] = {}
    for arm in MODEL_ARMS:
        secs, epochs = zip(*(to_target(r["curve"], target) for r in runs[arm]))
        per_arm[arm] = {"seconds_to_target": list(secs), "epochs_to_target": list(epochs),
                        "median_seconds": median(secs), "median_epochs": median(epochs),
                        "reached": sum(math.isfinite(s) for s in secs), "median_wall_s": median([r["wall_s"] for r in runs[arm]]),
                        "median_total_epochs": median([r["epochs"] for r in runs[arm]]),
                        "median_trials": median([r["trials"] for r in runs[arm]]),
                        "median_best_val_acc": median([r["best_val_acc"] for r in runs[arm]]),
                        # The winner's own training time: the least any scheduler could have needed.
                        "median_winner_train_s": median([r["winner"]["train_s"] for r in runs[arm] if r.get("winner")])}
    rnd = per_arm["random_fifo"]
    n = size["seeds"]
    figs = [figure("model", f"target: median best val_acc of random/FIFO, every trial to {size['max_epochs']} epochs",
                   round(target, 4), "", goal="", met=None,
                   note=f"random/FIFO: {size['trials']} configurations per seed; the others search until they "
                        f"reach it, up to {size['search_trials']} configurations and {size['cap_s']:.0f} s (random/FIFO's "
                        f"time / {size['cap_fraction']:g}); {n} seed(s), 2 workers")]
    direct = {"Ray Tune ASHA": per_arm["ray_asha"], "Optuna TPE+HB": per_arm["optuna_tpe_hb"]}
    for arm in HPSEARCH_ARMS[1:]:
        a = per_arm[arm]
        for what, unit in (("seconds", "s"), ("epochs", "epochs")):
            value = a[f"median_{what}"]
            speedup = ratio(rnd[f"median_{what}"], value) if math.isfinite(value) else None
            base = {"random/FIFO": rnd[f"median_{what}"], **{k: v[f"median_{what}"] for k, v in direct.items()}}
            met = None
            notes = []
            if a["reached"] < n:
                per_seed = ", ".join("not reached" if not math.isfinite(x) else
                                     (f"{x:.0f} epochs" if what == "epochs" else f"{x:.1f} s")
                                     for x in a[f"{what}_to_target"])
                notes.append(f"reached target in {a['reached']} of {n} seeds ({per_seed}); a seed that did not "
                             f"stopped at the {size['cap_s']:.0f}-s cap")
                if what == "seconds" and not math.isfinite(value) and math.isfinite(rnd["median_seconds"]):
                    notes.append(f"so its median speed-up is below {rnd['median_seconds'] / size['cap_s']:.1f}x "
                                 f"(random/FIFO's {rnd['median_seconds']:.0f} s to the target / the cap)")
            if what == "seconds":
                met = speedup is not None and speedup >= GOAL_SPEEDUP and all(
                    value <= v[f"median_{what}"] for v in direct.values())
                alone = a["median_winner_train_s"]
                if alone:
                    notes.append(f"the configuration that reached the target trained {alone:.0f} s by itself, so no "
                                 f"scheduler could beat {rnd['median_seconds'] / alone:.1f}x here")
            if what == "epochs":
                notes.append(f"tried {a['median_trials']:.0f} configurations and trained {a['median_total_epochs']:.0f} "
                             f"epochs in all (random/FIFO: {rnd['median_trials']:.0f} and "
                             f"{rnd['median_total_epochs']:.0f})")
            figs.append(figure(
                "model", f"{'wall-clock' if what == 'seconds' else 'epochs'} to target, {ARMS[arm]}", value, unit,
                baselines=base, ratio_value=speedup, ratio_text="random / this",
                goal=f">= {GOAL_SPEEDUP:.0f}x vs random and <= direct Ray/Optuna" if what == "seconds" else "",
                met=met, note="; ".join(notes),
            ))
    return {"size": size, "target_val_acc": target, "per_arm": per_arm, "runs": _strip(runs, MODEL_ARMS),
            "figures": figs}


def _utilization_part(runs: dict[str, list[dict]], size: dict) -> dict[str, Any]:
    keys = ("utilization", "report_share", "outside_trials_share", "first_trial_start_s", "after_last_report_s",
            "between_trials_s_per_trial")
    per_arm = {arm: {f"median_{k}": median([r[k] for r in runs[arm] if r.get(k) is not None]) for k in keys}
               for arm in MODEL_ARMS}
    pct = {arm: 100 * per_arm[arm]["median_utilization"] for arm in MODEL_ARMS}
    base = {"Ray Tune ASHA": pct["ray_asha"], "Optuna TPE+HB": pct["optuna_tpe_hb"]}
    figs = []
    for arm in HPSEARCH_ARMS:
        u = per_arm[arm]
        figs.append(figure(
            "utilization", f"worker utilization, {ARMS[arm]}", pct[arm], "%",
            baselines=base, ratio_value=ratio(pct[arm], base["Ray Tune ASHA"]),
            ratio_text="this / Ray Tune ASHA", goal=f">= {100 * GOAL_UTILIZATION:.0f}%",
            met=u["median_utilization"] >= GOAL_UTILIZATION,
            note=(f"the rest of the worker time: inside report (checkpoint, hand-off to the driver) "
                  f"{u['median_report_share']:.0%}; outside any trial {u['median_outside_trials_share']:.0%}, of which "
                  f"{u['median_first_trial_start_s']:.1f} s before the first trial starts, "
                  f"{u['median_after_last_report_s']:.1f} s after the last report until the sweep returns, and "
                  f"{u['median_between_trials_s_per_trial']:.2f} s per trial (or resumed segment) between trials"),
        ))
    return {"size": size, "per_arm": per_arm, "figures": figs}


def _tracking_part(runs: dict[str, list[dict]], size: dict) -> dict[str, Any]:
    # ASHA promotes on the order results arrive, so one seeded sweep trains a different number of
    # epochs from run to run: the verdict compares seconds per epoch trained (the same work), and
    # the note gives the plain wall ratio too.
    wall = {arm: median([r["wall_s"] for r in runs[arm]]) for arm in TRACKING_ARMS}
    per_epoch = {arm: median([r["wall_s"] / r["epochs"] for r in runs[arm]]) for arm in TRACKING_ARMS}
    figs = []
    for arm, label in (("track_sqlite", "embedded SQLite"), ("track_server", "mlflow server")):
        r = ratio(per_epoch[arm], per_epoch["track_off"])
        # The same ratio seed by seed shows how much of it is noise (arms of a seed run back to back).
        paired = [ratio(a["wall_s"] / a["epochs"], b["wall_s"] / b["epochs"]) for a, b in zip(runs[arm], runs["track_off"])]
        figs.append(figure(
            "tracking", f"tracking cost, {label}: wall per epoch trained (random/ASHA sweep)", per_epoch[arm], "s",
            baselines={"tracking off": per_epoch["track_off"]}, ratio_value=r, ratio_text="this / off",
            goal=f"<= {GOAL_TRACKING:.2f}x", met=r is not None and r <= GOAL_TRACKING,
            note=f"per seed {', '.join(f'{p:.2f}x' for p in paired)}; whole-sweep wall {wall[arm]:.1f} s vs "
                 f"{wall['track_off']:.1f} s off ({ratio(wall[arm], wall['track_off']):.2f}x, different epoch counts)",
        ))
    children = [(r.get("mlflow_children"), r["trials"]) for arm in ("track_sqlite", "track_server") for r in runs[arm]]
    return {"size": size, "median_wall_s": wall, "median_s_per_epoch": per_epoch,
            "children_vs_trials": children, "runs": _strip(runs, TRACKING_ARMS), "figures": figs}


def _strip(runs: dict[str, list[dict]], arms) -> dict[str, list[dict]]:
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
