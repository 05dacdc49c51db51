"""The benchmark suite's driver: checks the machine is quiet, runs the parts on one local Ray
instance, writes bench.json and bench.md, and (with --update-docs, from a full run on a quiet
machine) keeps them in scripts/bench/results/ and regenerates docs/benchmarks.md from there
(bench/docs.py). Start it with scripts/bench/run.

Sizes are per mode. The full mode must stay under 75 minutes on 2 cores (aim: about 60); the
budget per part, from measurements extrapolated, is written beside SIZES. Quick mode's figures are
indicative: marked so in the JSON and the table, with no verdict on the goals.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import ROOT, LoadSampler, git_state, machine, ray_down, ray_up

PARTS = ("overhead", "orchestration", "scale", "gpu", "search", "predict", "workers", "budget")
# The default run (issue #25): the two deciding benches (orchestration on real sweeps, search on the
# simulator) with overhead, scale and gpu. predict (~15 min in full mode) runs with --only predict.
DEFAULT_PARTS = ("overhead", "orchestration", "scale", "search", "gpu")
PART_HELP = ("overhead (start-up and per-trial cost), orchestration (real sweeps on identical work, paired "
             "per seed: hpsearch against Ray Tune with and without MLflowLoggerCallback, TPE+ASHA against its "
             "Ray and Optuna twins: wall, utilization, CPU per trial, phases), scale, search (search efficiency, "
             "simulated on the shipped curve table), gpu; predict (simulated against real sweeps), not run by "
             "default; workers (a 2-worker DDP trial against a 1-worker one: start-up and accuracy, ~5 min), "
             "not run by default; budget (--budget's choices against the defaults and Optuna, simulated, and "
             "real sweeps against their promised band and beside real sweeps of the defaults, ~17 min), not run by default")
BUSY_LOAD = 0.5  # 1-minute load average above which a measurement is not quotable

# Per-part budget of the full mode on the 2-core reference machine (AMD EPYC), extrapolated from the
# quiet 2026-11-23 and 2026-11-29 full runs (per-sweep times of the same arms); the 2026-12-04 quick
# run of this layout ran at load average 12-19 from other work (3-5x slower) and gave the shape only:
#   overhead       ~11.5 min: an untimed warm-up sweep per arm (~25 s); no-op N=20 and N=200 x 3
#                  repeats (hpsearch with and without tracking ~6.5 + 11 s each, Ray tuned ~3.5 + 6.5 s,
#                  Ray tuned + MLflowLoggerCallback ~4 + 11 s, Optuna < 6 s: ~3 min), Ray defaults
#                  N=10 and N=50 once (~70 s); one-second N=10 and N=50 once per arm (5 + 25 s ideal,
#                  ~40 s an arm, Ray defaults ~2 min: ~6 min)
#   orchestration  ~20 min: 6 seeds x (5 FIFO sweeps of 10 configurations x 12 epochs, ~23 s each on
#                  2026-11-23, ~10 s of it outside training; 3 TPE+ASHA sweeps of 27 trials of at
#                  most 27 epochs, ~80-120 epochs, ~25-30 s each): ~3.2 min a seed, plus the mlflow
#                  server's start; ~27 min on a day as slow as 2026-11-29 (1.35x)
#   scale          ~9-10 min: 10,000 no-op trials at ~50-60 ms each, then the report
#   search         ~2.5 min (simulated; measured, see beside its size)
#   gpu            none on the reference machine (no GPU: the part says so and returns)
#   total          ~44 min (~55 on a slow day), plus ~10 s for the load check and ~20 s to start Ray
# Quick mode, measured 2026-12-04 at load average 12-19 (3-5x slower than quiet): overhead 9.3 min,
# orchestration 9.4 min (2 seeds x 8 sweeps, ~35 s each, ~18 s of it start-up at that load);
# on a quiet machine about 3.5 + 3.5 min.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "overhead": dict(noop_trials=(5, 60), sleep_trials=(4, 12), noop_repeats=1, sleep_repeats=1,
                         ray_default_trials=(4, 12)),
        "orchestration": dict(seeds=2, trials=4, max_epochs=6, tpe_trials=9, tpe_max_epochs=9),
        "scale": dict(trials=1000),
        "gpu": dict(trials=8, max_epochs=3),
        "search": dict(seeds=5, trials=81, epoch_seconds=60.0, target_seeds=40),  # ~10 CPU-s: < 1 min
        "predict": dict(seeds=1, trials={"asha": 9}),
        "workers": dict(seeds=2, max_epochs=3),
        "budget": dict(seeds=10, real_sweeps=1, recorded_trials=10, recorded_epochs=6),
    },
    "full": {
        "overhead": dict(noop_trials=(20, 200), sleep_trials=(10, 50), noop_repeats=3, sleep_repeats=1,
                         ray_default_trials=(10, 50), ray_default_repeats=1),
        "orchestration": dict(seeds=6, trials=10, max_epochs=12, tpe_trials=27, tpe_max_epochs=27),
        "scale": dict(trials=10_000),
        "gpu": dict(trials=32, max_epochs=9),
        # search: 240 CPU-s on 2 processes, ~2.5 min quiet (measured 2026-12-04; 8.6 min at load ~17)
        "search": dict(seeds=30, trials=243, epoch_seconds=60.0, target_seeds=100),
        "predict": dict(seeds=3, trials={"fifo": 4, "asha": 27, "hyperband": 13}, tpe_trials=27),
        "workers": dict(seeds=5, max_epochs=10),
        # budget (issue #26, ~17 min): simulated choices over 30 seeds on two tables, 9 real sweeps (and 9 of the defaults)
        "budget": dict(seeds=30, real_sweeps=3, recorded_trials=16, recorded_epochs=9),
    },
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _plain(value: Any) -> Any:
    """JSON has no inf/nan: they become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def settled_load(seconds: float = 10.0, samples: int = 5) -> list[float]:
    """The 1-minute load average read ``samples`` times over ``seconds``: the last reading is the
    one judged, after the suite's own start (Python, imports) has had a moment to settle."""
    readings = []
    for i in range(samples):
        if i:
            time.sleep(seconds / (samples - 1))
        readings.append(round(os.getloadavg()[0], 2))
    return readings


