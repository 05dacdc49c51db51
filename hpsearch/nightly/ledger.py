"""The nightly ledger: every night's record, and what later nights draw from it.

``<storage>/<name>.nightly/ledger.json`` holds, per night, its status, best trial, counts and each
trial's curve and last real checkpoint. Warm start (the best configurations of earlier nights),
reuse (a configuration already evaluated under the same budget, data and code is not trained
again) and the verdict all read it.

Nothing recorded is ever dropped: a night run again (``--force``, or one restarted because nothing
of it was saved) moves its earlier entry to ``superseded``, stamped with when and why, where warm
start, reuse and the verdict no longer read it.

Example:
    >>> import tempfile
    >>> ledger = Ledger(Path(tempfile.mkdtemp()))
    >>> ledger.nights["2026-11-01"] = {"status": "done", "trials": []}
    >>> ledger.save(); [sorted(e) for e in Ledger(ledger.folder).done_before("2026-11-02")]
    [['status', 'trials']]
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hpsearch.results import SweepResult, read_results
from hpsearch.space import Fixed, Space
from hpsearch.storage import Location, as_location
from hpsearch.text import MASK, mask_config
from hpsearch.trial.entry import Replay
from hpsearch.vocab import RAY_KEYS, REPLAY_MARK, REUSED_KEY, Mode, TrialStatus, Words, is_number


class NightStatus(Words):
    """Where a night stands in the ledger."""

    RUNNING = "running"  # started and not finished: the next start resumes it
    DONE = "done"  # finished, with its verdict
    CRASHED = "crashed"  # ended by an error (its first line is "error"): a start for the same night retries it


class Ledger:
    """Every night's record, in ``<storage>/<name>.nightly/ledger.json`` (rewritten atomically)."""

    def __init__(self, folder: Location | Path) -> None:
        self.folder = folder = as_location(folder)
        self.path = folder / "ledger.json"
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.nights: dict[str, dict[str, Any]] = saved.get("nights", {})
        self.superseded: list[dict[str, Any]] = saved.get("superseded", [])  # entries of nights run again

    def save(self) -> None:
        self.path.write_text(json.dumps({"nights": self.nights, "superseded": self.superseded},
                                        indent=1, sort_keys=True))  # whole or not at all

    def supersede(self, night: str, reason: str, verdict: str | None = None) -> dict[str, Any]:
        """Move ``night``'s entry to ``superseded`` (with when, why and its verdict's Markdown, which
        the next verdict file replaces); the caller saves. Returns the moved entry.

        Example:
            >>> import tempfile
            >>> ledger = Ledger(Path(tempfile.mkdtemp()))
            >>> ledger.nights["2026-11-01"] = {"status": "done", "sweep": "n-2026-11-01"}
            >>> ledger.supersede("2026-11-01", "--force")["superseded_reason"], ledger.nights
            ('--force', {})
        """
        entry = self.nights.pop(night)
        entry.update(superseded_at=time.time(), superseded_reason=reason)
        if verdict is not None:
            entry["verdict_markdown"] = verdict
        self.superseded.append(entry)
        return entry

    def sweeps(self) -> set[str]:
        """Every sweep name the ledger has recorded, superseded ones included."""
        return {e["sweep"] for e in [*self.nights.values(), *self.superseded] if "sweep" in e}

    def done_before(self, night: str) -> list[dict[str, Any]]:
        return [self.nights[d] for d in sorted(self.nights) if d < night and self.nights[d]["status"] == NightStatus.DONE]


def warm_start_points(ledger: Ledger, night: str, space: Space, mode: Mode, k: int) -> list[dict[str, Any]]:
    """The ``k`` best distinct configurations of earlier nights that still fit ``space``."""
    seen, scored = set(), []
    for entry in ledger.done_before(night):
        for t in entry["trials"]:
            if t["metric"] is not None and t["status"] != TrialStatus.FAILED and math.isfinite(t["metric"]):
                scored.append(t)
    scored.sort(key=lambda t: Mode(mode).rank(t["metric"]))
    points = []
    for t in scored:
        if len(points) >= k:
            break
        try:
            config = space.validate_config(unmask(space, t["config"]))
        except ValueError:  # the space changed since: this winner is no longer a valid point
            continue
        h = space.config_hash(config)
        if h not in seen:
            seen.add(h)
            points.append(config)
    return points


