"""The benchmark suite's driver: runs the parts on one local Ray instance, writes bench.json and
bench.md, and (with --update-readme) the README's Performance table. Start it with scripts/bench/run.

Sizes are per mode. The full mode must stay under 45 minutes on 2 cores; the budget per part, from
quick-mode measurements extrapolated (see each SIZES entry), is written beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import ROOT, git_state, machine, ray_down, ray_up

PARTS = ("overhead", "model", "tracking", "scale", "gpu")

# Per-part budget of the full mode on the 2-core reference machine (AMD EPYC). A run with 2 seeds
# and search arms capped at a third of random search's time was on course for ~45 minutes
# (2026-11-23: overhead 12.8, model + tracking 21.2, scale ~10), so the cap is now a quarter:
#   overhead  ~13 min: no-op N=200 x 3 repeats (hpsearch ~13 s, Ray tuned ~6 s, Optuna <6 s), Ray
#             defaults once (a fresh actor per trial, ~1.4 s a trial: ~4.6 min); one-second N=100
#             once per arm (50 s ideal; ~52-55 s each, Ray defaults ~200 s)
#   model     ~19 min for 2 seeds: random/FIFO 2187 epochs ~185 s a seed; each of the 5 search arms
#             stops at the target or after a quarter of random/FIFO's time (~47 s); tracking: 3
#             fixed random/ASHA sweeps of 30-65 s for each of 2 seeds. A third seed does not fit.
#   scale     ~10 min: 10,000 no-op trials at ~55 ms each, then the report
# Quick mode (< 5 min; measured 4.4 min): overhead ~1.5 min, model ~2 min, scale ~0.9 min.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "overhead": dict(noop_trials=30, sleep_trials=8, noop_repeats=1, sleep_repeats=1),
        "model": dict(trials=9, search_trials=27, max_epochs=9, seeds=1, tracking_seeds=1, cap_fraction=1),
        "scale": dict(trials=1000),
        "gpu": dict(trials=8, max_epochs=3),
    },
    "full": {
        "overhead": dict(noop_trials=200, sleep_trials=100, noop_repeats=3, sleep_repeats=1, ray_default_repeats=1),
        "model": dict(trials=27, search_trials=243, max_epochs=81, seeds=2, tracking_seeds=2, cap_fraction=4),
        "scale": dict(trials=10_000),
        "gpu": dict(trials=32, max_epochs=9),
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


def run_parts(parts: list[str], mode: str, work: Path) -> dict[str, Any]:
    from bench import gpu, overhead, scale, time_to_model

    sizes = SIZES[mode]
    out: dict[str, Any] = {}
    if "overhead" in parts:
        out["overhead"] = _timed(lambda: overhead.run(**sizes["overhead"], work=work, log=log))
    if "model" in parts or "tracking" in parts:
        # Parts 2, 3 and 4 share their sweeps: one interleaved loop over seeds and arms.
        out.update(_timed_many(lambda: time_to_model.run(**sizes["model"], parts=parts, work=work, log=log)))
    if "scale" in parts:
        out["scale"] = _timed(lambda: scale.run(**sizes["scale"], work=work, log=log))
    if "gpu" in parts:
        out["gpu"] = _timed(lambda: gpu.run(**sizes["gpu"], work=work, log=log))
    return out


def _timed(fn) -> dict[str, Any]:
    start = time.perf_counter()
    result = fn()
    result["part_wall_s"] = time.perf_counter() - start
    return result


def _timed_many(fn) -> dict[str, Any]:
    start = time.perf_counter()
    results = fn()
    for r in results.values():
        r["part_wall_s"] = time.perf_counter() - start  # shared loop: the wall of all of them
    return results


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


def table(figures: list[dict[str, Any]]) -> str:
    lines = ["| figure | hpsearch | baseline(s) | ratio | goal | met? |", "|---|---|---|---|---|---|"]
    for f in figures:
        base = "; ".join(f"{k}: {_fmt(v, f['unit'])}" for k, v in f["baselines"].items()) or "-"
        ratio = "-" if f["ratio"] is None else f"{_fmt(f['ratio'])}× ({f['ratio_of']})"
        met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
        lines.append(f"| {f['figure']} | {_fmt(f['value'], f['unit'])} | {base} | {ratio} | {f['goal'] or '-'} | {met} |")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    notes = [f"- **{f['figure']}**: {f['note']}" for f in results["figures"] if f.get("note")]
    return "\n".join([
        f"Measured {m['finished'][:16].replace('T', ' ')} UTC, `{m['mode']}` mode, on {m['machine']['cpus']} CPUs "
        f"({m['machine']['cpu_model']}), commit {str(m['git']['commit'])[:10]}{' (modified)' if m['git']['dirty'] else ''}; "
        f"suite wall {m['wall_s'] / 60:.1f} min. Reproduce: `{m['command']}`.",
        "",
        table(results["figures"]),
        *(["", "Notes:", *notes] if notes else []),
    ]) + "\n"


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    pattern = re.compile(r"(<!-- bench:start -->\n).*?(\n<!-- bench:end -->)", re.S)
    if not pattern.search(content):
        raise SystemExit("bench: README.md has no <!-- bench:start --> ... <!-- bench:end --> block")
    readme.write_text(pattern.sub(lambda m: m.group(1) + text.rstrip("\n") + m.group(2), content, count=1))


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench/run", description="hpsearch benchmark suite (issue #7)")
    ap.add_argument("--quick", action="store_true", help="small sizes, under 5 minutes on 2 cores")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of: {', '.join(PARTS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results", help="where bench.json and bench.md go")
    ap.add_argument("--update-readme", action="store_true", help="write this run's table into README.md")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (Ray results, MLflow stores, logs)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        ap.error(f"--only: parts must be among {', '.join(PARTS)}, got {args.only!r}")
    mode = "quick" if args.quick else "full"
    command = "scripts/bench/run" + (" --quick" if args.quick else "") + \
              (f" --only {','.join(parts)}" if set(parts) != set(PARTS) else "")

    work = Path(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    # Set before Ray starts so its workers inherit them: where per-epoch timings go, and how
    # workers (and spawned Optuna processes) import this package.
    os.environ["BENCH_TIMING_DIR"] = str(work / "timings")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("HPSEARCH_CACHE", str(Path.home() / ".cache" / "hpsearch"))
    started = datetime.now(timezone.utc)
    start = time.perf_counter()
    meta = {"mode": mode, "parts": parts, "command": command, "started": started.isoformat(timespec="seconds"),
            "machine": machine(), "git": git_state(),
            "sizes": {p: SIZES[mode].get("model" if p == "tracking" else p) for p in parts}}
    log(f"bench: {mode} mode, parts {', '.join(parts)}; scratch in {work}")
    from hpsearch.data import load_dataset

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
    meta["load_average_at_end"] = os.getloadavg()[0]  # above ~0.5 at either end: something else ran too
    meta["wall_s"] = time.perf_counter() - start
    meta["part_wall_s"] = {p: round(v.get("part_wall_s", 0.0), 1) for p, v in parts_out.items()}
    order = ("overhead", "model", "utilization", "tracking", "scale", "gpu")
    figures = [f for p in order if p in parts_out for f in parts_out[p]["figures"]]
    results = _plain({"meta": meta, "figures": figures,
                      "parts": {p: {k: v for k, v in out.items() if k != "figures"} for p, out in parts_out.items()}})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (args.out / "bench.md").write_text(md)
    print(md)
    log(f"bench: done in {meta['wall_s'] / 60:.1f} min; wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    if args.update_readme:
        update_readme(md)
        log("bench: README.md Performance table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