def run_parts(parts: list[str], mode: str, work: Path) -> dict[str, Any]:
    from bench import budget, gpu, orchestration, overhead, predict, scale, search, workers

    sizes = SIZES[mode]
    out: dict[str, Any] = {}
    if "overhead" in parts:
        out["overhead"] = _timed(lambda: overhead.run(**sizes["overhead"], work=work, log=log))
    if "orchestration" in parts:
        out["orchestration"] = _timed(lambda: orchestration.run(**sizes["orchestration"], work=work, log=log))
    if "scale" in parts:
        out["scale"] = _timed(lambda: scale.run(**sizes["scale"], work=work, log=log))
    if "gpu" in parts:
        out["gpu"] = _timed(lambda: gpu.run(**sizes["gpu"], work=work, log=log))
    if "search" in parts:
        out["search"] = _timed(lambda: search.run(**sizes["search"], work=work, log=log))
    if "predict" in parts:
        out["predict"] = _timed(lambda: predict.run(**sizes["predict"], work=work, log=log))
    if "budget" in parts:
        out["budget"] = _timed(lambda: budget.run(**sizes["budget"], work=work, log=log))
    if "workers" in parts:  # last: it replaces the suite's Ray with one of its own
        out["workers"] = _timed(lambda: workers.run(**sizes["workers"], work=work, log=log))
    return out


def _timed(fn) -> dict[str, Any]:
    """A part's result with its wall and the machine's load average sampled while it ran."""
    start = time.perf_counter()
    with LoadSampler() as load:
        result = fn()
    result["part_wall_s"] = time.perf_counter() - start
    result["load"] = load.summary()
    return result


# -- Markdown --------------------------------------------------------------------------------------

def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return "not reached" if value == "inf" else value
    if isinstance(value, float):
        if not math.isfinite(value):
            return "not reached" if value > 0 else str(value)
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def verdict_text(f: dict[str, Any]) -> str:
    """A figure's verdict as the table shows it: met / **missed** / undecided (with the interval
    that straddles the goal), "by construction" where the harness itself ensures it, "indicative"
    in quick mode, "-" without a goal. Results written before verdicts had three states carry
    ``met`` (True/False/None) only."""
    v = f.get("verdict")
    if v is None and "verdict" not in f and f.get("met") is not None:
        v = "met" if f["met"] else "missed"
    if v is None:
        return "-"
    if f.get("indicative"):
        return "indicative"  # quick mode: too small to judge a goal
    text = {"met": "met", "missed": "**missed**", "undecided": "undecided"}[v]
    return f"{text} (by construction)" if f.get("by_construction") else text