def earlier_trials(ledger: Ledger, night: str, space: Space, metric: str) -> list[dict[str, Any]]:
    """Every trial of the nights done before ``night`` that still fits ``space``, as TPE is told
    them (``PreparedSweep.told``): each configuration once, its latest night's."""
    out: dict[str, dict[str, Any]] = {}
    for entry in ledger.done_before(night):
        for t in entry.get("trials", []):
            try:
                config = space.validate_config(unmask(space, t["config"]))
            except ValueError:  # the space changed since
                continue
            curve = [row.get(metric) for row in t.get("curve", []) if is_number(row.get(metric))]
            out[space.config_hash(config)] = {"config": config, "state": str(t.get("status")), "value": t.get("metric"),
                                              "curve": curve, "night": entry.get("night", "")}
    return list(out.values())


def unmask(space, config: dict[str, Any]) -> dict[str, Any]:
    """A configuration as the ledger keeps it (secrets masked), with each masked fixed value taken
    from the space again; a masked tuned value stays masked (that point no longer validates)."""
    return {k: space[k].value if v == MASK and k in space and isinstance(space[k], Fixed) else v
            for k, v in config.items()}


def reusable(ledger: Ledger, night: str, key: str) -> dict[str, Replay]:
    """config_hash -> the longest curve recorded under the same budget, data and code version."""
    out: dict[str, Replay] = {}
    for entry in ledger.done_before(night):
        if entry["key"] != key:
            continue
        for t in entry["trials"]:
            if t["status"] == TrialStatus.FAILED or not t["curve"]:
                continue
            ckpt = t.get("checkpoint")
            replay = Replay(
                curve=tuple(t["curve"]), source=t["source"],
                checkpoint=ckpt["path"] if ckpt and as_location(ckpt["path"]).is_dir() else None,
                checkpoint_epoch=ckpt["epoch"] if ckpt else 0,
            )
            old = out.get(t["config_hash"])
            if old is None or len(replay.curve) >= len(old.curve):
                out[t["config_hash"]] = replay
    return out


def trial_entries(result: SweepResult, space: Space) -> list[dict[str, Any]]:
    """What a later night needs of each trial: its curve, its last real checkpoint, where it came from."""
    out = []
    sweep = as_location(result.path)
    for r in result.trials:
        # The trial's folder in the sweep's storage (where its checkpoints are, local or in a bucket).
        folder = sweep / Path(r.path).name if r.path else None
        # The driver's copy, or (a driver that ran on the cluster, through ray://) the storage's.
        rows = read_results(r.path) or read_results(folder)
        by_epoch: dict[int, dict[str, Any]] = {}
        ckpt = None
        for row in rows:
            epoch = int(row.get("epoch", 0) or 0)
            if epoch < 1:
                continue
            by_epoch[epoch] = row  # a resumed trial may repeat an epoch: the later report stands
            name = row.get("checkpoint_dir_name")
            if name and folder and (folder / name).is_dir() and not (folder / name / REPLAY_MARK).exists():
                ckpt = {"epoch": epoch, "path": (folder / name).uri}
        curve = [{"epoch": e, **{k: v for k, v in row.items() if k not in RAY_KEYS and k != REUSED_KEY
                                 and is_number(v)}}
                 for e, row in sorted(by_epoch.items())]
        replayed = sum(1 for row in by_epoch.values() if REUSED_KEY in row)
        sources = [row[REUSED_KEY] for row in by_epoch.values() if REUSED_KEY in row]
        out.append({
            "trial_id": r.trial_id, "config": mask_config(r.config), "config_hash": space.config_hash(r.config),
            "status": r.status, "epochs": r.epochs, "metric": r.metric, "curve": curve, "checkpoint": ckpt,
            "reused_epochs": replayed, "trained_epochs": len(by_epoch) - replayed,
            "source": sources[0] if sources else f"{result.name}/trial-{r.trial_id}",
        })
    return out
