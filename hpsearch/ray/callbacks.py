"""The Ray Tune callbacks of a sweep, on the driver: the progress display's and MLflow tracking's
feeds, the interrupt watch, the end's groundwork, and Ray's default loggers switched off.

Driver side only: this module imports Ray Tune.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

from hpsearch.progress import Progress
from hpsearch.ray import compat
from hpsearch.results import error_text, status_of
from hpsearch.space import Space
from hpsearch.tracking import compat as mlflow_compat
from hpsearch.tracking.reconcile import reconcile
from hpsearch.tracking.tracker import SweepTracker, live_figures
from hpsearch.vocab import TrialStatus

log = logging.getLogger(__name__)


class DriverCallback(Callback):
    """A callback that lives on the driver only: Ray pickles callbacks into its experiment state,
    so the live objects (locks, clients, a terminal) are dropped from the pickle and re-supplied
    on resume. A restored copy has no attributes: subclasses check ``live`` before acting."""

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__dict__.update(state)


class Silent:
    """Mixed in before one of Ray's default loggers: Ray adds its own instance of a default logger
    unless the callbacks hold one of that class, so an instance that does nothing switches it off."""

    def __init__(self) -> None:
        pass

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration, trial, result) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


class NoTensorBoard(Silent, TBXLoggerCallback):
    """Ray's TensorBoard logger, off. MLflow already holds every curve. Measured on 400 no-op
    trials, Ray's logger spent about a third of the driver's time: it imports torch into the
    driver (~2 s) and flushes an event file for every result."""

class NoCSV(Silent, CSVLoggerCallback):
    """Ray's CSV logger (progress.csv), off: the same results are in result.json (Ray's JSON logger
    stays: resume, the nightly ledger and Ray's ResultGrid read it) and in MLflow. One file fewer
    to open per trial and to write per result on the driver. (A CSV written across a resume was
    also wrong: Ray appends the resumed rows in the new result's key order under the old header.)"""

class ResultJson(JsonLoggerCallback):
    """Ray's JSON logger (each trial's result.json: resume, the nightly ledger, ``read_results`` and
    Ray's ResultGrid read it), with one defect mended: when a trial starts again from a checkpoint
    (a HyperBand pause, a retry), Ray copies the trial's result.json from storage over the driver's
    local one, which storage receives only at the next experiment snapshot. The epochs reported in
    between were lost: a trial paused after epochs 1 and 3 read 1, 4, 5, ... in a full test run.
    The local file, the one the snapshots upload, is kept where it exists; the copy in storage is
    read only where there is none (a resume on another machine, or after the driver's folder went).
    Written here because Ray has no option for it."""

    def _restore_from_remote(self, file_name: str, trial) -> None:  # compat.restore_logger_file says what it overrides
        if not Path(trial.local_path, file_name).exists():
            compat.restore_logger_file(self, file_name, trial)


class InterruptWatch(DriverCallback):
    """Notes a SIGINT (Ctrl-C) or SIGTERM (systemd, Kubernetes) that ends a sweep, and makes
    SIGTERM end it the way Ctrl-C does.

    Ray Tune handles the first SIGINT itself: it ends its loop, saves the experiment with the
    running trials unfinished (so ``resume`` continues them from their checkpoints) and puts back
    the handler it found, so a second Ctrl-C raises KeyboardInterrupt at once. It has no such
    handling for SIGTERM, and does not say afterwards that it was interrupted (it marks the
    running trials TERMINATED when it cleans up). So, once Ray has installed its handler (Ray
    sets callbacks up after that), this wraps it to note the signal, and sends SIGTERM the same
    way. ``signal`` is the first one caught; ``unfinished`` the trials started and not ended.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.unfinished: set[str] = set()
        self._term = None
        self._int = None

    def arm(self) -> None:
        """Before Ray runs: note the SIGINT handler to put back afterwards (Ray leaves its own)."""
        if threading.current_thread() is threading.main_thread():
            self._int = (signal.getsignal(signal.SIGINT),)

    @property
    def live(self) -> bool:
        return hasattr(self, "unfinished")

    def setup(self, **info) -> None:
        if not self.live or threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread
        ray_handler = signal.getsignal(signal.SIGINT)
        if not callable(ray_handler):
            return

        def on_int(signum, frame):
            self.signal = self.signal or "SIGINT"
            ray_handler(signum, frame)

        def on_term(signum, frame):
            self.signal = self.signal or "SIGTERM"
            handler = signal.getsignal(signal.SIGINT)  # on_int the first time; then the one Ray put back
            if callable(handler):
                handler(signal.SIGINT, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_int)
        self._term = (signal.signal(signal.SIGTERM, on_term),)

    def restore(self) -> None:
        """Put back the handlers found before Ray ran."""
        if not self.live or threading.current_thread() is not threading.main_thread():
            return
        for sig, held in ((signal.SIGTERM, self._term), (signal.SIGINT, self._int)):
            if held is not None and held[0] is not None:
                signal.signal(sig, held[0])
        self._term = self._int = None

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.live:
            self.unfinished.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.live:
            self.unfinished.discard(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.live:
            self.unfinished.discard(trial.trial_id)


class Groundwork(DriverCallback):
    """The sweep's end, prepared while its trials train: the plan-against-actual simulation
    (``work``) and the imports the report and the best model need (matplotlib, Optuna's
    importance, ``mlflow.pytorch`` and its package map), on a daemon thread started at the first result.

    Done at the end, after the last trial, these kept the workers idle for 4-15 s per sweep on the
    benchmark (the simulation of a 243-trial TPE sweep alone: ~8 s of CPU). None of them depends
    on how the sweep goes, so they can overlap it; they start only once a trial reports, so as not
    to compete with Ray's start-up. ``result()`` waits for them (or does them, if no trial ever
    reported); a daemon thread never holds up the exit of an interrupted sweep.
    """

    def __init__(self, work) -> None:
        self._work = work
        self._thread: threading.Thread | None = None
        self._value: dict = {}

    @property
    def live(self) -> bool:
        return hasattr(self, "_work")

    def _run(self) -> None:
        _warm_end_imports()
        self._value = self._work()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.live and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hpsearch-groundwork", daemon=True)
            self._thread.start()

    def result(self) -> dict:
        """The work's value (``work`` itself must not raise: ``engine._expected`` logs and gives ``{}``)."""
        if self._thread is None:
            return self._work()
        self._thread.join()
        return self._value


