"""Ray Tune driver-callback plumbing shared by the progress display and MLflow tracking.

Driver side only: this module imports Ray Tune.
"""

from __future__ import annotations

import signal
import threading

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, TBXLoggerCallback


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
