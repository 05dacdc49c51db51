"""Record a curve table: see scripts/make_curve_table (the entry point, which sets up .venv)."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import hpsearch
from hpsearch.curves import CurveTable


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="scripts/make_curve_table", description=__doc__)
    ap.add_argument("--space", default="mlp")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--max-epochs", type=int, default=81)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: beside the space module, NAME.curves.npz")
    args = ap.parse_args(argv)
    from hpsearch.modules import load_space_module

    module = load_space_module(args.space)
    out = args.out or module.path.with_suffix(".curves.npz")
    with tempfile.TemporaryDirectory(prefix="hpsearch-table-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        name = f"{module.name}-table-{args.trials}x{args.max_epochs}-seed{args.seed}"
        started = time.time()
        result = hpsearch.sweep(module.path.as_posix(), strategy="random", scheduler="fifo", trials=args.trials,
                                max_epochs=args.max_epochs, seed=args.seed, name=name, storage=f"{tmp}/ray",
                                tracking_uri=uri, progress=False)
        took = time.time() - started
        from mlflow import MlflowClient

        table = CurveTable.from_sweep(MlflowClient(tracking_uri=uri), name)
    command = "scripts/make_curve_table " + shlex.join(argv)
    table = CurveTable(table.space, table.metric, table.mode, table.configs, table.values, table.seconds, table.failed,
                       source=f"{table.source}, recorded {time.strftime('%Y-%m-%d')} in {took / 60:.0f} min on "
                              f"this machine by: {command.strip()}")
    table.save(out, command=command.strip())
    print(f"{out}: {table.describe()}; best {result.metric} {table.best():.4f}; {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