class ProgressCallback(DriverCallback):
    """Feeds a ``Progress`` bar from Ray Tune's driver-side events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    @property
    def live(self) -> bool:
        return getattr(self, "progress", None) is not None

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.live:
            self.progress.running.add(trial.trial_id)
            self.progress.refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.live:
            self.progress.on_result(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.live:
            self.progress.on_end(trial, status_of(trial, self.progress.settings.max_epochs, ended=True))

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.live:
            self.progress.on_end(trial, TrialStatus.FAILED)


class BudgetWatch(DriverCallback):
    """A budgeted sweep's forecast, redone at each rung (an epoch where the scheduler decides, or a
    trial's last): from the epochs and trial time spent so far and the epoch time the last
    ``WINDOW`` results show, through ``forecast`` (``hpsearch.simulate.budget.Forecast``, the
    chosen setting's simulated sweeps). The progress bar and the parent run show it; the first
    forecast whose median lies beyond the promised band is a warning saying what to do (once: the
    bar and the parent run keep showing where the forecast goes). The budget's hard stop is the
    stopper's, unchanged."""

    WINDOW = 8  # the last results whose median epoch time the forecast assumes from now on

    def __init__(self, forecast, settings, progress: Progress | None = None, tracker: SweepTracker | None = None,
                 rungs: frozenset[int] = frozenset(), warn=None) -> None:
        self.forecast, self.settings, self.progress, self.tracker = forecast, settings, progress, tracker
        self.rungs = rungs | {settings.max_epochs}
        self.warn = warn or log.warning
        self.started = time.monotonic()
        self.epochs, self.worker_s = 0, 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=self.WINDOW)
        self.latest: tuple[float, float, float] | None = None
        self.warned = False

    @property
    def live(self) -> bool:
        return getattr(self, "forecast", None) is not None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.live:
            return
        self.epochs += 1
        seconds = float(result.get("time_this_iter_s", 0.0) or 0.0)
        self.worker_s += seconds
        self.recent.append(seconds)
        if int(result.get("epoch", 0) or 0) in self.rungs:
            self.update()

    def update(self) -> tuple[float, float, float]:
        f = self.forecast
        now = statistics.median(self.recent) if self.recent else f.epoch_s
        band = self.latest = f.at(self.epochs, time.monotonic() - self.started, self.worker_s, now)
        text = f"forecast {f.budget.describe(band[0])} [{f.budget.describe(band[1])}-{f.budget.describe(band[2])}] " \
               f"of {f.budget}"
        if self.progress is not None:
            self.progress.note(text)
        if self.tracker is not None:
            self.tracker.forecast(band, text)
        if f.overrun(band) and not self.warned:
            self.warned = True
            trials = self.settings.trials
            fewer = max(1, int(trials * f.promise[0] / band[0])) if band[0] > 0 else trials
            slower = f"epochs take {now:.3g} s where {f.epoch_s:.3g} s were expected; " if now > 1.2 * f.epoch_s else ""
            self.warn(f"budget: {self.settings.name} is now forecast to spend {f.budget.describe(band[0])} "
                      f"[{f.budget.describe(band[1])}-{f.budget.describe(band[2])}], beyond the "
                      f"{f.budget.describe(f.promise[2])} promised ({slower}{self.epochs} epochs so far); it ends at "
                      f"{f.budget} regardless, with trials unfinished: fewer trials (--trials {fewer} rather than "
                      f"{trials}) or a larger --budget would let them finish")
        return band


