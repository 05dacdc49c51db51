"""Part 1, orchestration overhead: N trials that do nothing (report once), and N one-second trials,
through hpsearch (tracking on), Ray Tune used directly (defaults, and tuned) and Optuna used
directly (in memory, and in SQLite).

    overhead per trial = (wall - ideal) / N,   ideal = N x trial seconds / 2 workers

Wall is the whole call a user makes (``hpsearch.sweep``, ``Tuner.fit``, ``study.optimize``), on a
Ray instance already started and a tracking/storage database already created (both are once per
machine, not per sweep). Arms are interleaved within each repeat so drift hits all alike. Every
arm samples one float at random: the sampler is not what is measured.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from bench.common import WORKERS, env, figure, median, quiet

ARMS = {
    "hpsearch": "hpsearch (tracking on, SQLite)",
    "ray_default": "Ray Tune, defaults",
    "ray_tuned": "Ray Tune, tuned",
    "optuna_memory": "Optuna, in memory",
    "optuna_sqlite": "Optuna, SQLite",
}
GOAL_MS = 50.0


def _hpsearch(n: int, seconds: float, rep: int, work: Path) -> dict[str, Any]:
    import hpsearch

    from bench import workloads

    train = workloads.sleep_hpsearch if seconds else workloads.noop_hpsearch
    with quiet(work / "hpsearch-output.log"):  # the end-of-sweep report's progress bars and log lines
        start = time.perf_counter()
        result = hpsearch.sweep(
            hpsearch.Space(hpsearch.Float("x", 0.0, 1.0)), train=train, metric="score", mode="max",
            strategy="random", scheduler="fifo", trials=n, max_epochs=1, seed=rep, storage=str(work / "ray"),
            tracking_uri=_mlflow_uri(work), experiment="bench-overhead", progress=False,
        )
        wall = time.perf_counter() - start
    done = result.counts().get("completed", 0)
    return {"wall_s": wall, "fit_s": result.wall_s, "completed": done,
            "mlflow_children": len((result.tracking or {}).get("children", {}))}


def _mlflow_uri(work: Path) -> str:
    return "sqlite:///" + str(work / "mlflow" / "mlflow.db")


def _ray(n: int, seconds: float, rep: int, work: Path, tuned: bool) -> dict[str, Any]:
    from ray import tune

    from bench import workloads

    fn = workloads.sleep_ray if seconds else workloads.noop_ray
    if tuned:
        # What someone who knows Ray Tune sets: keep trial actors between trials, no console
        # tables, no per-result CSV/JSON/TensorBoard files (hpsearch keeps Ray's JSON: resume reads it).
        tune_config = tune.TuneConfig(num_samples=n, reuse_actors=True)
        run_config = tune.RunConfig(storage_path=str(work / "ray"), name=f"ray-tuned-{rep}-{n}-{seconds}", verbose=0)
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
    with quiet(work / "setup-output.log"):
        MlflowClient(tracking_uri=_mlflow_uri(work)).search_experiments(max_results=1)
        optuna.create_study(storage="sqlite:///" + str(work / "optuna.db"), study_name="schema")


def run(noop_trials: int, sleep_trials: int, noop_repeats: int, sleep_repeats: int, work: Path, log,
        ray_default_repeats: int | None = None) -> dict[str, Any]:
    """``ray_default_repeats`` caps the repeats of Ray Tune's defaults, which start a fresh actor
    process per trial (about a second each here): one run of N trials already averages N of them."""
    work = work / "overhead"
    _prepare_stores(work)
    runners = {
        "hpsearch": _hpsearch,
        "ray_default": functools.partial(_ray, tuned=False),
        "ray_tuned": functools.partial(_ray, tuned=True),
        "optuna_memory": functools.partial(_optuna, sqlite=False),
        "optuna_sqlite": functools.partial(_optuna, sqlite=True),
    }
    raw: dict[str, Any] = {}
    for kind, n, seconds, repeats in (("noop", noop_trials, 0.0, noop_repeats),
                                      ("sleep1s", sleep_trials, 1.0, sleep_repeats)):
        ideal = n * seconds / WORKERS
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in runners}
        for rep in range(repeats):
            for arm, fn in runners.items():
                if arm == "ray_default" and ray_default_repeats is not None and rep >= ray_default_repeats:
                    continue
                out = fn(n, seconds, rep, work)
                out["overhead_ms"] = (out["wall_s"] - ideal) / n * 1000
                if out["completed"] != n:
                    out["error"] = f"{out['completed']} of {n} trials completed"
                runs[arm].append(out)
                log(f"overhead {kind} N={n} repeat {rep + 1}/{repeats} {arm:14s} wall {out['wall_s']:6.1f} s  "
                    f"{out['overhead_ms']:7.1f} ms/trial")
        raw[kind] = {"trials": n, "trial_seconds": seconds, "ideal_s": ideal, "repeats": repeats, "runs": runs,
                     "median_overhead_ms": {arm: median([r["overhead_ms"] for r in v]) for arm, v in runs.items()}}
    return {"raw": raw, "figures": figures(raw)}


def figures(raw: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for kind, label in (("noop", "no-op"), ("sleep1s", "1-second")):
        if kind not in raw:
            continue
        r = raw[kind]
        med = r["median_overhead_ms"]
        value = med["hpsearch"]
        failed = [arm for arm, v in r["runs"].items() if any("error" in x for x in v)]
        out.append(figure(
            "overhead", f"overhead per trial, {label} trials (N={r['trials']}, median of "
                        f"{r['repeats']}{'; Ray defaults: 1' if len(r['runs']['ray_default']) < r['repeats'] else ''})",
            value, "ms/trial",
            baselines={ARMS[a]: med[a] for a in ARMS if a != "hpsearch"},
            ratio_value=value / med["ray_tuned"] if med["ray_tuned"] else None, ratio_text="hpsearch / Ray Tune tuned",
            goal=f"<= {GOAL_MS:.0f} ms/trial with tracking on", met=value <= GOAL_MS and not failed,
            note=f"incomplete runs: {', '.join(failed)}" if failed else "",
        ))
    return out
