"""Storage in a bucket against storage on the local disk: the same sweep, the two kinds of storage
interleaved, medians and the paired ratio.

The sweep: spaces/mlp.py, random/ASHA, 8 trials of at most 9 epochs, seed 0, tracking off, a
fresh local Ray per run (one process each); checkpoints where the scheduler decides and at the
end (the default ``checkpoint_every_s=60``) or every epoch (``--checkpoint-every 0``: the most
storage traffic a sweep makes; epochs here take ~0.2 s). The bucket is on a local S3-compatible server (moto,
its own process), so the ratio is the cost of the S3 path itself (pyarrow's client, uploads,
listing), not of a network.

    .venv/bin/python scripts/bench/storage.py [--repeats 3] [--checkpoint-every 60] [--out DIR]

Writes DIR/storage-checkpoint-every-N.json and .md (default scripts/bench/results/issue-23/).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP = """
import json, sys, time
start = time.time()
import hpsearch
r = hpsearch.sweep("mlp", strategy="random", scheduler="asha", trials=8, max_epochs=9, seed=0,
                   checkpoint_every_s=float(sys.argv[3]), storage=sys.argv[1], name=sys.argv[2], tracking_uri=False,
                   progress=False)
print(json.dumps({"wall_s": r.wall_s, "process_s": time.time() - start, "epochs": sum(t.epochs for t in r.trials)}))
"""


def _moto():
    import boto3

    sys.path.insert(0, str(ROOT))
    from tests.conftest import start_s3_server

    proc, endpoint = start_s3_server()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket="bench")
    return proc, endpoint


def markdown(data: dict) -> str:
    """The Markdown beside the JSON (and in docs/benchmarks.md): a heading, the medians, the paired ratio."""
    ratios, load = data["paired_wall_ratio"]["each"], data["load_average_1min"]
    return (f"# Storage: S3 bucket against local disk, checkpoint_every_s={data['checkpoint_every_s']:g} "
            f"({data['when']}, commit {data['commit']}, {data['repeats']} repeats)\n\n"
            "| storage | sweep wall (median) | process (median) |\n|---|---|---|\n"
            + "".join(f"| {k} | {v['wall_s']:.1f} s | {v['process_s']:.1f} s |\n" for k, v in data["median"].items())
            + f"\nPaired ratio of wall per epoch trained, S3 / local: median {data['paired_wall_ratio']['median']:.2f}x "
            f"(each: {', '.join(f'{r:.2f}' for r in ratios)}); 1-minute load average {min(load):.2f}-{max(load):.2f}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=float, default=60.0)
    parser.add_argument("--out", default=str(ROOT / "scripts/bench/results/issue-23"))
    args = parser.parse_args()
    proc, endpoint = _moto()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    runs: dict[str, list[dict]] = {"local": [], "s3": []}
    load = [os.getloadavg()[0]]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
            for repeat in range(args.repeats):
                order = ("local", "s3") if repeat % 2 == 0 else ("s3", "local")
                for kind in order:
                    storage = str(Path(tmp, "runs")) if kind == "local" else "s3://bench/runs"
                    name = f"{kind}-{repeat}-{secrets.token_hex(2)}"
                    out = subprocess.run([sys.executable, "-c", SWEEP, storage, name, str(args.checkpoint_every)], env=env, capture_output=True,
                                         text=True, cwd=ROOT, timeout=900)
                    if out.returncode:
                        raise SystemExit(out.stderr[-3000:])
                    runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    load.append(os.getloadavg()[0])
                    print(kind, runs[kind][-1], flush=True)
    finally:
        proc.kill()
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "process_s")} for k, v in runs.items()}
    # Per epoch trained: ASHA's decisions (so the epochs run) depend on the trials' timing.
    ratios = [(s["wall_s"] / s["epochs"]) / (loc["wall_s"] / loc["epochs"]) for loc, s in zip(runs["local"], runs["s3"])]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    data = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit, "repeats": args.repeats,
            "checkpoint_every_s": args.checkpoint_every,
            "runs": runs, "median": med, "paired_wall_ratio": {"median": statistics.median(ratios), "each": ratios},
            "load_average_1min": load, "cpus": os.cpu_count()}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"storage-checkpoint-every-{args.checkpoint_every:g}"
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=1))
    md = markdown(data)
    (folder / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
