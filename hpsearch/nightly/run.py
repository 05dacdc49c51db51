"""Scheduled nightly tuning: one sweep a night, safe to start from a timer, a verdict each morning.

    hpsearch nightly scripts/nightly/mlp.toml            # tonight (today's date)
    hpsearch nightly scripts/nightly/mlp.toml --date 2026-11-22

One start of ``hpsearch nightly``:

1. reads and checks the config (a mistake: one line, exit 2, nothing started);
2. takes the lock ``<storage>/<name>.nightly/lock`` (another copy running: exit 3, nothing done;
   a lock left by a dead process is free again: the kernel drops it with the process);
3. finishes any night that was interrupted: its Ray experiment is resumed (finished trials kept,
   unfinished ones continue from checkpoints), or, if Ray had saved nothing, it is closed;
4. runs tonight's sweep ``<name>-<date>`` (unless tonight is already done: then it only prints
   the verdict again). The best configurations of earlier nights are evaluated first, and a
   configuration already evaluated with the same budget, data and code version is not trained
   again: its recorded curve is reported again (marked ``hpsearch.reused_from`` in MLflow);
5. stops running trials at the deadline, records what finished, and writes the verdict: Markdown
   on stdout, in ``<storage>/<name>.nightly/verdicts/<date>.md``, and on the night's MLflow
   parent run (``verdict.md``, its description, ``hpsearch.verdict*`` tags).

Exit status: 0 tonight is fine (first night, better, or within the threshold), 1 tonight is worse
than the best of recent nights by more than ``regression_threshold`` or produced no result,
2 bad input, 3 another copy holds the lock.

The record of every night (best, counts, each trial's curve) is ``ledger.json`` in the same
folder; it is what warm start, reuse and the verdict read, so keep ``storage`` on a disk that
survives between runs.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from hpsearch.engine import prepare, prepare_resume, resume_prepared, run_prepared
from hpsearch.nightly.config import NightlyConfig
from hpsearch.nightly.ledger import Ledger, NightStatus, reusable, trial_entries, warm_start_points
from hpsearch.nightly.verdict import EXIT_OK, Verdict, judge, record_verdict
from hpsearch.record import PreparedSweep
from hpsearch.results import SweepResult
from hpsearch.storage import Location, as_location
from hpsearch.vocab import VERSION

EXIT_BUSY = 3

# -- versions: when may a recorded result stand in for training? -----------------------------

def code_version(cfg: NightlyConfig, space_path: str | None) -> str:
    """The configured ``code_version``, else a hash of the space module's text, hpsearch's version
    and, where the module lives in git, the commit and any uncommitted change."""
    if cfg.code_version:
        return cfg.code_version
    h = hashlib.sha256(VERSION.encode())
    if space_path:
        h.update(Path(space_path).read_bytes())
        folder = str(Path(space_path).parent)
        for args in (["rev-parse", "HEAD"], ["diff", "HEAD"]):
            try:
                h.update(subprocess.run(["git", "-C", folder, *args], capture_output=True, timeout=30).stdout)
            except (OSError, subprocess.SubprocessError):
                break
    return h.hexdigest()[:12]


def reuse_key(prep: PreparedSweep, cfg: NightlyConfig) -> str:
    """Budget, data and code version: a trial's curve depends on these and on its config only
    (the scheduler decides how far a trial goes, not what it reports at an epoch)."""
    data = prep.data.version() if prep.data is not None else "none"
    return f"epochs={prep.settings.max_epochs} data={data} code={code_version(cfg, prep.space_path)}"


# -- one start --------------------------------------------------------------------------------

class Busy(RuntimeError):
    """Another nightly of the same name holds the lock."""

def _lock_folder(folder: Location) -> Path:
    """Where the nightly's lock lives: beside its ledger on a local disk; with storage in a bucket,
    on this machine (an object store has no lock that dies with its holder), so two copies on one
    machine exclude each other and a scheduler must not start two machines at once (a CronJob's
    ``concurrencyPolicy: Forbid``)."""
    if folder.is_local:
        local = folder.local
    else:
        local = Path(os.environ.get("HPSEARCH_CACHE", "~/.cache/hpsearch")).expanduser() / "nightly-locks" / \
            hashlib.sha256(folder.uri.encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    return local


@contextmanager
def _lock(folder: Path) -> Iterator[str | None]:
    """An exclusive lock for one nightly name. ``flock`` locks die with their process, so a crashed
    run leaves no lock behind; the holder file says who held it, for the message and the takeover
    note. Yields the dead holder taken over from, if any."""

    lock = FileLock(str(folder / "lock"), timeout=0)
    holder = folder / "lock.holder"
    try:
        lock.acquire()
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "unknown"
        raise Busy(f"another hpsearch nightly holds {folder / 'lock'} ({who}); nothing done") from None
    try:
        stale = holder.read_text().strip() if holder.exists() else None
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%Y-%m-%d %H:%M:%S}\n")
        yield stale
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


@dataclass
class NightlyOutcome:
    exit_code: int
    verdicts: dict[str, Verdict]  # night -> verdict, for the nights finished by this start
    results: dict[str, SweepResult]
    messages: list[str]


def _prepare_night(cfg: NightlyConfig, night: Date) -> PreparedSweep:
    s = cfg.sweep
    return prepare(cfg.space, s.replace(seed=s.seed + night.toordinal(), name=f"{cfg.name}-{night.isoformat()}",
                                        experiment=s.experiment or cfg.name))


def run_nightly(cfg: NightlyConfig, night: Date, *, progress: bool = True, log=print) -> NightlyOutcome:
    """One start (see the module docstring). Raises ValueError for bad input before any compute,
    ``Busy`` when another copy runs."""
    prep = _prepare_night(cfg, night)  # every check of a sweep, before the lock and before Ray
    key = reuse_key(prep, cfg)
    folder = as_location(prep.settings.storage) / f"{cfg.name}.nightly"
    start = time.time()
    deadline = start + cfg.deadline_hours * 3600
    outcome = NightlyOutcome(EXIT_OK, {}, {}, [])

    def say(message: str) -> None:
        outcome.messages.append(message)
        log(message)

    with _lock(_lock_folder(folder)) as stale:
        if stale:
            say(f"Took over the lock of a run that is gone ({stale}).")
        ledger = Ledger(folder)
        for name in sorted(d for d, e in ledger.nights.items() if e["status"] == NightStatus.RUNNING):
            _finish_interrupted(cfg, ledger, name, prep.settings.storage, deadline, progress, outcome, say)
            if any(r.interrupted for r in outcome.results.values()):
                return outcome  # interrupted again: the next start goes on
        tonight = night.isoformat()
        entry = ledger.nights.get(tonight)
        if entry is not None and entry["status"] == NightStatus.DONE:
            if tonight not in outcome.verdicts:
                say(f"Night {tonight} is already done ({prep.settings.name}); its verdict:")
                say((folder / "verdicts" / f"{tonight}.md").read_text())
                outcome.exit_code = max(outcome.exit_code, entry["verdict"]["exit_code"])
            return outcome
        if time.time() >= deadline:
            say(f"No time left before the deadline for night {tonight}; it was not started.")
            return outcome
        prep.deadline = deadline
        prep.points_to_evaluate = warm_start_points(ledger, tonight, prep.space, prep.settings.mode, cfg.warm_start)
        prep.reuse = reusable(ledger, tonight, key)
        ledger.nights[tonight] = {
            "night": tonight, "name": cfg.name, "sweep": prep.settings.name, "status": str(NightStatus.RUNNING), "key": key,
            "metric": prep.settings.metric, "mode": prep.settings.mode, "started": start,
            "warm_started": len(prep.points_to_evaluate),
        }
        ledger.save()  # before Ray starts: a kill from here on leaves a night to resume
        say(f"Night {tonight}: sweep {prep.settings.name}, {len(prep.points_to_evaluate)} earlier winners first, "
            f"{len(prep.reuse)} recorded results reusable, deadline {datetime.fromtimestamp(deadline):%H:%M:%S}.")
        result = run_prepared(prep, address=cfg.address, progress=progress)
        _close_night(cfg, ledger, tonight, prep, result, outcome, say)
    return outcome


def _finish_interrupted(cfg, ledger: Ledger, night: str, storage: str, deadline: float, progress: bool, outcome,
                        say) -> None:
    from hpsearch.ray.tuner import can_resume  # Ray Tune: only when a night was interrupted

    entry = ledger.nights[night]
    path = as_location(storage) / entry["sweep"]
    if not can_resume(path.uri):
        # Killed before Ray saved anything: there is nothing to resume; tonight starts it anew.
        del ledger.nights[night]
        ledger.save()
        say(f"Night {night} was interrupted before any trial was saved; it is started again if it is tonight.")
        return
    say(f"Night {night} was interrupted; resuming {entry['sweep']}.")
    prep = prepare_resume(entry["sweep"], storage=storage)
    prep.deadline = deadline
    prep.reuse = reusable(ledger, night, entry["key"])
    result = resume_prepared(prep, address=cfg.address, progress=progress)
    _close_night(cfg, ledger, night, prep, result, outcome, say)


def _close_night(cfg, ledger: Ledger, night: str, prep: PreparedSweep, result: SweepResult, outcome, say) -> None:
    if result.interrupted:  # the night stays "running": the next start resumes it
        outcome.exit_code = max(outcome.exit_code, result.signal_exit)
        outcome.results[night] = result
        say(f"interrupted ({result.signal}): the next start resumes night {night} ({result.name})")
        return
    entry = ledger.nights[night]
    trials = trial_entries(result, prep.space)
    best = None
    if result.best is not None:
        t = next(t for t in trials if t["trial_id"] == result.best.trial_id)
        best = {"trial_id": t["trial_id"], "metric": t["metric"], "config": t["config"], "epochs": t["epochs"],
                "reused": t["trained_epochs"] == 0 and t["reused_epochs"] > 0, "source": t["source"]}
    entry.update(
        status=str(NightStatus.DONE), finished=time.time(), wall_s=result.wall_s, trials=trials, best=best,
        counts=result.counts(), trials_total=len(trials),
        reused_trials=sum(1 for t in trials if t["reused_epochs"] and not t["trained_epochs"]),
        reused_epochs=sum(t["reused_epochs"] for t in trials), trained_epochs=sum(t["trained_epochs"] for t in trials),
        deadline_hit=result.deadline_hit,
        parent_run_id=(result.tracking or {}).get("parent_run_id"),
    )
    entry.setdefault("warm_started", 0)
    verdict = judge(cfg, ledger, night)
    record_verdict(entry, verdict, prep.settings.tracking_uri, ledger.folder)
    ledger.save()
    outcome.verdicts[night], outcome.results[night] = verdict, result
    outcome.exit_code = max(outcome.exit_code, verdict.exit_code)
    say(verdict.markdown)
