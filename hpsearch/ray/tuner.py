"""A sweep as Ray Tune runs it: the trainable (the trial entry with its data, spec and replays), the
resources each trial holds, the Tuner for a new sweep and the one restored for a resume, and the
trials Tune ran.

Driver side: importing this module imports Ray Tune.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import ray
from ray import tune

from hpsearch.ray import compat, legacy
from hpsearch.ray.callbacks import ResultJson
from hpsearch.ray.cluster import trials_at_once
from hpsearch.ray.schedulers import SchedulerState, make_scheduler, resumable
from hpsearch.ray.searchers import make_search_alg
from hpsearch.ray.stopper import SweepStop
from hpsearch.record import PreparedSweep
from hpsearch.search.schedulers import decision_epochs
from hpsearch.settings import SweepSettings
from hpsearch.text import MASK, is_secret
from hpsearch.trial.entry import trial_entry
from hpsearch.trial.spec import TrialSpec
from hpsearch.trial.workers import TRIAL_ACTOR_MEMORY


def trial_spec(settings: SweepSettings, code_folder: str | None = None) -> TrialSpec:
    """What each trial needs of the resolved ``settings``: its budget, the epochs where the
    scheduler may pause or stop it (where a checkpoint pays), and its workers.

    Example:
        >>> s = SweepSettings(scheduler="asha", max_epochs=9, storage="/tmp/r", name="x")
        >>> spec = trial_spec(s); sorted(spec.checkpoint_epochs), spec.workers, spec.group_storage
        ([1, 3], 1, '/tmp/r/x')
    """
    s = settings
    return TrialSpec(
        max_epochs=s.max_epochs, checkpoint_epochs=decision_epochs(s.scheduler, s.max_epochs, s.grace_period, s.reduction_factor),
        checkpoint_every_s=s.checkpoint_every_s, workers=s.workers_per_trial, cpus_per_worker=s.cpus_per_trial,
        gpus_per_worker=s.gpus_per_trial, group_storage=s.folder.uri if s.folder else None,
        code_folder=code_folder,
    )


def trainable_for(prep: PreparedSweep):
    """The trial entry with what every trial shares (its data through Ray's object store, put once),
    and the resources one trial holds."""
    s = prep.settings
    # The space module's folder, for a trial to put on its path; not where the job ships it (a
    # joined cluster: its working_dir is on the path already, and this machine's folder is not there).
    shipped = bool((ray.get_runtime_context().runtime_env or {}).get("working_dir"))
    folder = None if shipped else prep.code_folder
    fn = tune.with_parameters(
        trial_entry, train_fn=prep.train_fn, data=prep.data, space=prep.space, spec=trial_spec(s, folder),
        reuse={k: r for k, r in prep.reuse.items() if r.usable(s.max_epochs)},
    )
    if s.workers_per_trial > 1:  # its workers hold the CPUs and GPUs (see hpsearch.trial.workers)
        return tune.with_resources(fn, tune.PlacementGroupFactory([{"CPU": 0, "memory": TRIAL_ACTOR_MEMORY}]))
    return tune.with_resources(fn, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})


def trial_dirname(trial) -> str:
    """Ray's own name for a trial's folder (its id, index and configuration, shortened, and the
    time), with secret values masked: the name goes into checkpoint paths, which a nightly's
    ledger and Ray's logs carry."""
    tag = trial.experiment_tag
    for key, value in trial.config.items():
        if is_secret(key) and value not in (None, ""):
            tag = tag.replace(str(value), MASK)
    return f"{trial}_{tag}"[:130] + time.strftime("_%Y-%m-%d_%H-%M-%S")


def driver_callbacks(live: Sequence[Any], scheduler, user: Sequence[Any]) -> list[Any]:
    """The sweep's callbacks in Ray's run: hpsearch's own, the scheduler's state, the user's, and
    the JSON logger (``ResultJson``, where Ray would append its own). Ray hands each callback's
    saved state back by its position in this list, so the order is fixed whatever the user passes
    on a resume."""
    return [*live, SchedulerState(scheduler), *user, ResultJson()]  # last: where Ray puts its own JSON logger


def new_tuner(prep: PreparedSweep, live: Sequence[Any], user: Sequence[Any], stopper: SweepStop) -> tune.Tuner:
    """The Tuner of a new sweep: its search algorithm and scheduler (with its state kept across a
    crash), its trials' resources and concurrency, and its callbacks on the driver (``live``:
    hpsearch's, ``user``: the caller's)."""
    s = prep.settings
    compat.consistent_snapshots()
    at_once = trials_at_once(s.concurrency, prep.groups_at_once)
    scheduler = resumable(make_scheduler(s.scheduler, s.max_epochs, s.grace_period, s.reduction_factor))
    return tune.Tuner(
        trainable_for(prep),
        # Ray takes pre-set points only for keys its param_space names; the points themselves come
        # from the space (already validated), so the keys carry no Ray domain.
        param_space={name: None for name in prep.space.names},
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=str(s.mode), num_samples=s.trials,
            search_alg=make_search_alg(s.strategy, prep.space, s.metric, str(s.mode), s.trials, s.seed, at_once,
                                       prep.points_to_evaluate, max_epochs=s.max_epochs, told=prep.told),
            scheduler=scheduler,
            # Reusing trial actors cuts per-trial start-up from about a second to tens of ms here;
            # it is safe because each trial builds its own model and optimizer from its config. A
            # multi-worker trial's actor cannot be reused: its group trains until the actor ends.
            reuse_actors=s.workers_per_trial == 1,
            max_concurrent_trials=at_once,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=s.name, storage_path=s.storage, stop=stopper,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            # Every checkpoint kept until the sweep ends (hpsearch.ray.checkpoints says why): Ray
            # deletes a superseded one before the snapshot that stops naming it is uploaded.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            # Each trial's stdout and stderr in files (stdout, stderr) in its working folder, copied to
            # its folder in storage (at its first result, every 5 min, and when its actor lets it go;
            # not at each checkpoint, which would wait for the copy): MlflowCallback logs them.
            log_to_file=True, sync_config=tune.SyncConfig(sync_artifacts=True, sync_artifacts_on_checkpoint=False),
            callbacks=driver_callbacks(live, scheduler, user), verbose=0,
        ),
    )


