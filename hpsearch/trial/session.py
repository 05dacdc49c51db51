"""The trial-side API: what a user's ``train(config)`` calls. It needs no Ray import.

Inside a sweep, ``report`` forwards to Ray Tune (metrics, and a checkpoint so a paused, retried or
resumed trial continues where it stopped). Outside a sweep the same function works too: reports
are kept in ``history`` and ``load_checkpoint`` returns None, so ``train(config)`` runs as a plain
function in a notebook or a unit test.

Example:
    >>> import hpsearch
    >>> def train(config):
    ...     state = hpsearch.load_checkpoint() or {"epoch": 0}
    ...     for epoch in range(state["epoch"] + 1, 4):
    ...         hpsearch.report(epoch=epoch, loss=1.0 / epoch, checkpoint={"epoch": epoch})
    >>> hpsearch.session.history.clear(); train({})
    >>> [r["epoch"] for r in hpsearch.session.history]
    [1, 2, 3]
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from hpsearch.ray.compat import in_tune_session
from hpsearch.vocab import is_whole

_CHECKPOINT_FILE = "state.pt"

# Reports made outside a sweep, newest last (a plain list: this is the no-Ray fallback).
history: list[dict[str, Any]] = []


class TrialFailed(RuntimeError):
    """Raised by a trainable to end its trial as failed with a reason (e.g. a diverged loss)."""


@dataclass(frozen=True)
class Group:
    """This process is one worker of a multi-worker trial (see ``hpsearch.trial.workers``): its rank, the
    group's size, and the checkpoint the group starts from (the Tune trial's, after a pause, a retry
    or a resume; None for a fresh start)."""

    rank: int
    size: int
    start: Any = None


# Set in each worker of a multi-worker trial while the user's train(config) runs; None otherwise.
group: Group | None = None


def in_sweep() -> bool:
    """True inside a trial run by Ray Tune (in a multi-worker trial: in each of its workers)."""
    if group is not None:
        return True
    # A Tune trial's process has Ray loaded; without it this is a plain process (a notebook, a unit
    # test), which then need not pay for importing Ray to learn so.
    return "ray" in sys.modules and in_tune_session()


def _plain(name: str, value: Any) -> float | int | str | bool:
    """Metrics must be plain numbers: tensors and numpy scalars are converted, others refused."""
    if isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"report: metric {name} must be a number, got {type(value).__name__}")


@dataclass
class CheckpointPolicy:
    """When a trial's checkpoint is worth keeping: at the epochs where the scheduler may pause or
    stop it (a paused trial resumes from there; a stopped one may hold the best model), at its
    last epoch, and otherwise once ``every_s`` seconds have passed since the last one kept.

    Writing and copying a checkpoint every epoch cost 6-9% of the benchmark's worker time; the
    trade is that after a crash at most ``every_s`` seconds of a trial's work repeat.

    Example:
        >>> p = CheckpointPolicy(frozenset({1, 3}), last=9, every_s=3600)
        >>> [e for e in range(1, 10) if p.due(e)]
        [1, 3, 9]
    """

    epochs: frozenset[int]
    last: int
    every_s: float
    since: float = field(default_factory=time.monotonic)  # when the last checkpoint was kept

    def due(self, epoch: int) -> bool:
        return epoch in self.epochs or epoch >= self.last or time.monotonic() - self.since >= self.every_s

    def kept(self) -> None:
        self.since = time.monotonic()


# The policy of the trial running in this process (set by the trial entry point; None: every epoch).
policy: CheckpointPolicy | None = None


@contextmanager
def checkpoint_policy(chosen: CheckpointPolicy) -> Iterator[CheckpointPolicy]:
    """Apply ``chosen`` to the reports made inside the block (one trial's run)."""
    global policy
    policy = chosen
    try:
        yield chosen
    finally:
        policy = None  # a reused actor's next trial gets its own


def report(epoch: int, checkpoint: Any = None, **metrics: Any) -> None:
    """Report one epoch's metrics, and optionally a checkpoint (any picklable object, e.g. state
    dicts, or a function returning one: it is called only when the checkpoint will be kept).

    ``epoch`` counts from 1 and is the budget unit the schedulers cut on. Inside a sweep the
    checkpoint is kept where the sweep's ``CheckpointPolicy`` says, not necessarily every epoch.
    """
    if not is_whole(epoch) or epoch < 1:
        raise ValueError(f"report: epoch must be a whole number >= 1, got epoch={epoch!r}")
    values = {"epoch": epoch, **{k: _plain(k, v) for k, v in metrics.items()}}
    if not in_sweep():
        history.append(values)
        return
    import ray  # Ray: only where Ray runs, so `import hpsearch` stays light

    values["node_id"] = ray.get_runtime_context().get_node_id()  # where it ran (several nodes may share an IP)
    if group is not None:
        return _report_in_group(values, checkpoint)
    from ray import tune  # Ray: only where Ray runs, so `import hpsearch` stays light

    if checkpoint is None or (policy is not None and not policy.due(epoch)):
        tune.report(values)
        return
    with _in_memory(checkpoint) as (fs, folder):  # Ray copies it into the trial's storage before report returns
        tune.report(values, checkpoint=tune.Checkpoint(folder, filesystem=fs))


_memory: Any = None  # the process's in-memory pyarrow filesystem (_in_memory)


@contextmanager
def _in_memory(checkpoint: Any) -> Iterator[tuple[Any, str]]:
    """``checkpoint`` (or what the function ``checkpoint`` returns) saved in a folder of an
    in-memory filesystem: (that filesystem, the folder), for Ray to copy into the trial's storage.

    Ray always copies a reported checkpoint's folder into storage; saved to a temporary folder on
    disk first, every checkpoint was written twice (and read once more, and deleted). Serialised in
    memory, the copy into storage is its one write. For a 0.6 MB model and optimizer state, saving
    and copying took 2.9-11 ms through a folder on disk, 1.7-3.2 ms through memory (a busy 2-core
    machine); inside a trial, ~1 ms of the ~15 ms a report with a checkpoint takes (most of it is
    Ray's: the hand-over to the driver, the copy's set-up).
    """
    global _memory
    import torch  # torch: only where a model trains

    if _memory is None:
        # fsspec (torch needs it) and pyarrow (Ray does): ~0.1 s each, only in a trial that checkpoints
        from fsspec.implementations.memory import MemoryFileSystem
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        _memory = PyFileSystem(FSSpecHandler(MemoryFileSystem()))
    state = checkpoint() if callable(checkpoint) else checkpoint
    folder = f"/hpsearch-ckpt-{os.getpid()}-{time.monotonic_ns()}"
    _memory.create_dir(folder)
    try:
        with _memory.open_output_stream(f"{folder}/{_CHECKPOINT_FILE}") as out:
            torch.save(state, out)
        if policy is not None:
            policy.kept()
        yield _memory, folder
    finally:
        _memory.delete_dir(folder)


def _report_in_group(values: dict[str, Any], checkpoint: Any) -> None:
    """Every rank reports (Ray Train's report is a barrier); only rank 0's metrics reach the trial,
    and only rank 0 writes the checkpoint, where the policy says (the ranks hold the same model)."""
    from ray import train  # Ray: only where Ray runs, so `import hpsearch` stays light

    assert group is not None
    keep = group.rank == 0 and checkpoint is not None and (policy is None or policy.due(values["epoch"]))
    if not keep:
        train.report(values)
        return
    with _in_memory(checkpoint) as (fs, folder):  # Ray Train copies it to the run's storage before report returns
        train.report(values, checkpoint=train.Checkpoint(folder, filesystem=fs))


def load_checkpoint() -> Any:
    """The object last passed as ``checkpoint`` to ``report`` for this trial, or None."""
    if not in_sweep():
        return None
    if group is not None:
        ckpt = group.start
    else:
        from ray import tune  # Ray: only where Ray runs, so `import hpsearch` stays light

        ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return read_checkpoint_dir(d)


def read_checkpoint_dir(directory: str) -> Any:
    """The object ``report`` saved in a checkpoint directory, or None if it holds none."""
    import torch  # torch: only where a model trains

    path = os.path.join(directory, _CHECKPOINT_FILE)
    if not os.path.exists(path):
        return None
    return torch.load(path, weights_only=False, map_location="cpu")


def check_finite(epoch: int, **values: float) -> None:
    """End the trial as failed when a loss is NaN or infinite, instead of burning its budget."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise TrialFailed(f"diverged: {name}={value} at epoch {epoch}")
