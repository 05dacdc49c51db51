"""Orchestration overhead: trials that do nothing (report once) and one-second trials, through
hpsearch (tracking on, and off), Ray Tune used directly (defaults; tuned; tuned with
``MLflowLoggerCallback`` into SQLite, what a user writes instead of hpsearch) and Optuna used
directly (in memory, and in SQLite), each at two sweep sizes N1 < N2.

A sweep's wall is a fixed start-up plus a cost per trial on top of the trials' own time:

    wall = start-up + ideal + N x per-trial cost,   ideal = N x trial seconds / 2 workers

so, from the two sizes of one repeat, per-trial cost = the slope ((wall - ideal) at N2 minus at N1,
over N2 - N1) and start-up = the intercept ((wall - ideal) at N1 minus N1 x the slope); medians
over repeats. The per-trial cost of no-op trials has the goal (issue #25): hpsearch with tracking
<= 1.2x Ray Tune tuned + MLflowLoggerCallback, the per-repeat slopes paired (``paired_ratio``: a
90% interval, so met / missed / undecided). Start-up is reported beside it, not folded into it
(with 30 trials, start-up/N alone would read as hundreds of milliseconds a trial). The all-in
(wall - ideal) / N at N2 is kept in the JSON and the note.

Wall is the whole call a user makes (``hpsearch.sweep``, ``Tuner.fit``, ``study.optimize``), on a
Ray instance already started and a tracking/storage database already created (both are once per
machine, not per sweep). Sizes and arms are interleaved within each repeat so drift hits all
alike. Every arm samples one float at random: the sampler is not what is measured.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from bench.common import WORKERS, env, figure, median, paired_ratio, quiet, ratio, span, verdict

ARMS = {
    "hpsearch": "hpsearch (tracking on, SQLite)",
    "hpsearch_off": "hpsearch, tracking off",
    "ray_default": "Ray Tune, defaults",
    "ray_tuned": "Ray Tune, tuned",
    "ray_mlflow": "Ray Tune tuned + MLflowLoggerCallback (SQLite)",
    "optuna_memory": "Optuna, in memory",
    "optuna_sqlite": "Optuna, SQLite",
}
WARM_UP_REP = 99  # the warm-up sweeps' seed and name tag: distinct from the repeats'
GOAL_VS_RAY_MLFLOW = 1.2  # issue #25: per no-op trial, hpsearch with tracking / Ray Tune + MLflowLoggerCallback


def _hpsearch(n: int, seconds: float, rep: int, work: Path, tracking: bool = True) -> dict[str, Any]:
    import hpsearch
    from bench import workloads

    train = workloads.sleep_hpsearch if seconds else workloads.noop_hpsearch
    with quiet(work / "hpsearch-output.log"):  # the end-of-sweep report's progress bars and log lines
        start = time.perf_counter()
        result = hpsearch.sweep(
            hpsearch.Space(hpsearch.Float("x", 0.0, 1.0)), train=train, metric="score", mode="max",
            strategy="random", scheduler="fifo", trials=n, max_epochs=1, seed=rep, storage=str(work / "ray"),
            tracking_uri=_mlflow_uri(work) if tracking else False, experiment="bench-overhead", progress=False,
        )
        wall = time.perf_counter() - start
    done = result.counts().get("completed", 0)
    return {"wall_s": wall, "fit_s": result.wall_s, "completed": done,
            "mlflow_children": len((result.tracking or {}).get("children", {}))}


def _mlflow_uri(work: Path) -> str:
    return "sqlite:///" + str(work / "mlflow" / "mlflow.db")


def _ray_mlflow_uri(work: Path) -> str:
    return "sqlite:///" + str(work / "mlflow-ray" / "mlflow.db")


def _ray(n: int, seconds: float, rep: int, work: Path, tuned: bool, mlflow: bool = False) -> dict[str, Any]:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from bench import workloads

    fn = workloads.sleep_ray if seconds else workloads.noop_ray
    if tuned:
        # What someone who knows Ray Tune sets: keep trial actors between trials, no console
        # tables, no per-result CSV/JSON/TensorBoard files (hpsearch keeps Ray's JSON: resume reads it).
        tune_config = tune.TuneConfig(num_samples=n, reuse_actors=True)
        # With tracking: Ray's own MLflow integration, one MLflow run per trial (params, metrics).
        callbacks = [MLflowLoggerCallback(tracking_uri=_ray_mlflow_uri(work), experiment_name="bench-overhead")] \
            if mlflow else None
        run_config = tune.RunConfig(storage_path=str(work / "ray"), verbose=0, callbacks=callbacks,
                                    name=f"ray-tuned{'-mlflow' if mlflow else ''}-{rep}-{n}-{seconds}")
        switches = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    else:
        tune_config = tune.TuneConfig(num_samples=n)
        run_config = tune.RunConfig(storage_path=str(work / "ray"), name=f"ray-default-{rep}-{n}-{seconds}")
        switches = {}
    # hpsearch quiets Ray through two environment variables; a direct user has neither.
    with env(RAY_AIR_NEW_OUTPUT=None, TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=None, **switches), \
            quiet(work / "ray-output.log"):
        start = time.perf_counter()
        grid = tune.Tuner(fn, param_space={"x": tune.uniform(0.0, 1.0)}, tune_config=tune_config,
                          run_config=run_config).fit()
        wall = time.perf_counter() - start
    return {"wall_s": wall, "completed": sum(1 for r in grid if r.error is None)}


def _optuna(n: int, seconds: float, rep: int, work: Path, sqlite: bool) -> dict[str, Any]:
    import optuna

    from bench import workloads

    storage = "sqlite:///" + str(work / "optuna.db") if sqlite else None
    objective = functools.partial(workloads.optuna_objective, seconds=seconds)
    with quiet(work / "optuna-output.log"):  # its default INFO line per trial, kept but not on screen
        start = time.perf_counter()
        # n_jobs=2 threads: Optuna's own way to run two trials at once in one process; the trials
        # here sleep or return at once, so the GIL costs nothing.
        study = optuna.create_study(direction="maximize", storage=storage, study_name=f"s{rep}-{n}-{seconds}",
                                    sampler=optuna.samplers.RandomSampler(seed=rep))
        study.optimize(objective, n_trials=n, n_jobs=WORKERS)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "completed": len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))}


def _prepare_stores(work: Path) -> None:
    """Create the MLflow and Optuna SQLite schemas once, outside the timings."""
    import optuna

    from mlflow import MlflowClient

    (work / "mlflow").mkdir(parents=True, exist_ok=True)
    (work / "mlflow-ray").mkdir(parents=True, exist_ok=True)
    with quiet(work / "setup-output.log"):
        MlflowClient(tracking_uri=_mlflow_uri(work)).search_experiments(max_results=1)
        MlflowClient(tracking_uri=_ray_mlflow_uri(work)).search_experiments(max_results=1)
        optuna.create_study(storage="sqlite:///" + str(work / "optuna.db"), study_name="schema")


def run(noop_trials: tuple[int, int], sleep_trials: tuple[int, int], noop_repeats: int, sleep_repeats: int,
        work: Path, log, ray_default_trials: tuple[int, int] | None = None,
        ray_default_repeats: int | None = None) -> dict[str, Any]:
    """``noop_trials``/``sleep_trials``: the two sweep sizes N1 < N2. Ray Tune's defaults start a
    fresh actor process per trial (about a second each here), so they run at their own, smaller
    ``ray_default_trials`` and at most ``ray_default_repeats`` times."""
    work = work / "overhead"
    _prepare_stores(work)
    runners = {
        "hpsearch": _hpsearch,
        "hpsearch_off": functools.partial(_hpsearch, tracking=False),
        "ray_default": functools.partial(_ray, tuned=False),
        "ray_tuned": functools.partial(_ray, tuned=True),
        "ray_mlflow": functools.partial(_ray, tuned=True, mlflow=True),
        "optuna_memory": functools.partial(_optuna, sqlite=False),
        "optuna_sqlite": functools.partial(_optuna, sqlite=True),
    }
    # The first sweep in a process also imports and warms up (hpsearch's and Ray Tune's modules,
    # the tracking client): once per process, not per sweep. One untimed no-op sweep of 2 trials
    # per arm first, so that both sizes of the fit pay the same fixed cost; its wall is kept.
    first_call_s = {arm: fn(2, 0.0, WARM_UP_REP, work)["wall_s"] for arm, fn in runners.items()}
    log("overhead warm-up (first sweep in this process, 2 no-op trials): " +
        ", ".join(f"{arm} {sec:.1f} s" for arm, sec in first_call_s.items()))
    raw: dict[str, Any] = {"first_call_s": first_call_s}
    for kind, sizes, seconds, repeats in (("noop", noop_trials, 0.0, noop_repeats),
                                          ("sleep1s", sleep_trials, 1.0, sleep_repeats)):
        arm_sizes = {arm: tuple(ray_default_trials or sizes) if arm == "ray_default" else tuple(sizes) for arm in runners}
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in runners}
        fits: dict[str, list[dict[str, float]]] = {arm: [] for arm in runners}
        for rep in range(repeats):
            walls: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in runners}
            for i in range(2):  # N1 for every arm, then N2
                for arm, fn in runners.items():
                    if arm == "ray_default" and ray_default_repeats is not None and rep >= ray_default_repeats:
                        continue
                    n = arm_sizes[arm][i]
                    out = fn(n, seconds, rep, work)
                    out.update(trials=n, repeat=rep, excess_s=out["wall_s"] - n * seconds / WORKERS)
                    if out["completed"] != n:
                        out["error"] = f"{out['completed']} of {n} trials completed"
                    runs[arm].append(out)
                    walls[arm][i] = out
                    log(f"overhead {kind} N={n} repeat {rep + 1}/{repeats} {arm:14s} wall {out['wall_s']:6.1f} s  "
                        f"{out['excess_s'] / n * 1000:7.1f} ms/trial all in")
            for arm, pair in walls.items():
                if len(pair) == 2:
                    fits[arm].append(_fit(pair[0], pair[1]))
        raw[kind] = {"trials": list(sizes), "trial_seconds": seconds, "repeats": repeats, "arm_trials": arm_sizes,
                     "runs": runs, "fits": fits,
                     **{f"median_{k}": {arm: median([f[k] for f in v]) for arm, v in fits.items()}
                        for k in ("per_trial_ms", "startup_s", "all_in_ms")}}
    return {"raw": raw, "figures": figures(raw)}


def _fit(small: dict[str, Any], large: dict[str, Any]) -> dict[str, float]:
    """Per-trial cost (the slope) and start-up (the intercept) from one repeat's two sizes."""
    slope = (large["excess_s"] - small["excess_s"]) / (large["trials"] - small["trials"])
    return {"per_trial_ms": slope * 1000, "startup_s": small["excess_s"] - slope * small["trials"],
            "all_in_ms": large["excess_s"] / large["trials"] * 1000}