def table(figures: list[dict[str, Any]]) -> str:
    lines = ["| figure | hpsearch | baseline(s) | ratio [90% interval] | goal | verdict |", "|---|---|---|---|---|---|"]
    for f in figures:
        base = "; ".join(f"{k}: {_fmt(v, f['unit'])}" for k, v in f["baselines"].items()) or "-"
        ratio = "-" if f["ratio"] is None else f"{_fmt(f['ratio'])}× ({f['ratio_of']})"
        if f.get("interval"):
            lo, hi = f["interval"]
            ratio += f" [{_fmt(lo)}, {_fmt(hi)}]"
        if f.get("seeds"):
            ratio += f", {f['seeds']} seeds"
        lines.append(f"| {f['figure']} | {_fmt(f['value'], f['unit'])} | {base} | {ratio} | {f['goal'] or '-'} | "
                     f"{verdict_text(f)} |")
    return "\n".join(lines)


def run_status(meta: dict[str, Any]) -> dict[str, Any]:
    """What a run's meta says about how far its figures can be quoted: indicative (quick mode),
    busy (load average above the limit at the start), the load at both ends. Results written
    before the suite recorded ``indicative``, ``busy`` and ``load_average`` (the load at the start
    was then in ``machine``, the one at the end in ``load_average_at_end``) get them from the same
    rules the suite applies now."""
    load = meta.get("load_average") or {"at_start": meta["machine"].get("load_average_at_start"),
                                        "at_end": meta.get("load_average_at_end")}
    limit = meta.get("busy_limit", BUSY_LOAD)
    busy = meta.get("busy")
    if busy is None:
        busy = load["at_start"] is not None and load["at_start"] > limit
    return {"indicative": meta.get("indicative", meta["mode"] == "quick"), "busy": busy, "busy_limit": limit,
            "load_at_start": load["at_start"], "load_at_end": load.get("at_end")}


def markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    status = run_status(m)
    # Figures written before the suite marked each one indicative take the run's mode.
    figures = [{**f, "indicative": f.get("indicative", status["indicative"])} for f in results["figures"]]
    notes = [f"- **{f['figure']}**: {f['note']}" for f in figures if f.get("note")]
    warnings = []
    if status["indicative"]:
        warnings.append("**Quick mode: small sizes, so every figure is indicative; no goal is judged.**")
    if status["busy"]:
        warnings.append(f"**Measured on a busy machine (load average {status['load_at_start']:.2f} at start > "
                        f"{status['busy_limit']}): figures not quotable.**")
    loads = [f"{status[k]:.2f} at {k[8:]}" for k in ("load_at_start", "load_at_end") if status[k] is not None]
    by_part = m.get("load_by_part") or {}
    if by_part:
        loads.append("while each part ran (median/max of 5-s samples) " +
                     ", ".join(f"{p} {v['median']:.2f}/{v['max']:.2f}" for p, v in by_part.items()))
    return "\n".join([
        f"Measured {m['finished'][:16].replace('T', ' ')} UTC, `{m['mode']}` mode, on {m['machine']['cpus']} CPUs "
        f"({m['machine']['cpu_model']}), commit {str(m['git']['commit'])[:10]}{' (modified)' if m['git']['dirty'] else ''}; "
        f"suite wall {m['wall_s'] / 60:.1f} min; "
        + (f"1-minute load average {', '.join(loads)} (the suite's own work included). " if loads else "")
        + f"Reproduce: `{m['command']}`.",
        *(["", *warnings] if warnings else []),
        "",
        table(figures),
        *(["", "Notes:", *notes] if notes else []),
    ]) + "\n"


