"""Checkpoints across a sweep's life: every one kept while it runs (a resume may name any), each
trial's latest kept after it ends, and experiment snapshots as frequent as the trials' checkpoints.

Driver side.
"""

from __future__ import annotations

import json
import os
import pickletools
import re
from contextlib import contextmanager
from pathlib import Path

from hpsearch.storage import Location


def prune_checkpoints(trials, sweep: Location) -> int:
    """At a sweep's end, each trial's checkpoints but its latest, in the sweep's storage (``sweep``:
    its folder, local or in a bucket); returns how many were deleted.

    During a sweep Ray keeps them all (``num_to_keep=None``): Ray deletes a superseded checkpoint
    when it registers a new one, but uploads the experiment snapshot that stops naming it only
    later (at the step's end, asynchronously), so a driver killed in between left a snapshot
    naming a deleted checkpoint, and resume failed with "Could not recover from checkpoint as it
    does not exist on storage anymore". Once the sweep has ended no resume needs them.
    """
    deleted = 0
    for trial in trials:
        latest = trial.checkpoint
        keep = Path(latest.path).name if latest is not None else None
        if not getattr(trial, "path", None):
            continue
        for path in (sweep / Path(trial.path).name).children():
            if path.name.startswith("checkpoint_") and path.name != keep:
                path.remove()
                deleted += 1
    return deleted


@contextmanager
def snapshot_period(checkpoint_every_s: float):
    """Ray's experiment snapshots (what a resume starts from) at least as often as trials keep
    checkpoints, down to one a second, while a sweep runs.

    A resume restarts each trial from the checkpoint the latest snapshot names, so the work a crash
    repeats is up to ``checkpoint_every_s`` plus the snapshot's age. Ray snapshots every 10 s or
    more ("auto": at most 5% of the driver's time); that stays when trials checkpoint every 10 s
    or less often. ``TUNE_GLOBAL_CHECKPOINT_S`` set by the user wins. Ray reads it when a run starts.
    """
    name = "TUNE_GLOBAL_CHECKPOINT_S"
    if name in os.environ or checkpoint_every_s >= 10:
        yield
        return
    os.environ[name] = f"{max(checkpoint_every_s, 1.0):g}"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def cut_off_snapshot(sweep: Location) -> str | None:
    """The name of a file of the experiment snapshot in ``sweep`` (a sweep's folder, local or in a
    bucket) that was cut off while it was written, or None if each is whole.

    Ray reads the newest ``.json`` and ``.pkl`` file of each kind at an experiment's top level when
    it restores it: the experiment state (JSON) and the searcher's, the callbacks' and the Tuner's
    state (pickles). One it cannot read makes Ray start the experiment over, which fails on a sweep's
    pre-set points. hpsearch keeps its snapshots whole (``compat.consistent_snapshots``); a sweep
    snapshotted before that, or on a disk that filled, may still hold a cut-off file.
    """
    newest: dict[str, Location] = {}
    for file in sweep.files():  # by name: each kind's newest comes last
        if file.name.endswith((".json", ".pkl")):
            newest[_SESSION.sub("", file.name)] = file
    for file in newest.values():
        if not _whole(file.read_bytes()):
            return file.name
    return None


# Each start of an experiment writes its own snapshot files, named by that start's time
# (``experiment_state-2026-12-05_02-03-16.json``); Ray reads only the newest of each kind, by name,
# so an earlier start's file cut off by the crash that start ended with is never read again.
_SESSION = re.compile(r"-\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(?=\.(json|pkl)$)")


def _whole(data: bytes) -> bool:
    """Whether a pickle (protocol 2 or later: it opens with 0x80) runs to its STOP, or else the
    text parses as JSON; nothing is unpickled."""
    try:
        if data[:1] == b"\x80":
            for _ in pickletools.genops(data):
                pass
        else:
            json.loads(data)
    except ValueError:
        return False
    return True