def figures(raw: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    first = raw.get("first_call_s", {})
    for kind, label in (("noop", "no-op"), ("sleep1s", "1-second")):
        if kind not in raw:
            continue
        r = raw[kind]
        n1, n2 = r["trials"]
        d1, d2 = r["arm_trials"]["ray_default"]
        reps = len(r["fits"]["hpsearch"])
        sizes = f"N={n1} and N={n2}, median of {reps}" + \
                (f"; Ray defaults: N={d1} and N={d2}, {len(r['fits']['ray_default'])} repeat(s)"
                 if (d1, d2) != (n1, n2) or len(r["fits"]["ray_default"]) != reps else "")
        failed = [arm for arm, v in r["runs"].items() if any("error" in x for x in v)]
        per_trial, startup, all_in = r["median_per_trial_ms"], r["median_startup_s"], r["median_all_in_ms"]
        notes = ["all in, (wall - ideal) / N at the larger N: " +
                 ", ".join(f"{ARMS[a]} {all_in[a]:.1f} ms" for a in ARMS if all_in[a] is not None)]
        if reps > 1:
            lo, hi = span([f["per_trial_ms"] for f in r["fits"]["hpsearch"]])
            notes.insert(0, f"hpsearch per repeat from {lo:.1f} to {hi:.1f} ms")
        if failed:
            notes.append(f"incomplete runs: {', '.join(failed)}")
        # hpsearch with tracking against Ray Tune + MLflowLoggerCallback: the slopes of the same
        # repeat paired (a repeat runs every arm back to back); without two pairs, the medians.
        slopes = {a: [f["per_trial_ms"] for f in r["fits"][a]] for a in ("hpsearch", "ray_mlflow")}
        pr = paired_ratio(slopes["hpsearch"], slopes["ray_mlflow"])
        value = pr["ratio"] if pr else ratio(per_trial["hpsearch"], per_trial["ray_mlflow"])
        if pr:
            notes.append("hpsearch / Ray Tune + MLflowLoggerCallback per repeat " +
                         ", ".join(f"{x:.2f}x" for x in pr["per_seed"]) +
                         (f" ({reps - pr['pairs']} repeat(s) left out: a slope not above 0)" if pr["pairs"] < reps else ""))
        else:
            notes.append("fewer than 2 paired repeats with positive slopes: the ratio of the medians, no interval")
        judged = kind == "noop"  # the goal is on no-op trials; the 1-second ones are reported
        out.append(figure(
            "overhead", f"overhead per added trial, {label} trials (slope of wall between {sizes})",
            per_trial["hpsearch"], "ms/trial",
            baselines={ARMS[a]: per_trial[a] for a in ARMS if a != "hpsearch"},
            ratio_value=value, ratio_text="hpsearch / Ray Tune tuned + MLflowLoggerCallback" +
                                          (", paired per repeat (geometric mean)" if pr else ", medians"),
            goal=f"<= {GOAL_VS_RAY_MLFLOW:.1f}x Ray Tune tuned + MLflowLoggerCallback" if judged else "",
            verdict=("missed" if failed else verdict(value, "<=", GOAL_VS_RAY_MLFLOW, pr["interval"] if pr else None))
            if judged else None,
            interval=pr["interval"] if pr else None, seeds=pr["pairs"] if pr else reps,
            note="; ".join(notes),
        ))
        out.append(figure(
            "overhead", f"start-up per sweep, {label} trials (intercept of the same fit)", startup["hpsearch"], "s",
            baselines={ARMS[a]: startup[a] for a in ARMS if a != "hpsearch"},
            ratio_value=ratio(startup["hpsearch"], startup["ray_tuned"]), ratio_text="hpsearch / Ray Tune tuned",
            goal="", met=None,
            note="fixed cost of a sweep on a running Ray, from its second sweep in a process on: wall - ideal - "
                 "N x the per-trial cost; the first sweep in a process (imports included), 2 no-op trials, took " +
                 ", ".join(f"{ARMS[a]} {first[a]:.1f} s" for a in ARMS if a in first),
        ))
    return out
