"""Part 8, workers (issue #15): what a trial on two DDP workers costs against a trial on one, and
whether it learns the same.

Both arms run the reference trainable (``spaces/mlp.py``'s MLP on MNIST-1D) with the same
configurations (seeds 0..n-1, effective batch 128, no batch norm, so that one step of two workers
on 64 samples each is the same step as one worker on 128), one trial at a time:

- 1 worker: the plain trial (``workers_per_trial=1``, the user's loop in Tune's trial actor);
- 2 workers: ``Resources(workers=2, cpus=1)``, Ray Train's ``TorchTrainer`` inside the trial.

Per-trial start-up: from Tune starting the trial to its first result, less one epoch (the median
time between its later results). Accuracy: the last ``val_acc`` of each seed in both arms.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import figure, quiet

CONFIG = {"model": "mlp", "lr": 3e-3, "weight_decay": 1e-4, "batch_size": 128, "width": 128, "depth": 2,
          "dropout": 0.0, "norm": "none", "optimizer": "adamw", "warmup_epochs": 0, "lr_schedule": "cosine"}


def _space(seeds: int):
    from hpsearch.space import Choice, Fixed, Space

    return Space(*[Fixed(k, v) for k, v in CONFIG.items()], Choice("seed", list(range(seeds))))


class _Clock:
    """Driver-side times of each trial's start and results (a Ray Tune callback)."""

    def __new__(cls):
        from ray.tune import Callback

        class Clock(Callback):
            def __init__(self) -> None:
                self.started: dict[str, float] = {}
                self.results: dict[str, list[float]] = {}

            def on_trial_start(self, iteration, trials, trial, **info):
                self.started.setdefault(trial.trial_id, time.perf_counter())

            def on_trial_result(self, iteration, trials, trial, result, **info):
                self.results.setdefault(trial.trial_id, []).append(time.perf_counter())

        return Clock()


def _arm(workers: int, seeds: int, max_epochs: int, work: Path) -> dict[str, Any]:
    import hpsearch

    clock = _Clock()
    start = time.perf_counter()
    with quiet(work / f"workers-{workers}.log"):
        result = hpsearch.sweep(
            _space(seeds), metric="val_acc", mode="max", strategy="grid", scheduler="fifo", max_epochs=max_epochs,
            resources=hpsearch.Resources(workers=workers, cpus=1), concurrency=1, storage=str(work / "ray"),
            tracking_uri=False, progress=False, callbacks=[clock],
        )
    wall = time.perf_counter() - start
    startups, accuracy = [], {}
    for t in result.trials:
        times = clock.results.get(t.trial_id, [])
        if len(times) >= 2:
            epoch = statistics.median(b - a for a, b in zip(times, times[1:]))
            startups.append(times[0] - clock.started[t.trial_id] - epoch)
        accuracy[int(t.config["seed"])] = t.metric
    return {"wall_s": wall, "startup_s": startups, "val_acc": accuracy,
            "completed": result.counts().get("completed", 0)}


def run(seeds: int, max_epochs: int, work: Path, log) -> dict[str, Any]:
    from bench.common import ray_down

    ray_down()  # the suite's Ray has the bench's own setup hook; a sweep of groups starts Ray with its own
    two = _arm(2, seeds, max_epochs, work)
    one = _arm(1, seeds, max_epochs, work)
    s1, s2 = statistics.median(one["startup_s"]), statistics.median(two["startup_s"])
    first = one["startup_s"][0] if one["startup_s"] else None  # the 1-worker arm's only new actor
    diffs = [two["val_acc"][k] - one["val_acc"][k] for k in sorted(one["val_acc"])]
    log(f"workers: start-up per trial 1 worker {s1:.2f} s (first {first}), 2 workers {s2:.1f} s; val_acc 1 worker "
        f"{one['val_acc']}, 2 workers {two['val_acc']}")
    raw = {"config": CONFIG, "seeds": seeds, "max_epochs": max_epochs, "one_worker": one, "two_workers": two,
           "val_acc_difference": diffs}
    figs = [
        # No ratio: a 1-worker trial reuses the previous trial's actor (reuse_actors), so its start-up
        # is near zero; a 2-worker trial starts a new actor and a new worker group every time.
        figure("workers", "start-up per trial, 2 DDP workers", s2, "s",
               baselines={"1 worker (actor reused)": s1, "1 worker, first trial (new actor)": first},
               goal="", met=None,
               note=f"median of {len(two['startup_s'])} trials; from Tune's trial start to its first result, less one epoch"),
        figure("workers", "val_acc after the budget, 2 DDP workers", statistics.median(two["val_acc"].values()), "",
               baselines={"1 worker": statistics.median(one["val_acc"].values())},
               ratio_value=max(abs(d) for d in diffs), ratio_text="largest |2 workers - 1 worker| over seeds",
               goal="", met=None, note=f"{seeds} seeds, {max_epochs} epochs, same seed and effective batch"),
    ]
    return {"raw": raw, "figures": figs}
