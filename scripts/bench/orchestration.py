"""The orchestration part (issue #25, item 1a): hpsearch against what a user would write by hand,
on real sweeps of the MNIST-1D MLP space (spaces/mlp.py), 4000/4000 split, 2 workers, no time cap.

Per seed, eight sweeps in a rotated order (drift on a busy machine spreads over every arm):

* FIFO, the same ``trials`` configurations (those hpsearch's random strategy draws for the seed),
  each trained ``max_epochs`` epochs, so every arm does the very same training work:
  hpsearch random/FIFO with tracking off, into the embedded SQLite store, into a real
  ``mlflow server``; Ray Tune used directly (``tune.Tuner``, FIFO, actor reuse, no per-result
  files), with no tracking and with ``ray.air.integrations.mlflow.MLflowLoggerCallback`` into an
  SQLite store (what a user writes instead of hpsearch).
* TPE+ASHA, ``tpe_trials`` trials of at most ``tpe_max_epochs`` epochs, grace period 1,
  reduction factor 3, the seed's TPE seed: hpsearch tpe/asha (tracking off, like its twins);
  its twin Ray Tune + ``OptunaSearch`` (``ConcurrencyLimiter`` of 2) + ``ASHAScheduler``; Optuna
  used directly: two spawned processes sharing a study in SQLite, ``TPESampler(constant_liar=True)``
  and a ``SuccessiveHalvingPruner`` (min_resource 1, reduction factor 3: ASHA's rungs), timed
  from before the processes start. TPE proposes by what has finished, so these three do not train
  the same epochs: their walls are reported, with the epochs trained beside them, not judged.

Figures: the paired (per seed) wall ratios with a 90% interval (``paired_ratio``) with two goals
(issue #25 item 3): hpsearch SQLite / Ray Tune + MLflowLoggerCallback <= 1.00, hpsearch tracking
off / Ray Tune no tracking <= 1.05; worker utilization (seconds in the trainable's own code over
wall x 2); CPU seconds per trial of the driver (``getrusage``, this process and its threads) and
of the workers (``/proc/<pid>/stat`` of this process's descendants, sampled every 0.5 s: Ray's
worker processes or Optuna's pool; Ray's own daemons and the mlflow server apart, any other
process the driver starts counted with the driver); the phases:
start-up (the call to the first epoch's start), hand-over between trials, and the end (the last
report to the call returning), the end of hpsearch with the goal <= 0.5 s. ``sweep()`` returns
before its best model and report are done (they finish on a thread): that work is outside the
wall and the end phase, inside the CPU counts, and waited for (``after_return_s``) before the next
arm starts.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from bench.common import (
    ROOT,
    WORKERS,
    bootstrap_interval,
    env,
    figure,
    median,
    paired_ratio,
    quiet,
    span,
    start_mlflow_server,
    stop_mlflow_server,
    verdict,
)

SPACE = str(ROOT / "spaces" / "mlp.py")
GRACE, REDUCTION = 1, 3
FIFO_ARMS = {
    "hp_off": "hpsearch random/FIFO, tracking off",
    "hp_sqlite": "hpsearch random/FIFO, embedded SQLite",
    "hp_server": "hpsearch random/FIFO, mlflow server",
    "ray": "Ray Tune FIFO, direct, no tracking",
    "ray_mlflow": "Ray Tune FIFO + MLflowLoggerCallback (SQLite)",
}
TPE_ARMS = {
    "hp_tpe_asha": "hpsearch TPE+ASHA, tracking off",
    "ray_tpe_asha": "Ray Tune + OptunaSearch + ASHA, direct",
    "optuna": "Optuna TPE + SuccessiveHalvingPruner, direct",
}
ARMS = {**FIFO_ARMS, **TPE_ARMS}
GOAL_VS_RAY_MLFLOW = 1.00  # hpsearch SQLite / Ray Tune + MLflowLoggerCallback, paired
GOAL_VS_RAY = 1.05  # hpsearch tracking off / Ray Tune no tracking, paired
GOAL_END_S = 0.5  # critical path after the last report


class Recorder(Callback):
    """Driver-side: when each epoch's result arrives, and what it says."""

    def __init__(self) -> None:
        self.results: list[tuple[float, float | None, str]] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append((time.time(), result.get("val_acc"), trial.trial_id))


