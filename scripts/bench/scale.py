"""Part 5, scale: one hpsearch sweep of many short (no-op) trials, tracking on (embedded SQLite).

Figures: it completes; the driver's peak memory during the sweep (against its memory before);
seconds per 1,000 trials, for each successive thousand (the first thousand is the baseline: a
later thousand that takes longer means a cost that grows with the sweep); and the MLflow child
runs counted in the store (must equal the trial count).

Goals (issue #25), judged here: the last thousand takes <= 1.15x the first, and the driver's
peak memory is <= 1.5 GiB (1,536 MiB). One sweep gives one value of each, so the verdict rests on
that value alone: one run cannot give an interval (a repeat would take another 10 minutes), and
a value near the goal is as noisy as the machine. "It completes" and "child runs = trials" are
counts the sweep must get right, not timings: judged as they come, not by construction (a lost
trial or a missing child run fails them).

The sweep runs in a process of its own, started for it, as ``hpsearch run`` would: its driver
starts its own Ray and holds only this sweep. Run inside the bench's process (before 2026-12-04),
the driver began the sweep at ~985 MiB, what the earlier parts had imported and kept, and the
peak measured the bench as much as the sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from bench.common import Sampler, count_children, figure, median, quiet, verdict

GOAL_GROWTH = 1.15  # last thousand / first thousand
GOAL_PEAK_MIB = 1536  # the driver's peak resident memory: 1.5 GiB


class _Completions(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.times.append(time.perf_counter())


def _rss_mib(pid: str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process ended between listing and reading
        return 0.0
    return float("nan")


def _writer_rss_mib() -> float:
    """The resident memory of the MLflow writer's own process (``hpsearch.tracking.process``), a
    child of this one once the writes move there: part of what driving the sweep costs."""
    me, total = str(os.getpid()), 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == me and b"hpsearch.tracking.process" in cmd:
            total += _rss_mib(proc.name)
    return total


class _PeakRss(Sampler):
    """The driver's resident memory, with its MLflow writer process's, sampled every 0.2 s: the
    peak of this sweep alone (the process-lifetime peak from getrusage would include earlier
    parts), and the memory before it."""

    def __init__(self) -> None:
        self.writer: list[float] = []
        super().__init__(self._both, 0.2)

    def _both(self) -> float:
        writer = _writer_rss_mib()
        self.writer.append(writer)
        return _rss_mib() + writer

    @property
    def before(self) -> float:
        return self.samples[0]

    @property
    def peak(self) -> float:
        return max(self.samples)


def noop(config):
    """A trial that reports once and ends (defined here: the sweep's own process pickles it whole)."""
    import hpsearch

    hpsearch.report(epoch=1, score=float(config["x"]))


def measure(trials: int, work: Path) -> dict[str, Any]:
    """The sweep and its figures' raw values, in this process (``run`` starts one for it)."""
    import hpsearch
    from mlflow import MlflowClient

    uri = "sqlite:///" + str(work / "mlflow-scale" / "mlflow.db")
    (work / "mlflow-scale").mkdir(parents=True, exist_ok=True)
    with quiet(work / "setup-output.log"):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # schema, once, untimed
    done = _Completions()
    error = None
    with _PeakRss() as rss, quiet(work / "scale-output.log"):
        start = time.perf_counter()
        try:
            result = hpsearch.sweep(
                hpsearch.Space(hpsearch.Float("x", 0.0, 1.0)), train=noop, metric="score",
                mode="max", strategy="random", scheduler="fifo", trials=trials, max_epochs=1,
                storage=str(work / "ray"), tracking_uri=uri, experiment="bench-scale", progress=False,
                callbacks=[done],
            )
            result.wait()  # the end's writes, inside the peak's window
        except Exception as exc:  # a failure at scale is a result, not a crash of the suite
            result, error = None, f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - start
    completed = result.counts().get("completed", 0) if result else 0
    children = count_children(uri, result.tracking["parent_run_id"]) if result and result.tracking else 0
    # Seconds per successive thousand trials, counted from the first completion (the 1st, 1001st,
    # ... completion mark the thousands; the last block may be short): the first thousand measures
    # the sweep running, not the process's Ray start-up before its first trial ends.
    marks = done.times[::1000]
    if len(done.times) > 1 and (len(done.times) - 1) % 1000:
        marks.append(done.times[-1])
    per_1000 = [b - a for a, b in zip(marks, marks[1:])]
    return {
        "trials": trials, "completed": completed, "wall_s": wall, "fit_s": result.wall_s if result else None,
        "error": error, "mlflow_children": children, "rss_before_mib": rss.before, "rss_peak_mib": rss.peak,
        "writer_process_peak_mib": max(rss.writer, default=0.0),
        "seconds_per_1000": per_1000, "ms_per_trial": wall / trials * 1000,
    }


def run(trials: int, work: Path, log) -> dict[str, Any]:
    log(f"scale: {trials} no-op trials through hpsearch, tracking on, in a driver process of their own")
    work.mkdir(parents=True, exist_ok=True)
    out = work / "scale-raw.json"
    # Its environment is the suite's, which puts scripts/ on PYTHONPATH (suite.main): -m bench.scale imports.
    done = subprocess.run([sys.executable, "-m", "bench.scale", str(trials), str(work), str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"scale: the sweep's process ended with {done.returncode}: {done.stderr[-2000:]}")
    raw = json.loads(out.read_text())
    completed, children, wall, error = raw["completed"], raw["mlflow_children"], raw["wall_s"], raw["error"]
    per_1000 = raw["seconds_per_1000"]
    before, peak = raw["rss_before_mib"], raw["rss_peak_mib"]
    log(f"scale: {completed}/{trials} completed in {wall:.0f} s; {children} MLflow children; peak RSS {peak:.0f} MiB "
        f"(writer process {raw.get('writer_process_peak_mib', 0):.0f}); "
        f"per 1000: {', '.join(f'{s:.0f}' for s in per_1000)} s")
    first = per_1000[0] if per_1000 else None
    growth = per_1000[-1] / first if first and len(per_1000) > 1 else None
    one_run = "one sweep: the verdict rests on its one value (one run cannot give an interval)"
    figs = [
        figure("scale", f"{trials:,}-trial sweep completes (no-op trials, tracking on)", completed == trials and not error,
               "", baselines={"trials": trials}, goal="all complete", met=completed == trials and not error, seeds=1,
               note=error or f"{wall / 60:.1f} min wall, {wall / trials * 1000:.0f} ms per trial"),
        figure("scale", "seconds per 1,000 trials (median over the thousands)", median(per_1000), "s",
               baselines={"first 1,000": first, "last 1,000": per_1000[-1] if per_1000 else None},
               ratio_value=growth, ratio_text="last / first thousand",
               goal=f"last / first thousand <= {GOAL_GROWTH:g}", verdict=verdict(growth, "<=", GOAL_GROWTH), seeds=1,
               note=f"{one_run}; per thousand: " + ", ".join(f"{x:.0f}" for x in per_1000) + " s"
               + ("" if growth is not None else "; fewer than two thousands: no ratio")),
        figure("scale", "driver peak memory during the sweep", round(peak), "MiB",
               baselines={"before the sweep": round(before)}, ratio_value=peak / before,
               ratio_text="peak / before", goal=f"<= {GOAL_PEAK_MIB:,} MiB (1.5 GiB)",
               verdict=verdict(peak, "<=", GOAL_PEAK_MIB), seeds=1,
               note=f"{one_run}; resident memory of the sweep's own driver process, with its MLflow writer "
                    f"process's once the writes move there (peak {raw.get('writer_process_peak_mib', 0):.0f} MiB), "
                    "sampled every 0.2 s during the sweep and its end"),
        figure("scale", "MLflow child runs", children, "", baselines={"trials": trials},
               ratio_value=children / trials, ratio_text="children / trials",
               goal=f"= {trials:,}", met=children == trials, seeds=1),
    ]
    return {"raw": raw, "figures": figs}


if __name__ == "__main__":  # the sweep's own process (``run``): trials, work folder, where the raw values go
    _trials, _work, _out = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    _out.write_text(json.dumps(measure(_trials, _work)))
