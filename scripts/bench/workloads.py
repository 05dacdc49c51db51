"""The work each arm runs. Importable by Ray workers and by spawned Optuna workers (``scripts/`` is
on ``PYTHONPATH``), so every arm runs the very same functions.

The overhead part uses trials that do (almost) nothing. The orchestration part uses hpsearch's reference trainable,
``hpsearch.trial.train.train``, unchanged, in every arm: when a worker imports ``hpsearch.trial.train``, the two
names it calls the orchestrator by (``report`` and ``load_checkpoint``) are replaced with timed
versions, so

* hpsearch arms run the reference trainable itself (checkpoints kept where the sweep's policy
  says, best model logged), and the time spent in the trainable's own code is measured apart
  from the time in ``report``;
* Ray Tune and Optuna used directly train the same model with the same loop; only where a report
  goes differs (``tune.report`` without a checkpoint, or ``trial.report`` + pruning), as a user
  who writes that loop by hand would do.

Timings go to one small JSON-lines file per process (``BENCH_TIMING_DIR``), not into the reported
metrics, so MLflow receives exactly what a user's sweep sends.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
import time
from typing import Any, Callable

# -- the overhead part: orchestration only -----------------------------------------------------------------


def noop_hpsearch(config):
    import hpsearch

    hpsearch.report(epoch=1, score=float(config["x"]))


def sleep_hpsearch(config):
    import hpsearch

    time.sleep(1.0)
    hpsearch.report(epoch=1, score=float(config["x"]))


def noop_ray(config):
    from ray import tune

    tune.report({"score": float(config["x"])})


def sleep_ray(config):
    from ray import tune

    time.sleep(1.0)
    tune.report({"score": float(config["x"])})


def optuna_objective(trial, seconds: float = 0.0) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if seconds:
        time.sleep(seconds)
    return x


# -- the orchestration part: the reference trainable, timed -------------------------------------

_clock: dict[str, Any] = {"since": None, "tag": None}
# Where the reference trainable's reports go in this process: None = hpsearch.session.report
# (inside an hpsearch sweep); else a function(epoch, metrics) set by a direct Ray/Optuna arm.
_sink: Callable[[int, dict[str, Any]], None] | None = None
_log = None


def install_import_hook() -> None:
    """Ray's worker_process_setup_hook: instrument ``hpsearch.trial.train`` when a worker first imports it.

    Lazy on purpose: the hook runs in every Ray worker, including the fresh actor process that Ray
    Tune's defaults start for every trial; importing torch there would charge that arm for our
    instrument.
    """
    if not any(isinstance(f, _InstrumentOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstrumentOnImport())


class _InstrumentOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "hpsearch.trial.train":
            return None
        sys.meta_path.remove(self)  # once: let the normal finders locate the module
        spec = importlib.util.find_spec(fullname)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            _instrument(module)

        spec.loader.exec_module = exec_module
        return spec


def instrument_worker() -> None:
    """The Optuna pool's initializer: instrument now (those processes exist to train)."""
    import hpsearch.trial.train

    _instrument(hpsearch.trial.train)


def _instrument(module) -> None:
    import torch

    torch.set_num_threads(1)  # one core per trial in every arm (Ray sets this, Optuna would not)
    module.report = _timed_report
    module.load_checkpoint = _timed_load_checkpoint


def _timed_load_checkpoint():
    import hpsearch.trial.session

    state = hpsearch.session.load_checkpoint()
    # The trainable calls this once, after building its model: training starts when it returns.
    _clock["since"] = time.perf_counter()
    _write({"tag": _trial_tag() if _sink is None else _clock["tag"], "event": "start", "t": time.time()})
    return state


def _timed_report(epoch: int, checkpoint: Any = None, **metrics: Any) -> None:
    import hpsearch.trial.session

    start = time.perf_counter()
    train_s = start - (_clock["since"] or start)
    tag = _trial_tag() if _sink is None else _clock["tag"]
    try:
        if _sink is None:
            if os.environ.get("BENCH_DROP_CHECKPOINT") == "1":  # a profiling switch: what checkpoints cost
                checkpoint = None
            hpsearch.session.report(epoch, checkpoint=checkpoint, **metrics)
        else:
            _sink(epoch, metrics)
    finally:
        # Also when the report does not return: a trial the scheduler (or a stopper) stops ends in
        # Ray's report (SystemExit in the training thread), an Optuna trial pruned in the sink.
        # Written only on return, the epoch that trial had trained was counted as time between
        # trials: Ray's Tune reports a stopped trial's last result and then ends its thread.
        end = time.perf_counter()
        _clock["since"] = end
        _write({"tag": tag, "epoch": epoch, "train_s": train_s, "report_s": end - start, "t": time.time(),
                "val_acc": metrics.get("val_acc")})