# -- CPU accounting --------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, process group, CPU seconds user + system) of every process readable."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        rest = text[text.rfind(")") + 2:].split()
        out[int(name)] = (int(rest[1]), int(rest[2]), (int(rest[11]) + int(rest[12])) / _TICK)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuMeter:
    """CPU seconds of this process (``getrusage``: every thread) and of its descendants during a
    block, the latter from ``/proc`` sampled every ``every_s`` (a process that ends between two
    samples loses at most that much). Descendants are grouped: ``workers`` (Ray's worker
    processes; with ``pool``, the arm's spawned process pool), ``server`` (the mlflow server's
    process group), ``ray`` (Ray's own daemons: raylet, GCS, agents), ``helpers`` (any other
    process the driver starts, e.g. a tracking writer of its own: driver-side work)."""

    def __init__(self, server_pgid: int | None = None, pool: bool = False, every_s: float = 0.5) -> None:
        self.server_pgid, self.pool, self.every_s = server_pgid, pool, every_s
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.group: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _scan(self, first: bool = False) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        stack, me = list(children.get(os.getpid(), [])), os.getpid()
        while stack:
            pid = stack.pop()
            stack.extend(children.get(pid, []))
            if pid == me:
                continue
            _, pgid, cpu = table[pid]
            if pid not in self.group:
                self.group[pid] = self._group(pgid, _cmdline(pid).strip())
                self.base[pid] = cpu if first else 0.0  # born during the block: all its CPU counts
            self.last[pid] = cpu

    def _group(self, pgid: int, cmd: str) -> str:
        if self.server_pgid is not None and pgid == self.server_pgid:
            return "server"
        # A Ray worker renames itself (setproctitle) from default_worker.py to ray::IDLE or
        # ray::<Trainable>.<method>; Ray's agents to ray::<Name>Agent.
        if "default_worker.py" in cmd or (cmd.startswith("ray::") and not cmd.endswith("Agent")):
            return "workers"
        if self.pool and "spawn_main" in cmd:
            return "workers"
        return "ray" if "/ray/" in cmd or cmd.startswith("ray::") else "helpers"

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._scan()

    def __enter__(self) -> "CpuMeter":
        self._scan(first=True)
        self._self0 = resource.getrusage(resource.RUSAGE_SELF)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.driver_s = (r.ru_utime - self._self0.ru_utime) + (r.ru_stime - self._self0.ru_stime)
        self._stop.set()
        self._thread.join()
        self._scan()

    def summary(self) -> dict[str, float]:
        out = {"driver": self.driver_s, "helpers": 0.0, "workers": 0.0, "ray": 0.0, "server": 0.0}
        for pid, grp in self.group.items():
            out[grp] += max(self.last[pid] - self.base[pid], 0.0)
        return out


# -- the arms --------------------------------------------------------------------------------------

