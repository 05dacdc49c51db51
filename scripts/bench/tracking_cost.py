"""Tracking cost: the same seeded sweep with tracking off, into embedded SQLite, into a real server.

    .venv/bin/python scripts/bench/tracking_cost.py [--repeats 3] [--trials 16] [--max-epochs 27]

Runs are interleaved (off, sqlite, server, off, ...) on one Ray instance so drift on a noisy
machine hits every arm alike; reports medians of the whole ``hpsearch.sweep`` call (the end-of-
sweep report and model logging included) and the ratios against tracking off. Writes
bench-results/tracking_cost.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_server(store: Path) -> tuple[subprocess.Popen, str]:
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(ROOT / "mlflow" / "serve"), "--port", str(port), "--store", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if requests.get(uri + "/health", timeout=1).status_code == 200:
                return proc, uri
        except requests.RequestException:
            time.sleep(0.5)
    raise RuntimeError("mlflow server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=27)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args()

    import ray

    import hpsearch
    from hpsearch.data import load_dataset

    work = Path(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    server, server_uri = start_server(work / "server")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    data = load_dataset("mnist1d")
    arms = {"off": False, "sqlite": "sqlite:///" + str(work / "embedded" / "mlflow.db"), "server": server_uri}
    (work / "embedded").mkdir()
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    epochs: dict[str, list[int]] = {arm: [] for arm in arms}
    try:
        for rep in range(args.repeats):
            for arm, uri in arms.items():
                start = time.perf_counter()
                result = hpsearch.sweep("mlp", data=data, strategy="random", scheduler="asha", trials=args.trials,
                                        max_epochs=args.max_epochs, seed=0, storage=str(work / "runs"),
                                        tracking_uri=uri, experiment="bench", progress=False)
                times[arm].append(time.perf_counter() - start)
                epochs[arm].append(result.total_epochs)
                print(f"repeat {rep + 1} {arm:6s} {times[arm][-1]:6.1f} s  {result.total_epochs} epochs", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        ray.shutdown()
    medians = {arm: statistics.median(v) for arm, v in times.items()}
    # ASHA promotes asynchronously, so the same seeded sweep can spend a few more or fewer epochs;
    # seconds per epoch compares the arms on the same work.
    per_epoch = {arm: statistics.median(t / e for t, e in zip(times[arm], epochs[arm])) for arm in arms}
    report = {
        "what": f"hpsearch.sweep('mlp', random, asha, {args.trials} trials, max {args.max_epochs} epochs, seed 0)",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "repeats": args.repeats, "seconds": times, "epochs": epochs,
        "median_seconds": medians,
        "ratio_vs_off": {arm: medians[arm] / medians["off"] for arm in arms},
        "median_seconds_per_epoch": per_epoch,
        "per_epoch_ratio_vs_off": {arm: per_epoch[arm] / per_epoch["off"] for arm in arms},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracking_cost.json").write_text(json.dumps(report, indent=2))
    lines = ["| tracking | median wall (s) | ratio vs off | median s/epoch | s/epoch ratio vs off | epochs |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        lines.append(f"| {arm} | {medians[arm]:.1f} | {report['ratio_vs_off'][arm]:.3f} | {per_epoch[arm]:.3f} | "
                     f"{report['per_epoch_ratio_vs_off'][arm]:.3f} | {statistics.median(epochs[arm]):.0f} |")
    (args.out / "tracking_cost.md").write_text(report["what"] + f", {args.repeats} repeats\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