def can_resume(folder: str | Path) -> bool:
    """Whether a sweep's folder holds a Ray experiment snapshot to resume from."""
    return tune.Tuner.can_restore(str(folder))


def restored_tuner(prep: PreparedSweep, stopper: SweepStop) -> tune.Tuner:
    """The Tuner of an interrupted sweep, restored from its last experiment snapshot with this
    start's stopper and concurrency (its callbacks come with ``attach``); one line, and nothing
    written, if there is nothing to restore.

    Ray restores the RunConfig it pickled, whose driver callbacks were pickled empty (see
    ``DriverCallback``). The scheduler comes back as pickled when the sweep started; its state comes
    from the latest snapshot, through ``SchedulerState`` (a sweep started before hpsearch kept it
    gets the wrapper now, and resumes with an empty state as it used to).
    """
    s = prep.settings
    path = prep.path.uri
    if not can_resume(path):
        raise ValueError(f"name: sweep {s.name!r} has no Ray experiment state under {path!r} to resume")
    compat.consistent_snapshots()
    legacy.install()  # a sweep saved before hpsearch's sub-packages names its objects by their old paths
    tuner = tune.Tuner.restore(path, trainable=trainable_for(prep), resume_unfinished=True, resume_errored=False)
    tune_config, run_config = compat.restored_configs(tuner)
    tune_config.scheduler = resumable(tune_config.scheduler)
    # This cluster's concurrency, which may not be the first one's.
    tune_config.max_concurrent_trials = trials_at_once(s.concurrency, prep.groups_at_once)
    run_config.stop = stopper
    return tuner


def attach(tuner: tune.Tuner, live: Sequence[Any], user: Sequence[Any]) -> None:
    """This start's callbacks for a restored Tuner (``live``: hpsearch's, ``user``: the caller's)."""
    tune_config, run_config = compat.restored_configs(tuner)
    run_config.callbacks = driver_callbacks(live, tune_config.scheduler, user)