def _trial_tag() -> str | None:
    try:
        from ray import tune

        return tune.get_context().get_trial_id()
    except Exception:  # outside Ray
        return None


def _write(record: dict[str, Any]) -> None:
    global _log
    folder = os.environ.get("BENCH_TIMING_DIR")
    if not folder:
        return
    if _log is None or _log.name != os.path.join(folder, f"{os.getpid()}.jsonl"):
        os.makedirs(folder, exist_ok=True)
        _log = open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a", buffering=1)  # a line at a time
    _log.write(json.dumps(record) + "\n")


def read_timings(folder: str, tags: set[str] | None = None) -> list[dict[str, Any]]:
    """Every epoch timing written under ``folder`` (by tag, if given), oldest first."""
    out = []
    if not os.path.isdir(folder):
        return out
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if tags is None or rec.get("tag") in tags:
                    out.append(rec)
    return sorted(out, key=lambda r: r["t"])


def ray_direct_train(config, data=None, max_epochs: int = 81) -> None:
    """Ray Tune used directly (FIFO, or OptunaSearch + ASHA, in the orchestration part): the same
    training loop, each epoch's metrics to ``tune.report``.

    No checkpoint: neither ASHA nor FIFO pauses a trial, so a hand-written Ray set-up has no need for one.
    """
    global _sink
    from ray import tune

    import hpsearch.trial.train

    _sink = lambda epoch, metrics: tune.report({"epoch": epoch, **metrics})  # noqa: E731
    _clock["tag"] = _trial_tag()
    hpsearch.trial.train.train(config, data=data, max_epochs=max_epochs)


def optuna_worker(storage: str, study_name: str, space_path: str, max_epochs: int, trials: int,
                  seed: int, timing_dir: str, grace_period: int = 1, reduction_factor: int = 3) -> list[dict[str, Any]]:
    """One of two Optuna worker processes sharing a study in SQLite (Optuna's documented way to
    use two cores: ``n_jobs`` threads share one GIL, and these small MLPs are Python-bound): TPE
    with ``constant_liar`` (two workers on one study: a running trial counts as a poor result, so
    both do not propose the same point) and a ``SuccessiveHalvingPruner`` with ASHA's rungs
    (``grace_period`` x ``reduction_factor``^k), the budget the other TPE+ASHA arms get. Returns
    every report it made: time, epoch, validation accuracy, trial number.
    """
    global _sink
    import optuna

    import hpsearch.trial.train
    from hpsearch.search.strategies import define_by_run
    from hpsearch.space.modules import load_space_module
    from hpsearch.trial.data import load_dataset

    os.environ["BENCH_TIMING_DIR"] = timing_dir
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    module = load_space_module(space_path)
    data = load_dataset(module.dataset)
    suggest = define_by_run(module.space)
    # Each process samples with its own seed: the same seed in both would propose the same
    # start-up configurations twice.
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=grace_period, reduction_factor=reduction_factor,
                                                      min_early_stopping_rate=0))
    reports: list[dict[str, Any]] = []

    def objective(trial):
        global _sink
        constants = suggest(trial)  # suggests the tuned values, returns fixed and derived ones
        config = module.space.complete({**trial.params, **constants})
        _clock["tag"] = f"{study_name}:{trial.number}"
        last = {}

        def sink(epoch, metrics):
            last.update(metrics)
            reports.append({"t": time.time(), "epoch": epoch, "val_acc": metrics["val_acc"], "trial": trial.number})
            trial.report(metrics["val_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        _sink = sink
        hpsearch.trial.train.train(config, data=data, max_epochs=max_epochs)
        return last["val_acc"]

    # Both processes stop once the study holds ``trials`` trials, whoever ran them (the two may
    # each start one as the count is reached: one trial over, at most).
    study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=None)])
    _sink = None
    return reports
