"""Ray Tune driver-callback plumbing shared by the progress display and MLflow tracking.

Driver side only: this module imports Ray Tune.
"""

from __future__ import annotations

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


class NoTensorBoard(TBXLoggerCallback):
    """Stands in for Ray's TensorBoard logger, so that Ray does not add its own.

    MLflow already holds every curve. Measured on 400 no-op trials, Ray's logger spent about a
    third of the driver's time: it imports torch into the driver (~2 s) and flushes an event file
    for every result. Ray's CSV and JSON loggers stay (resume and the nightly ledger read
    result.json).
    """

    def __init__(self) -> None:
        pass

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration, trial, result) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


class NoCSV(CSVLoggerCallback):
    """Stands in for Ray's CSV logger (progress.csv), so that Ray does not add its own: the same
    results are in result.json, which everything reads, and in MLflow. One file fewer to open per
    trial and to write per result on the driver.

    (A CSV written across a resume was also misleading: Ray appends the resumed rows in the new
    result's key order under the old header.)
    """

    def __init__(self) -> None:
        pass

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration, trial, result) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass
