"""Part 4, tracking cost, like for like; and hpsearch random/FIFO's utilization against Ray Tune
FIFO used directly on the same work.

One fixed FIFO sweep: ``trials`` configurations of the MNIST-1D MLP space (spaces/mlp.py), those
hpsearch's random strategy draws with seed 0, each trained ``max_epochs`` epochs, 2 workers. FIFO
stops nothing, so every variant trains the same epochs of the same configurations:

* hpsearch random/FIFO with tracking off, into the embedded SQLite store, and into a real
  ``mlflow server`` on 127.0.0.1;
* Ray Tune used directly (``tune.Tuner``, FIFO scheduler, actor reuse, the same trainable as the
  model part's Ray arm) on the same configurations.

``repeats`` rounds, the variants in a rotated order in each. Tracking cost = median over the
rounds of (wall per epoch trained with tracking / wall per epoch trained off), paired within a
round, the wall counted from the first trial's start to the last report; goal <= 1.03x for SQLite
and for the server. What tracking costs once per sweep (opening the store, the parent run, the
report at the end) is in the note, with the whole-sweep ratio. Utilization (worker seconds in the trainable's
own code over wall x 2) of hpsearch with SQLite tracking (its default), median over rounds, against
Ray Tune FIFO used directly.

Kept as its own command for habit:

    .venv/bin/python scripts/bench/tracking_cost.py [--quick]

is ``scripts/bench/run --only tracking``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__":
    scripts = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(scripts))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scripts), os.environ.get("PYTHONPATH")]))
    from bench.suite import main

    sys.exit(main(["--only", "tracking", *sys.argv[1:]]))

from bench.common import WORKERS, figure, median, ratio, span  # noqa: E402
from bench.time_to_model import GOAL_UTILIZATION, Runner, breakdown, strip_curves, utilization_summary  # noqa: E402

VARIANTS = {  # variant -> label
    "off": "hpsearch random/FIFO, tracking off",
    "sqlite": "hpsearch random/FIFO, embedded SQLite",
    "server": "hpsearch random/FIFO, mlflow server",
    "ray_fifo": "Ray Tune FIFO, direct",
}
CONFIG_SEED = 0  # the same configurations in every variant and round
GOAL_TRACKING = 1.03


def run(trials: int, max_epochs: int, repeats: int, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    runner = Runner(max_epochs, work)
    runner.open(server=True)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    try:
        for rep in range(repeats):
            for v in order[rep % len(order):] + order[: rep % len(order)]:
                if v == "ray_fifo":
                    out = runner.ray("fifo", CONFIG_SEED, trials)
                else:
                    out = runner.hpsearch("random", "fifo", CONFIG_SEED, trials, tracking=v, experiment="bench-tracking")
                out["repeat"] = rep
                runs[v].append(out)
                log(f"tracking round {rep + 1}/{repeats} {v:8s} wall {out['wall_s']:6.1f} s  {out['epochs']:4d} epochs  "
                    f"{out['trials']:3d} trials  utilization {out['utilization']:.0%}")
    finally:
        runner.close()
    size = {"trials": trials, "max_epochs": max_epochs, "repeats": repeats, "config_seed": CONFIG_SEED,
            "workers": WORKERS, "scheduler": "fifo"}
    figs = _tracking_figures(runs, size) + [_utilization_figure(runs, size)]
    per_epoch = {v: median([_per_epoch(r) for r in runs[v]]) for v in VARIANTS}
    return {"size": size, "median_wall_s": {v: median([r["wall_s"] for r in runs[v]]) for v in VARIANTS},
            "median_s_per_epoch": per_epoch, "utilization": {v: utilization_summary(runs[v]) for v in VARIANTS},
            "runs": strip_curves(runs, VARIANTS), "figures": figs}


def _per_epoch(run: dict[str, Any]) -> float:
    """Wall per epoch trained, from the first trial's start to the last report: the cost that grows
    with the epochs. What a sweep pays once (start-up, the end-of-sweep report) is given apart."""
    window = run["wall_s"] - run["first_trial_start_s"] - run["after_last_report_s"]
    return window / run["epochs"] if run["epochs"] else math.nan  # nan: a sweep that trained nothing


def _whole_per_epoch(run: dict[str, Any]) -> float:
    return run["wall_s"] / run["epochs"] if run["epochs"] else math.nan


def _tracking_figures(runs: dict[str, list[dict]], size: dict) -> list[dict[str, Any]]:
    expected = size["trials"] * size["max_epochs"]
    figs = []
    for v, label in (("sqlite", "embedded SQLite"), ("server", "mlflow server")):
        per_epoch = [_per_epoch(r) for r in runs[v]]
        off = [_per_epoch(r) for r in runs["off"]]
        paired = [ratio(a, b) for a, b in zip(per_epoch, off)]  # the same round, back to back
        value = median(paired)
        lo, hi = span(paired) or (math.nan, math.nan)
        short = [(r["repeat"], r["epochs"]) for r in runs[v] + runs["off"] if r["epochs"] != expected]
        children = [r.get("mlflow_children") for r in runs[v]]
        whole = median([ratio(_whole_per_epoch(a), _whole_per_epoch(b)) for a, b in zip(runs[v], runs["off"])])
        fixed = {k: (median([r["first_trial_start_s"] for r in runs[k]]), median([r["after_last_report_s"] for r in runs[k]]))
                 for k in (v, "off")}
        notes = [f"per round {', '.join(f'{p:.3f}x' for p in paired)} (range {lo:.3f}-{hi:.3f}x), wall from the "
                 f"first trial's start to the last report",
                 f"whole-sweep wall {median([r['wall_s'] for r in runs[v]]):.1f} s vs "
                 f"{median([r['wall_s'] for r in runs['off']]):.1f} s off (medians; {whole:.3f}x per epoch, paired), "
                 f"of which once per sweep: {fixed[v][0]:.1f} s before the first trial and {fixed[v][1]:.1f} s after "
                 f"the last report (off: {fixed['off'][0]:.1f} s and {fixed['off'][1]:.1f} s)",
                 f"MLflow child runs per sweep {', '.join(str(c) for c in children)} of {size['trials']} trials"]
        if short:
            notes.append(f"sweeps that trained other than {expected} epochs (round, epochs): {short}")
        figs.append(figure(
            "tracking", f"tracking cost, {label}: wall per epoch trained (random/FIFO, {size['trials']} configurations x "
                        f"{size['max_epochs']} epochs, median of {size['repeats']} rounds)",
            median(per_epoch), "s", baselines={"tracking off": median(off)}, ratio_value=value,
            ratio_text="this / off, paired per round", goal=f"<= {GOAL_TRACKING:.2f}x",
            met=value is not None and value <= GOAL_TRACKING, note="; ".join(notes),
        ))
    return figs


def _utilization_figure(runs: dict[str, list[dict]], size: dict) -> dict[str, Any]:
    u = {v: utilization_summary(runs[v]) for v in VARIANTS}
    pct = {v: 100 * u[v]["median_utilization"] for v in VARIANTS}
    goal = GOAL_UTILIZATION["fifo"]
    twin = VARIANTS["ray_fifo"]
    walls = {v: median([r["wall_s"] for r in runs[v]]) for v in VARIANTS}
    return figure(
        "utilization", f"worker utilization, hpsearch random/FIFO against {twin} (the same {size['trials']} "
                       f"configurations x {size['max_epochs']} epochs; SQLite tracking)", pct["sqlite"], "%",
        baselines={twin: pct["ray_fifo"]}, ratio_value=ratio(pct["sqlite"], pct["ray_fifo"]),
        ratio_text=f"this / {twin}", goal=f">= {100 * goal:.0f}% and >= {twin}",
        met=u["sqlite"]["median_utilization"] >= goal and pct["sqlite"] >= pct["ray_fifo"],
        note=f"median of {size['repeats']} rounds; {breakdown(u['sqlite'])}. {twin}: {breakdown(u['ray_fifo'])}. "
             f"hpsearch with tracking off {pct['off']:.0f}%, into the server {pct['server']:.0f}%. Whole-sweep wall "
             f"{walls['sqlite']:.1f} s vs {walls['ray_fifo']:.1f} s direct "
             f"({ratio(walls['sqlite'], walls['ray_fifo']):.2f}x). A short sweep: the fixed start-up weighs more "
             f"here than in the model part's random/FIFO reference",
    )