class MlflowCallback(DriverCallback):
    """Feeds a ``SweepTracker`` from Ray Tune's driver-side events.

    Each trial's output (what ``print``, warnings and the like write to its stdout and stderr) goes
    to its child run as ``output/trial.log`` when Ray has let go of its trials, at the end of this
    start (completed, stopped, failed and interrupted trials alike), with the error of a failed
    trial. Ray's ``RunConfig(log_to_file=True)`` (``hpsearch.ray.tuner``) writes the two files in
    the trial's working folder on the node that runs it, and ``SyncConfig(sync_artifacts=True)``
    copies them to the trial's folder in the sweep's storage (read from there when the trial ran
    on another node). Neither is whole when Ray tells the driver that a trial ended: the actor
    flushes what was printed since the last report, and Ray makes its last copy, only when the
    actor takes its next trial or stops, with no event for it; by the end of ``Tuner.fit`` every
    actor has stopped. (A stopping actor is copied before it flushes: there the copy in storage
    lacks what the trial printed after its last report.)
    """

    def __init__(self, tracker: SweepTracker) -> None:
        self.tracker, self.space = tracker, tracker.space
        self.reconciled = not tracker.continued
        self.ran: dict[str, Any] = {}  # trial id -> the Ray trial, for each trial this start ran
        self.errors: dict[str, str] = {}  # trial id -> what Ray wrote in its error file
        self.ended: dict[str, Any] = {}  # trial id -> what a finished trial adds to the live figures

    @property
    def live(self) -> bool:
        return getattr(self, "tracker", None) is not None

    def view(self, trial) -> "TrialView":
        return TrialView(trial, self.space)

    def on_step_begin(self, iteration, trials, **info):
        if self.live and not self.reconciled:
            self.reconciled = True  # once, with every restored trial in hand
            reconcile(self.tracker, [self.view(t) for t in trials])

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.live:
            self.tracker.child(self.view(trial))
            self.ran[trial.trial_id] = trial

    def on_step_end(self, iteration, trials, **info):
        if self.live:  # parameters and metrics reach MLflow within FLUSH_SECONDS, results or not
            # What the figures are now, for an abrupt end (interrupt, failure) between two sends.
            self.tracker.live_source = lambda: self.figures(trials)
            if self.tracker.live_due():  # the parent's figures, every LIVE_SECONDS at most
                self.tracker.live(self.figures(trials))
            self.tracker.maybe_flush()

    def figures(self, trials) -> dict[str, float]:
        """The sweep's live figures (``live_figures``) from Ray's trials."""
        s = self.tracker.settings
        return live_figures(list(trials), s.metric, str(s.mode), s.max_epochs, self.ended)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.live:
            self.tracker.add_result(self.view(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.live:
            status = status_of(trial, self.tracker.settings.max_epochs, ended=True)
            self.tracker.end_trial(self.view(trial), status)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if self.live:
            self.tracker.retrying(self.view(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.live:
            path = getattr(trial, "error_file", None)
            text = Path(path).read_text(errors="replace") if path and os.path.exists(path) else None
            self.errors[trial.trial_id] = text or error_text(trial) or ""
            self.tracker.end_trial(self.view(trial), TrialStatus.FAILED, error_text(trial), text)

    def on_experiment_end(self, trials, **info):
        if not self.live:
            return
        try:  # Ray has stopped every trial's actor: their output files are whole
            self.tracker.log_outputs([(self.view(t), *output_folders(t), self.errors.get(t.trial_id))
                                      for t in self.ran.values()])
        except Exception as exc:  # noqa: BLE001 - the trials' output is a help, never worth failing the sweep's end
            logging.getLogger(__name__).warning("trial output not logged: %s: %s", type(exc).__name__, exc)


def output_folders(trial) -> tuple[str | None, str | None]:
    """Where Ray wrote a trial's stdout and stderr (``log_to_file``): the name of its folder in the
    sweep's storage, and its working folder on the node that ran it (a path on this machine only
    when the trial ran here)."""
    name = os.path.basename(str(trial.path).rstrip("/")) if getattr(trial, "path", None) else None
    try:
        local = trial.storage.trial_working_directory
    except (AttributeError, RuntimeError):  # no storage context, or no folder name yet: the trial never ran
        local = None
    return name, local


class TrialView:
    """A Ray trial (pending, running or ended) seen with its config completed by the space (Ray
    leaves inactive values as None); everything else is the trial's own."""

    def __init__(self, trial, space: Space) -> None:
        self._trial, self.config = trial, space.complete(trial.config)

    def __getattr__(self, name):
        return getattr(self._trial, name)

    def __str__(self) -> str:
        return str(self._trial)


def _warm_end_imports() -> None:

    try:
        # The report draws on its own Agg figures (analysis.figure): its modules, not pyplot, whose
        # import would pick a backend for the whole process.
        for name in ("matplotlib.figure", "matplotlib.backends.backend_agg", "optuna.importance",
                     "optuna.visualization", "mlflow.pytorch", "git"):
            importlib.import_module(name)  # git: MLflow's run context reads the commit through it
        mlflow_compat.warm_requirements_map()
    except Exception as exc:  # noqa: BLE001 - only a head start; the report imports them itself
        logging.getLogger(__name__).debug("groundwork imports: %s", exc)