class Runner:
    """The arms, on the suite's one Ray instance (started once, not timed)."""

    def __init__(self, work: Path) -> None:
        from hpsearch.space.modules import load_space_module
        from hpsearch.trial.data import load_dataset

        self.work = work
        self.data = load_dataset("mnist1d")
        self.module = load_space_module(SPACE)
        self.timings = Path(os.environ.get("BENCH_TIMING_DIR") or work / "timings")
        self.sqlite = "sqlite:///" + str(work / "mlflow-hpsearch" / "mlflow.db")
        self.ray_sqlite = "sqlite:///" + str(work / "mlflow-ray" / "mlflow.db")
        self.server = self.server_uri = None

    def open(self) -> None:
        """The stores' schemas and the mlflow server, outside the timings (once per machine)."""
        import optuna

        from mlflow import MlflowClient

        for uri in (self.sqlite, self.ray_sqlite):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            with quiet(self.work / "setup-output.log"):
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        with quiet(self.work / "setup-output.log"):
            optuna.create_study(storage=self._optuna_storage(), study_name="schema")
        self.server, self.server_uri = start_mlflow_server(self.work / "mlflow-server")
        self._settle_server()

    def _settle_server(self, limit_s: float = 90.0) -> None:
        """Wait until the fresh mlflow server stops working on its own start (its processes
        used ~10 s of CPU after answering /health, on the 2 cores the first sweeps use)."""
        def cpu() -> float:
            return sum(c for _, pgid, c in _proc_table().values() if pgid == self.server.pid)

        end, last = time.time() + limit_s, cpu()
        while time.time() < end:
            time.sleep(2.0)
            now = cpu()
            if now - last < 0.1:
                return
            last = now

    def close(self) -> None:
        if self.server is not None:
            stop_mlflow_server(self.server)

    def _optuna_storage(self) -> str:
        return "sqlite:///" + str(self.work / "optuna.db")

    def arm(self, arm: str, seed: int, trials: int, max_epochs: int) -> dict[str, Any]:
        if arm in ("hp_off", "hp_sqlite", "hp_server"):
            return self.hpsearch("random", "fifo", seed, trials, max_epochs, tracking=arm[3:])
        if arm == "hp_tpe_asha":
            return self.hpsearch("tpe", "asha", seed, trials, max_epochs, tracking="off")
        if arm in ("ray", "ray_mlflow"):
            return self.ray_fifo(seed, trials, max_epochs, mlflow=arm == "ray_mlflow")
        if arm == "ray_tpe_asha":
            return self.ray_tpe_asha(seed, trials, max_epochs)
        if arm == "optuna":
            return self.optuna(seed, trials, max_epochs)
        raise ValueError(arm)

    def _measure(self, call: Callable[[], tuple[set[str], list, dict]], pool: bool = False) -> dict[str, Any]:
        before = {t.ident for t in threading.enumerate()}
        with CpuMeter(self.server.pid if self.server is not None else None, pool=pool) as cpu:
            t0 = time.time()
            tags, results, extra = call()
            wall = time.time() - t0
            # Work a call left running after it returned (hpsearch finishing its best model, report
            # and last MLflow writes on a thread; ``post`` waits for them): outside the wall, inside
            # the CPU count, and waited for here so that it does not run into the next arm.
            t1 = time.time()
            post = extra.pop("post", None)
            if post is not None:
                extra.update(post())
            for t in threading.enumerate():
                if t.ident not in before and not t.daemon and t is not threading.current_thread():
                    t.join(timeout=60)
            after_return = time.time() - t1
        out = summary(t0, wall, results, tags, str(self.timings))
        out.update(extra, cpu_s=cpu.summary(), after_return_s=after_return)
        return out

    def hpsearch(self, strategy: str, scheduler: str, seed: int, trials: int, max_epochs: int,
                 tracking: str) -> dict[str, Any]:
        import hpsearch

        uri: Any = {"off": False, "sqlite": self.sqlite, "server": self.server_uri}[tracking]
        rec = Recorder()

        def call():
            with quiet(self.work / "hpsearch-output.log"):
                result = hpsearch.sweep(
                    SPACE, data=self.data, strategy=strategy, scheduler=scheduler, trials=trials,
                    max_epochs=max_epochs, grace_period=GRACE, reduction_factor=REDUCTION, seed=seed,
                    storage=str(self.work / "ray"), tracking_uri=uri, experiment="bench-orchestration",
                    progress=False, callbacks=[rec])
            def post():  # after the clock: the sweep's end (best model, report) finishing
                if hasattr(result, "wait"):
                    result.wait()
                return {"mlflow_pending": (result.tracking or {}).get("pending")}

            extra = {"counts": result.counts(), "fit_s": result.wall_s, "post": post}
            return {t.trial_id for t in result.trials}, rec.results, extra

        return self._measure(call)

    def _tuner(self, seed: int, trials: int, max_epochs: int, name: str, search_alg, scheduler,
               param_space: dict, callbacks: list):
        from ray import tune

        from bench import workloads

        # Ray Tune as its documentation teaches it, with the settings an expert adds: actor reuse,
        # no console tables, no per-result files. 1 CPU a trial on 2 CPUs: 2 at once, as hpsearch.
        return tune.Tuner(
            tune.with_parameters(workloads.ray_direct_train, data=self.data, max_epochs=max_epochs),
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="val_acc", mode="max", num_samples=trials, reuse_actors=True,
                                        search_alg=search_alg, scheduler=scheduler),
            run_config=tune.RunConfig(storage_path=str(self.work / "ray"), name=f"{name}-{seed}-{time.time_ns()}",
                                      verbose=0, callbacks=callbacks),
        )

    def _ray(self, make_tuner) -> dict[str, Any]:
        rec = Recorder()

        def call():
            with env(RAY_AIR_NEW_OUTPUT=None, TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"), \
                    quiet(self.work / "ray-output.log"):
                grid = make_tuner(rec).fit()
            return ({r.metrics.get("trial_id") for r in grid}, rec.results,
                    {"errors": sum(1 for r in grid if r.error is not None)})

        return self._measure(call)

    def ray_fifo(self, seed: int, trials: int, max_epochs: int, mlflow: bool) -> dict[str, Any]:
        """On the configurations hpsearch's random strategy runs for ``seed`` (points to evaluate)."""
        from ray.air.integrations.mlflow import MLflowLoggerCallback
        from ray.tune.schedulers import FIFOScheduler
        from ray.tune.search import BasicVariantGenerator

        points = self.module.space.sample(trials, seed=seed)

        def make(rec):
            callbacks = [rec]
            if mlflow:
                callbacks.append(MLflowLoggerCallback(tracking_uri=self.ray_sqlite, experiment_name="bench-orchestration"))
            return self._tuner(seed, trials, max_epochs, "ray-mlflow" if mlflow else "ray-fifo",
                               BasicVariantGenerator(points_to_evaluate=points), FIFOScheduler(),
                               {name: None for name in self.module.space.names}, callbacks)

        return self._ray(make)

    def ray_tpe_asha(self, seed: int, trials: int, max_epochs: int) -> dict[str, Any]:
        import optuna
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        from hpsearch.search.strategies import define_by_run

        def make(rec):
            search = ConcurrencyLimiter(OptunaSearch(space=define_by_run(self.module.space), metric="val_acc", mode="max",
                                                     sampler=optuna.samplers.TPESampler(seed=seed)),
                                        max_concurrent=WORKERS)
            sched = ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=GRACE, reduction_factor=REDUCTION)
            return self._tuner(seed, trials, max_epochs, "ray-tpe-asha", search, sched, {}, [rec])

        return self._ray(make)

    def optuna(self, seed: int, trials: int, max_epochs: int) -> dict[str, Any]:
        import optuna

        from bench import workloads

        storage = self._optuna_storage()
        name = f"tpe-sha-{seed}-{time.time_ns()}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)

        def call():
            # Timed from before the two processes start (they import torch): what a user's
            # script pays. Spawned: a fork of this process would carry Ray's threads.
            with cf.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=workloads.instrument_worker) as pool:
                optuna.create_study(study_name=name, storage=storage, direction="maximize")
                futures = [pool.submit(workloads.optuna_worker, storage, name, SPACE, max_epochs, trials,
                                       seed * 100 + k, str(self.timings), GRACE, REDUCTION) for k in range(WORKERS)]
                reports = sorted((r for f in futures for r in f.result()), key=lambda r: r["t"])
            study = optuna.load_study(study_name=name, storage=storage)
            states = [t.state.name.lower() for t in study.trials]
            return ({f"{name}:{t.number}" for t in study.trials},
                    [(r["t"], r["val_acc"], f"{name}:{r['trial']}") for r in reports],
                    {"counts": {s: states.count(s) for s in set(states)}})

        return self._measure(call, pool=True)


def summary(t0: float, wall: float, results: list[tuple[float, float | None, str]], tags: set[str],
            timing_dir: str) -> dict[str, Any]:
    """Wall, epochs and trials, and where the 2 workers' time went: training (the trainable's own
    code), inside report, and the phases outside any trial: before the first trial's training
    starts, between trials (hand-over), after the last report until the call returned."""
    from bench import workloads

    timings = workloads.read_timings(timing_dir, tags)
    epochs = [r for r in timings if "epoch" in r]
    train_s = sum(r["train_s"] for r in epochs)
    report_s = sum(r["report_s"] for r in epochs)
    open_at: dict[str, float] = {}
    last_at: dict[str, float] = {}
    in_trials, segments = 0.0, 0
    for r in timings:  # oldest first; a trial runs from its start (load_checkpoint) to its last report
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
    between = max(capacity - in_trials - WORKERS * (first + last), 0.0)
    accs = [a for _, a, _ in results if a is not None]
    return {
        "wall_s": wall, "epochs": len(epochs), "reported_epochs": len(accs), "trials": len({t for _, _, t in results}),
        "best_val_acc": max(accs, default=None), "train_s": train_s, "report_s": report_s,
        "utilization": train_s / capacity, "report_share": report_s / capacity,
        "start_up_s": first, "end_s": last, "handover_s_per_trial": between / max(segments, 1),
    }


# -- the part --------------------------------------------------------------------------------------