def update_docs(results: dict[str, Any], md: str) -> Path:
    """Keep this run in scripts/bench/results/ and regenerate docs/benchmarks.md from what is kept
    there (bench/docs.py: the page's one writer). A run of the default parts replaces
    latest-full.json and .md (the earlier ones stay in git history); any other run is kept beside
    them as <date>-<parts>.json and .md."""
    from bench import docs

    m = results["meta"]
    stem = ("latest-full" if set(m["parts"]) == set(DEFAULT_PARTS)
            else f"{m['finished'][:10]}-{m['finished'][11:16].replace(':', '')}-{'-'.join(m['parts'])}")
    dest = docs.RESULTS / stem
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    dest.with_suffix(".md").write_text(md)
    return docs.write()


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench/run", description="hpsearch benchmark suite (issues #7, #12)")
    ap.add_argument("--quick", action="store_true", help="small sizes, about 9 minutes on 2 cores; figures indicative")
    ap.add_argument("--only", default=",".join(DEFAULT_PARTS), help=f"comma-separated parts of: {PART_HELP}")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results", help="where bench.json and bench.md go")
    ap.add_argument("--update-docs", action="store_true",
                    help="keep this run in scripts/bench/results/ and regenerate docs/benchmarks.md from the "
                         "results there (full mode on a quiet machine only)")
    ap.add_argument("--allow-busy", action="store_true",
                    help=f"run even where the load average is above {BUSY_LOAD} (the results say so: not quotable)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (Ray results, MLflow stores, logs)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        ap.error(f"--only: parts must be among {', '.join(PARTS)}, got {args.only!r}")
    mode = "quick" if args.quick else "full"
    command = "scripts/bench/run" + (" --quick" if args.quick else "") + \
              (f" --only {','.join(parts)}" if set(parts) != set(DEFAULT_PARTS) else "")
    if args.update_docs and args.quick:
        print("bench: --update-docs keeps full-mode runs only (a quick run's figures are indicative)", file=sys.stderr)
        return 2

    # The arms compete for the same cores as anything else running: measure on a quiet machine.
    loads = settled_load()
    busy = loads[-1] > BUSY_LOAD
    if busy and not args.allow_busy:
        print(f"bench: machine busy: load average {loads[-1]} > {BUSY_LOAD}; stop other work or pass --allow-busy",
              file=sys.stderr)
        return 2
    if busy and args.update_docs:
        print(f"bench: --update-docs takes a run on a quiet machine: load average {loads[-1]} > {BUSY_LOAD}",
              file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    # Set before Ray starts so its workers inherit them: where per-epoch timings go, and how
    # workers (and spawned Optuna processes) import this package.
    os.environ["BENCH_TIMING_DIR"] = str(work / "timings")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("HPSEARCH_CACHE", str(Path.home() / ".cache" / "hpsearch"))
    started = datetime.now(timezone.utc)
    start = time.perf_counter()
    meta = {"mode": mode, "parts": parts, "command": command, "started": started.isoformat(timespec="seconds"),
            "indicative": mode == "quick", "busy": busy, "busy_limit": BUSY_LOAD, "allow_busy": args.allow_busy,
            "load_average": {"at_start": loads[-1], "start_samples": loads},
            "machine": machine(), "git": git_state(), "sizes": {p: SIZES[mode][p] for p in parts}}
    log(f"bench: {mode} mode, parts {', '.join(parts)}; load average {loads[-1]:.2f}"
        f"{' (busy: figures not quotable)' if busy else ''}; scratch in {work}")
    from hpsearch.trial.data import load_dataset

    load_dataset("mnist1d")  # generate and cache once, outside every timing
    ray_up()
    try:
        parts_out = run_parts(parts, mode, work)
    finally:
        ray_down()
        if args.keep:
            log(f"bench: scratch kept in {work}")
        else:  # Ray's trial folders (10,000 of them in full mode), checkpoints and stores
            shutil.rmtree(work, ignore_errors=True)
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # At the end the suite's own two workers have just been busy: expect about 2 here.
    meta["load_average"]["at_end"] = round(os.getloadavg()[0], 2)
    meta["wall_s"] = time.perf_counter() - start
    meta["part_wall_s"] = {p: round(v.get("part_wall_s", 0.0), 1) for p, v in parts_out.items()}
    meta["load_by_part"] = {p: v["load"] for p, v in parts_out.items() if "load" in v}
    order = ("overhead", "orchestration", "scale", "gpu", "search", "predict", "budget", "workers")
    figures = sorted((f for out in parts_out.values() for f in out["figures"]), key=lambda f: order.index(f["part"]) if f["part"] in order else len(order))
    for f in figures:
        f["indicative"] = mode == "quick"
    results = _plain({"meta": meta, "figures": figures,
                      "parts": {p: {k: v for k, v in out.items() if k != "figures"} for p, out in parts_out.items()}})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (args.out / "bench.md").write_text(md)
    print(md)
    log(f"bench: done in {meta['wall_s'] / 60:.1f} min; wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    if args.update_docs:
        page = update_docs(results, md)
        log(f"bench: results kept in scripts/bench/results/; {page.relative_to(ROOT)} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
