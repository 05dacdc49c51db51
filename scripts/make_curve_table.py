"""Record the curve table shipped beside a space module (see scripts/make_curve_table, which sets
up .venv and calls this).

``trials`` configurations drawn by hpsearch's random strategy with ``seed`` (so a sweep with
``--strategy random --seed 0`` runs the table's first rows exactly), each trained to
``max_epochs`` by the module's trainable on MNIST-1D, two at a time (one process and one torch
thread each, as Ray runs two one-CPU trials on 2 cores). Each epoch's seconds are timed around
its report. A trial that fails (diverges) keeps the epochs it reported and is marked failed.

Run outside Ray and MLflow on purpose: the curves are the trainable's own, and a sweep's
overheads are modelled by ``hpsearch.simulate.Costs`` from the benchmark's measurements (a FIFO
sweep of the same work, read back with ``hpsearch simulate --from-sweep``, gives the same table
and ~1.7x the wall: 57% worker utilization measured 2026-11-30).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import hpsearch.trial.session


class _Timed(list):
    """``hpsearch.session.history`` that notes when each report arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.perf_counter())
        super().append(item)


_job: dict[str, Any] = {}


def _setup(space: str, max_epochs: int) -> None:
    import torch

    from hpsearch.space.modules import load_space_module
    from hpsearch.trial.data import load_dataset

    torch.set_num_threads(1)
    module = load_space_module(space)
    _job.update(module=module, max_epochs=max_epochs, data=load_dataset(module.dataset or "mnist1d"))


def _train(config: dict[str, Any]) -> tuple[list[float], list[float], bool]:
    from hpsearch.trial.train import train as reference_train

    module = _job["module"]
    train = module.train or reference_train
    history = hpsearch.session.history = _Timed()
    start = time.perf_counter()
    failed = False
    try:
        train(config, data=_job["data"], max_epochs=_job["max_epochs"])
    except Exception:  # noqa: BLE001 - a diverged trial: its curve ends here, as in a sweep
        failed = True
    values = [float(r[module.metric]) for r in history]
    seconds = [b - a for a, b in zip([start, *history.times], history.times)]
    return values, seconds, failed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="scripts/make_curve_table", description=__doc__)
    ap.add_argument("--space", default="mlp")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--max-epochs", type=int, default=81)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="default: beside the space module, NAME.curves.npz")
    args = ap.parse_args(argv)
    from hpsearch.simulate.curves import CurveTable
    from hpsearch.space.modules import load_space_module

    module = load_space_module(args.space)
    out = args.out or module.path.with_suffix(".curves.npz")
    configs = module.space.sample(args.trials, seed=args.seed)
    started = time.time()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_setup, initargs=(str(module.path), args.max_epochs)) as pool:
        done = []
        for i, row in enumerate(pool.imap(_train, configs)):
            done.append(row)
            if (i + 1) % 25 == 0:
                print(f"{i + 1}/{len(configs)} configurations, {(time.time() - started) / 60:.1f} min", flush=True)
    took = time.time() - started
    command = ("scripts/make_curve_table " + shlex.join(argv)).strip()
    table = CurveTable.build(module.space, module.metric, module.mode, configs, [d[0] for d in done],
                             [d[1] for d in done], [d[2] for d in done],
                             source=f"{args.trials} random configurations (seed {args.seed}) of {module.name} trained to "
                                    f"{args.max_epochs} epochs, {args.workers} at a time, {time.strftime('%Y-%m-%d')}, "
                                    f"{took / 60:.0f} min, by: {command}")
    table.save(out, command=command)
    print(f"{out}: {table.describe()}; best {table.metric} {table.best():.4f}; {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