def run(seeds: int, trials: int, max_epochs: int, tpe_trials: int, tpe_max_epochs: int, work: Path,
        log: Callable[[str], None]) -> dict[str, Any]:
    work = work / "orchestration"
    runner = Runner(work)
    runner.open()
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
    order = list(ARMS)
    try:
        for seed in range(seeds):
            for arm in order[seed % len(order):] + order[: seed % len(order)]:
                n, e = (trials, max_epochs) if arm in FIFO_ARMS else (tpe_trials, tpe_max_epochs)
                out = runner.arm(arm, seed, n, e)
                out["seed"] = seed
                runs[arm].append(out)
                c = out["cpu_s"]
                log(f"orchestration seed {seed + 1}/{seeds} {arm:12s} wall {out['wall_s']:6.1f} s  "
                    f"{out['epochs']:4d} epochs {out['trials']:3d} trials  util {out['utilization']:.0%}  start "
                    f"{out['start_up_s']:.1f} s  hand-over {out['handover_s_per_trial']:.2f} s  end {out['end_s']:.2f} s  "
                    f"cpu driver {c['driver']:.1f} (+{c['helpers']:.1f}) workers {c['workers']:.1f} ray {c['ray']:.1f} "
                    f"server {c['server']:.1f} s")
    finally:
        runner.close()
    size = {"seeds": seeds, "trials": trials, "max_epochs": max_epochs, "tpe_trials": tpe_trials,
            "tpe_max_epochs": tpe_max_epochs, "grace_period": GRACE, "reduction_factor": REDUCTION, "workers": WORKERS}
    return {"size": size, "per_arm": per_arm(runs, size), "runs": runs, "figures": figures(runs, size)}


def _cpu(runs: dict[str, list[dict]], arm: str, key: str, size: dict) -> float | None:
    n = size["trials"] if arm in FIFO_ARMS else size["tpe_trials"]
    if key == "driver_all":  # the driver with any process of its own it starts (not Ray's, not the server)
        return median([(r["cpu_s"]["driver"] + r["cpu_s"].get("helpers", 0.0)) / n for r in runs[arm]])
    return median([r["cpu_s"].get(key, 0.0) / n for r in runs[arm]])


def per_arm(runs: dict[str, list[dict]], size: dict) -> dict[str, Any]:
    out = {}
    for arm, rs in runs.items():
        out[arm] = {k: median([r[k] for r in rs]) for k in
                    ("wall_s", "epochs", "best_val_acc", "utilization", "report_share", "start_up_s",
                     "handover_s_per_trial", "end_s", "after_return_s")}
        out[arm]["range_wall_s"] = span([r["wall_s"] for r in rs])
        out[arm]["cpu_s_per_trial"] = {k: _cpu(runs, arm, k, size) for k in ("driver_all", "driver", "helpers", "workers", "ray", "server")}
    return out


def _paired(runs, arm: str, base: str, goal: float | None, name: str, size: dict, note: str = "") -> dict[str, Any]:
    a, b = [r["wall_s"] for r in runs[arm]], [r["wall_s"] for r in runs[base]]
    pr = paired_ratio(a, b)
    value = pr["ratio"] if pr else None
    interval = pr["interval"] if pr else None
    notes = [f"median wall {median(a):.1f} s vs {median(b):.1f} s"]
    if pr:
        notes.append("per seed " + ", ".join(f"{x:.3f}x" for x in pr["per_seed"]))
    if note:
        notes.append(note)
    return figure(
        "orchestration", name, median(a), "s", baselines={ARMS[base]: median(b)}, ratio_value=value,
        ratio_text=f"{ARMS[arm]} / {ARMS[base]}, paired per seed (geometric mean)",
        goal=f"<= {goal:.2f}x" if goal is not None else "",
        verdict=verdict(value, "<=", goal, interval) if goal is not None else None,
        interval=interval, seeds=pr["pairs"] if pr else len(a), note="; ".join(notes))


def figures(runs: dict[str, list[dict]], size: dict) -> list[dict[str, Any]]:
    fifo = f"{size['trials']} configurations x {size['max_epochs']} epochs, FIFO"
    tpe = f"{size['tpe_trials']} trials of at most {size['tpe_max_epochs']} epochs"
    p = per_arm(runs, size)
    epochs_note = "; ".join(f"{ARMS[a]}: {p[a]['epochs']:.0f} epochs, best val_acc {p[a]['best_val_acc'] or 0:.4f}"
                            for a in TPE_ARMS)
    figs = [
        _paired(runs, "hp_sqlite", "ray_mlflow", GOAL_VS_RAY_MLFLOW,
                f"sweep wall, hpsearch (SQLite tracking) against Ray Tune + MLflowLoggerCallback ({fifo})", size),
        _paired(runs, "hp_off", "ray", GOAL_VS_RAY,
                f"sweep wall, hpsearch (tracking off) against Ray Tune direct ({fifo})", size),
        _paired(runs, "hp_server", "ray_mlflow", None,
                f"sweep wall, hpsearch (mlflow server) against Ray Tune + MLflowLoggerCallback ({fifo})", size,
                note="MLflowLoggerCallback writes to SQLite: a user's server would cost it an HTTP round trip per call too"),
        _paired(runs, "hp_tpe_asha", "ray_tpe_asha", None,
                f"sweep wall, hpsearch TPE+ASHA against Ray Tune + OptunaSearch + ASHA ({tpe})", size,
                note=f"{ARMS['optuna']} median wall {p['optuna']['wall_s']:.1f} s (timed from process start); TPE "
                     f"proposes by what has finished, so the arms do not train the same epochs: {epochs_note}"),
    ]
    # Utilization, CPU and phases: hpsearch's default (SQLite) as the value, every other arm beside it.
    others = [a for a in ARMS if a != "hp_sqlite"]
    util = {a: 100 * p[a]["utilization"] for a in ARMS}
    figs.append(figure(
        "orchestration", f"worker utilization, {ARMS['hp_sqlite']} (medians over seeds)", util["hp_sqlite"], "%",
        baselines={ARMS[a]: util[a] for a in others},
        note="seconds in the trainable's own code over wall x 2 workers; inside report: " +
             ", ".join(f"{ARMS[a]} {100 * p[a]['report_share']:.1f}%" for a in ARMS)))
    for key, what in (("driver_all", "the driver (this process, every thread, and any helper process it starts)"),
                      ("workers", "the worker processes (Ray's workers, Optuna's pool)")):
        figs.append(figure(
            "orchestration", f"CPU seconds per trial in {what}, {ARMS['hp_sqlite']} (medians over seeds)",
            p["hp_sqlite"]["cpu_s_per_trial"][key], "s",
            baselines={ARMS[a]: p[a]["cpu_s_per_trial"][key] for a in others},
            note=("per trial of the sweep (FIFO: {0}; TPE: {1}); " + (
                "Ray's own daemons (raylet, GCS, agents) per trial: " +
                ", ".join(f"{ARMS[a]} {p[a]['cpu_s_per_trial']['ray']:.2f} s" for a in ARMS) +
                f"; the mlflow server per trial: {p['hp_server']['cpu_s_per_trial']['server']:.2f} s; of the driver's, "
                f"in helper processes: " + ", ".join(f"{ARMS[a]} {p[a]['cpu_s_per_trial']['helpers']:.2f} s" for a in ARMS
                                                       if p[a]['cpu_s_per_trial']['helpers'])
                if key == "driver_all" else
                "read from /proc every 0.5 s: a process ending between samples loses at most that much"))
            .format(size["trials"], size["tpe_trials"])))
    for key, what in (("start_up_s", "start-up: the call to the first epoch's start"),
                      ("handover_s_per_trial", "hand-over between trials, per trial (worker seconds)")):
        figs.append(figure("orchestration", f"{what}, {ARMS['hp_sqlite']} (medians over seeds)", p["hp_sqlite"][key], "s",
                           baselines={ARMS[a]: p[a][key] for a in others}))
    ends = [r["end_s"] for r in runs["hp_sqlite"]]
    interval = bootstrap_interval(ends)
    value = median(ends)
    figs.append(figure(
        "orchestration", f"critical path after the last report (the last report to sweep() returning), "
                         f"{ARMS['hp_sqlite']}", value, "s",
        baselines={ARMS[a]: p[a]["end_s"] for a in others}, goal=f"<= {GOAL_END_S} s",
        verdict=verdict(value, "<=", GOAL_END_S, interval), interval=interval, seeds=len(ends),
        note="median over seeds, 90% bootstrap interval; per seed " + ", ".join(f"{x:.2f} s" for x in ends) +
             "; work still running when the call returned (waited for before the next arm, not in the wall): "
             + ", ".join(f"{ARMS[a]} {p[a]['after_return_s']:.2f} s" for a in ("hp_off", "hp_sqlite", "hp_server"))))
    return figs
