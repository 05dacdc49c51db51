"""Scheduled nightly tuning: one sweep a night, safe to start from a timer, a verdict each morning.

    hpsearch nightly scripts/nightly/mlp.toml                      # tonight (today's date)
    hpsearch nightly scripts/nightly/mlp.toml --date 2026-11-22
    hpsearch nightly scripts/nightly/mlp.toml --dry-run            # what tonight would do; writes nothing
    hpsearch nightly scripts/nightly/mlp.toml --date 2026-11-22 --force   # run a done night again

One start of ``hpsearch nightly``:

1. reads and checks the config, loads the space module and the data, resolves the reuse key and
   checks that storage and the tracking store can be used (a mistake: one line, exit 2, nothing
   started);
2. takes the lock ``<storage>/<name>.nightly/lock`` (another copy running: exit 5, nothing done;
   a lock left by a dead process is free again: the kernel drops it with the process);
3. finishes any night that was interrupted: its Ray experiment is resumed (finished trials kept,
   unfinished ones continue from checkpoints), or, if Ray had saved nothing, it is started again;
   tonight, if an earlier start crashed on it, is tried again the same way;
4. runs tonight's sweep ``<name>-<date>`` (unless tonight is already done: then it only prints
   the verdict again; ``--force`` runs it again as ``<name>-<date>-r2``, ``-r3``..., and the
   earlier entry stays in the ledger's ``superseded`` list). The best configurations of earlier
   nights are evaluated first, and a configuration already evaluated with the same budget, data
   and code version is not trained again: its recorded curve is reported again (marked
   ``hpsearch.reused_from`` in MLflow);
5. stops running trials at the deadline, records what finished, and writes the verdict: Markdown
   on stdout, in ``<storage>/<name>.nightly/verdicts/<date>.md``, and on the night's MLflow
   parent run (``verdict.md``, its description, ``hpsearch.verdict*`` tags);
6. runs the config's ``notify`` command, if any, with the outcome in its environment
   (``HPSEARCH_EXIT_CODE``, ``HPSEARCH_OUTCOME``, ``HPSEARCH_VERDICT``: the verdict file's path,
   ``HPSEARCH_NIGHT``, ``HPSEARCH_NIGHTS``, ``HPSEARCH_NIGHTLY``). Its failure or timeout is a
   warning; the exit status stays the night's.

Exit status: ``hpsearch.nightly.outcome``; the reuse key: ``hpsearch.nightly.key``.

The record of every night (best, counts, each trial's curve) is ``ledger.json`` in the same
folder; it is what warm start, reuse and the verdict read, so keep ``storage`` on a disk that
survives between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

from hpsearch.engine import prepare, prepare_resume, resume_prepared, run_prepared
from hpsearch.environment import cache_folder
from hpsearch.nightly.config import NightlyConfig
from hpsearch.nightly.key import ReuseKey, key_fields, reuse_allowed, reuse_key
from hpsearch.nightly.ledger import Ledger, NightStatus, reusable, trial_entries, warm_start_points
from hpsearch.nightly.outcome import EXIT_BAD_INPUT, EXIT_CRASHED, NightlyOutcome, notify
from hpsearch.nightly.tune import tell_tpe, tune_night
from hpsearch.nightly.verdict import EXIT_OK, judge, record_verdict
from hpsearch.record import PreparedSweep
from hpsearch.results import SweepResult, read_results
from hpsearch.search.schedulers import plan_budget
from hpsearch.simulate.budget import fit_budget
from hpsearch.space import Fixed
from hpsearch.space.modules import SpaceModule, load_space_module
from hpsearch.storage import Location, as_location
from hpsearch.text import MASK, first_line, is_secret
from hpsearch.tracking.uri import check_reachable, resolve_tracking_uri, tracking_uri_name
from hpsearch.vocab import sqlite_path

# -- one start --------------------------------------------------------------------------------

class Busy(RuntimeError):
    """Another nightly of the same name holds the lock."""


def _lock_folder(folder: Location, create: bool = True) -> Path:
    """Where the nightly's lock lives: beside its ledger on a local disk; with storage in a bucket,
    on this machine (an object store has no lock that dies with its holder), so two copies on one
    machine exclude each other and a scheduler must not start two machines at once (a CronJob's
    ``concurrencyPolicy: Forbid``)."""
    if folder.is_local:
        local = folder.local
    else:
        local = cache_folder() / "nightly-locks" / hashlib.sha256(folder.uri.encode()).hexdigest()[:16]
    if create:
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


def _prepare_night(cfg: NightlyConfig, night: Date, *, touch_tracking: bool = True) -> tuple[PreparedSweep, SpaceModule]:
    """Every check of tonight's sweep, before the lock and before Ray. ``touch_tracking=False``
    (a dry run): the tracking store is checked without creating a SQLite store's folder."""
    s = cfg.sweep
    module = load_space_module(cfg.space)
    s = s.replace(seed=s.seed + night.toordinal(), name=f"{cfg.name}-{night.isoformat()}",
                  experiment=s.experiment or cfg.name)
    if touch_tracking:
        prep = prepare(module, s)
    else:
        uri = resolve_tracking_uri(s.tracking_uri)
        if uri:
            _check_tracking_read_only(uri, tracking_uri_name(s.tracking_uri))
        prep = prepare(module, s.replace(tracking_uri=False))
        prep.settings = prep.settings.replace(tracking_uri=uri or False)
    if prep.settings.budget:  # the night's settings for its budget, on its earlier nights' curves first
        fit_budget(prep, cfg.given, tracking_uri=prep.settings.tracking_uri, experiment=prep.settings.experiment)
    return prep, module


def _check_tracking_read_only(uri: str, name: str) -> None:
    """``check_reachable`` without its one write (a SQLite store's folder): the nearest folder that
    exists must let this process create the rest."""
    path = sqlite_path(uri)
    if path is None:
        check_reachable(uri, name)  # a server is asked for /health; nothing is written
        return
    if Path(path).exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ValueError(f"{name}: the SQLite store {path} is not readable and writable by this user")
        return
    folder = Path(path).parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot create {str(Path(path).parent)!r} for the SQLite store (not writable)")


def _sweep_name(base: str, storage: Location, ledger: Ledger) -> str:
    """``base``, or ``base-r2``, ``-r3``...: the first name no earlier attempt used, so a night run
    again never writes into an earlier attempt's Ray experiment or MLflow parent run."""
    used = ledger.sweeps()
    name, n = base, 1
    while name in used or (storage / name).exists():
        n += 1
        name = f"{base}-r{n}"
    return name


def run_nightly(cfg: NightlyConfig, night: Date, *, force: bool = False, progress: bool = True,
                log: Callable[[str], Any] = print, warn: Callable[[str], Any] | None = None) -> NightlyOutcome:
    """One start (see the module docstring).

    Args:
        cfg: the nightly's config (``load_config``).
        night: the night to run (its date).
        force: run the night again even if the ledger says it is done; the earlier entry moves to
            the ledger's ``superseded`` list.
        progress: show the live progress bar.
        log: where the night's messages and the verdict go.
        warn: where warnings go (a notify command that failed); default stderr.

    Returns:
        The outcome: its exit status (see ``EXIT_CODES``), verdicts and results by night.

    Raises:
        ValueError: bad input (one line), before any compute where it can be found then.
        Busy: another copy holds the lock.

    Example:
        >>> outcome = run_nightly(load_config("scripts/nightly/mlp.toml"), parse_date(None))  # doctest: +SKIP
        >>> outcome.exit_code  # doctest: +SKIP
        0
    """
    warn = warn or (lambda m: print(m, file=sys.stderr))
    prep, module = _prepare_night(cfg, night)  # every check of a sweep, before the lock and before Ray
    key = reuse_key(prep, cfg, module)
    reuse_ok, no_reuse = reuse_allowed(cfg, key)
    storage = as_location(prep.settings.storage)
    folder = storage / f"{cfg.name}.nightly"
    tonight = night.isoformat()
    start = time.time()
    deadline = start + cfg.deadline_hours * 3600
    outcome = NightlyOutcome(EXIT_OK, {}, {}, [])
    current: list[str] = []  # the night being worked on, for the crash record

    def say(message: str) -> None:
        outcome.messages.append(message)
        log(message)

    with _lock(_lock_folder(folder)) as stale:
        ledger: Ledger | None = None
        acted = True  # False when the start only prints a verdict again: nothing to notify
        try:
            if stale:
                say(f"Took over the lock of a run that is gone ({stale}).")
            ledger = Ledger(folder)
            entry = ledger.nights.get(tonight)
            if entry is not None and force:
                verdict_file = folder / "verdicts" / f"{tonight}.md"
                ledger.supersede(tonight, "--force", verdict_file.read_text() if verdict_file.exists() else None)
                ledger.save()
                say(f"Night {tonight} ({entry.get('sweep')}, {entry['status']}) is run again (--force); its earlier "
                    f"entry stays in the ledger as superseded.")
            elif entry is not None and entry["status"] == NightStatus.CRASHED:
                entry.setdefault("crashes", []).append({"error": entry.pop("error", None), "at": entry.pop("crashed", None)})
                entry["status"] = str(NightStatus.RUNNING)
                ledger.save()
                say(f"Night {tonight} crashed before ({entry['crashes'][-1]['error']}); trying it again.")
            for name in sorted(d for d, e in ledger.nights.items() if e["status"] == NightStatus.RUNNING):
                current[:] = [name]
                _finish_interrupted(cfg, ledger, name, prep.settings.storage, deadline, progress, outcome, say)
                if any(r.interrupted for r in outcome.results.values()):
                    return outcome  # interrupted again: the next start goes on
            current[:] = [tonight]
            entry = ledger.nights.get(tonight)
            if entry is not None and entry["status"] == NightStatus.DONE:
                if tonight not in outcome.verdicts:
                    say(f"Night {tonight} is already done ({entry['sweep']}); its verdict (--force runs it again):")
                    say((folder / "verdicts" / f"{tonight}.md").read_text())
                    outcome.exit_code = max(outcome.exit_code, entry["verdict"]["exit_code"])
                    acted = bool(outcome.verdicts)
                return outcome
            if entry is not None:  # crashed on an earlier night's behalf, or by hand: not tonight's to run
                say(f"Night {tonight} is {entry['status']} in the ledger; --force runs it again.")
                outcome.exit_code = max(outcome.exit_code, entry.get("exit_code", EXIT_CRASHED))
                return outcome
            if time.time() >= deadline:
                say(f"No time left before the deadline for night {tonight}; it was not started.")
                return outcome
            prep.settings = prep.settings.replace(name=_sweep_name(prep.settings.name, storage, ledger))
            prep.deadline = deadline
            prep.points_to_evaluate = warm_start_points(ledger, tonight, prep.space, prep.settings.mode, cfg.warm_start)
            prep.reuse = reusable(ledger, tonight, str(key)) if reuse_ok else {}
            tuning = tune_night(prep, ledger, tonight, cfg)
            told = tell_tpe(prep, ledger, tonight)
            ledger.nights[tonight] = {
                "night": tonight, "name": cfg.name, "sweep": prep.settings.name, "status": str(NightStatus.RUNNING),
                "key": str(key), "key_parts": {**key_fields(key), "code_parts": key.code_parts}, "reuse": reuse_ok,
                "metric": prep.settings.metric, "mode": prep.settings.mode, "started": start,
                "warm_started": len(prep.points_to_evaluate),
                **({"scheduler": tuning.line} if tuning else {}), "tpe_told": told,
            }
            ledger.save()  # before Ray starts: a kill from here on leaves a night to resume
            if not reuse_ok:
                say(f"Not reusing recorded results: {no_reuse}.")
            for line in prep.budget_lines:
                say(line)
            say(f"Night {tonight}: sweep {prep.settings.name}, {len(prep.points_to_evaluate)} earlier winners first, "
                f"{len(prep.reuse)} recorded results reusable, deadline {datetime.fromtimestamp(deadline):%H:%M:%S}.")
            try:
                result = run_prepared(prep, address=cfg.address, progress=progress)
            except Exception as exc:
                if _reported(prep):
                    raise
                # Ray Tune ends a sweep with an error when a trial's last result lacks the metric
                # (its strict metric check): that is this night's answer, no result, not a crash.
                _close_without_result(cfg, ledger, tonight, prep, _masked(error_line(exc), prep), outcome, say)
                return outcome
            _close_night(cfg, ledger, tonight, prep, result, outcome, say)
            return outcome
        except ValueError as exc:  # bad input found only now (a resume's checks, the cluster's size)
            _record_crash(ledger, current, exc, EXIT_BAD_INPUT, outcome, say, warn, prep)
            outcome.exit_code = EXIT_BAD_INPUT
            raise
        except Exception as exc:  # anything else: the night crashed; record it, say one line, exit 4
            _record_crash(ledger, current, exc, EXIT_CRASHED, outcome, say, warn, prep)
            outcome.exit_code = max(outcome.exit_code, EXIT_CRASHED)
            return outcome
        except BaseException:  # a second Ctrl-C, SystemExit: the process is going; tell no one "ok"
            acted = False
            raise
        finally:
            if cfg.notify and acted:
                notify(cfg, outcome, tonight, folder, warn)


def error_line(exc: BaseException) -> str:
    """The line of an error worth reading: its first, or, for an error that carries a whole
    traceback as its text (Ray's TuneError, a trial's RayTaskError), the traceback's last line.

    Example:
        >>> error_line(RuntimeError("Traceback (most recent call last):\\n  File 'x'\\nValueError: bad"))
        'ValueError: bad'
    """
    line = first_line(exc)
    if line.startswith("Traceback"):
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        return lines[-1] if lines else line
    return line


def _masked(line: str, prep: PreparedSweep) -> str:
    """``line`` without the space's secret values (an error may quote a trial's config), cut short."""
    for p in prep.space.params:
        if isinstance(p, Fixed) and is_secret(p.name) and p.value not in (None, ""):
            line = line.replace(str(p.value), MASK)
    return line if len(line) <= 500 else line[:497] + "..."


def _reported(prep: PreparedSweep) -> bool:
    """Whether any trial of the sweep persisted a result with the metric."""
    metric = prep.settings.metric
    return any(metric in row for trial in prep.path.children() for row in read_results(trial))


def _close_without_result(cfg, ledger: Ledger, night: str, prep: PreparedSweep, error: str, outcome, say) -> None:
    """A night Ray ended before any trial reported the metric: done, with the no-result verdict."""
    entry = ledger.nights[night]
    now = time.time()
    entry.update(status=str(NightStatus.DONE), finished=now, wall_s=now - entry["started"], trials=[], best=None,
                 counts={}, trials_total=len(prep.path.children()), reused_trials=0, reused_epochs=0,
                 trained_epochs=0, deadline_hit=False, parent_run_id=None, error=error)
    verdict = judge(cfg, ledger, night)
    record_verdict(entry, verdict, None, ledger.folder)
    ledger.save()
    outcome.verdicts[night] = verdict
    outcome.exit_code = max(outcome.exit_code, verdict.exit_code)
    say(f"No trial reported {prep.settings.metric}; the sweep ended with {error}")
    say(verdict.markdown)


def _record_crash(ledger: Ledger | None, current: list[str], exc: Exception, code: int, outcome: NightlyOutcome,
                  say, warn, prep: PreparedSweep) -> None:
    """What can be recorded of a night an error ended: its ledger entry marked crashed with the
    error's first line (the next start for that night tries it again), and one line."""
    line = _masked(f"{type(exc).__name__}: {error_line(exc)}", prep)
    night = current[0] if current else None
    if night is not None:
        outcome.errors[night] = line
    entry = ledger.nights.get(night) if ledger is not None and night is not None else None
    if entry is not None and entry.get("status") != NightStatus.DONE:
        entry.update(status=str(NightStatus.CRASHED), error=line, crashed=time.time(), exit_code=code)
        try:
            ledger.save()
        except Exception as again:  # the storage itself may be what failed: say so, keep the first error
            warn(f"hpsearch nightly: the ledger could not record the crash: {type(again).__name__}: {first_line(again)}")
    if code == EXIT_CRASHED:
        warn(f"hpsearch nightly: night {night or '?'} crashed: {line}")


def _finish_interrupted(cfg, ledger: Ledger, night: str, storage: str, deadline: float, progress: bool, outcome,
                        say) -> None:
    from hpsearch.ray.tuner import can_resume  # Ray Tune: only when a night was interrupted

    entry = ledger.nights[night]
    path = as_location(storage) / entry["sweep"]
    if not can_resume(path.uri):
        # Killed before Ray saved anything: there is nothing to resume; tonight starts it anew (under
        # another sweep name), and the ledger keeps what it knew of this attempt.
        ledger.supersede(night, "interrupted before any trial was saved")
        ledger.save()
        say(f"Night {night} was interrupted before any trial was saved; it is started again if it is tonight.")
        return
    say(f"Night {night} was interrupted; resuming {entry['sweep']}.")
    prep = prepare_resume(entry["sweep"], storage=storage)
    prep.deadline = deadline
    prep.reuse = reusable(ledger, night, entry["key"]) if entry.get("reuse", True) else {}
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
    try:
        record_verdict(entry, verdict, prep.settings.tracking_uri, ledger.folder)
    except BaseException:
        entry["status"] = str(NightStatus.RUNNING)  # no verdict file: not done; the crash record says why
        raise
    ledger.save()
    outcome.verdicts[night], outcome.results[night] = verdict, result
    outcome.exit_code = max(outcome.exit_code, verdict.exit_code)
    say(verdict.markdown)


# -- a dry run --------------------------------------------------------------------------------

@dataclass
class NightPlan:
    """What a start would do tonight, from ``dry_run``."""

    night: str
    sweep: str  # the sweep's name (a forced re-run gets -r2, -r3...)
    seed: int
    key: ReuseKey
    reuse: bool
    action: str  # "run" | "already done" | "rerun" (--force) | "retry" (crashed before)
    resume_first: list[str]  # interrupted nights a start finishes first
    reusable: int  # configurations with a recorded result under tonight's key
    warm_start: list[dict[str, Any]]
    warm_replayed: int  # of the warm-start points, how many replay a recorded result instead of training
    trials: int
    epochs: int  # the scheduler's plan (plan_budget), before replays
    full_epochs: int  # if every trial ran to the end
    lines: list[str]


def dry_run(cfg: NightlyConfig, night: Date, *, force: bool = False, log: Callable[[str], Any] = print) -> NightPlan:
    """Check the config as a start would (space, data, settings, storage, the tracking store) and
    say what tonight would do; writes nothing: no ledger, no lock, no MLflow run, no Ray.

    Example:
        >>> plan = dry_run(load_config("scripts/nightly/mlp.toml"), parse_date("2026-11-20"))  # doctest: +SKIP
        >>> plan.action, plan.trials  # doctest: +SKIP
        ('run', 32)
    """
    prep, module = _prepare_night(cfg, night, touch_tracking=False)
    key = reuse_key(prep, cfg, module)
    reuse_ok, no_reuse = reuse_allowed(cfg, key)
    s = prep.settings
    storage = as_location(s.storage)
    folder = storage / f"{cfg.name}.nightly"
    tonight = night.isoformat()
    ledger = Ledger(folder)  # reads ledger.json if there is one; writes nothing
    entry = ledger.nights.get(tonight)
    status = entry["status"] if entry else None
    action = ("rerun" if force and entry else "already done" if status == NightStatus.DONE
              else "retry" if status == NightStatus.CRASHED else "run")
    resume = sorted(d for d, e in ledger.nights.items() if e["status"] == NightStatus.RUNNING and not (force and d == tonight))
    name = s.name if entry is None else _sweep_name(s.name, storage, ledger) if action == "rerun" else entry["sweep"]
    warm = warm_start_points(ledger, tonight, prep.space, s.mode, cfg.warm_start)
    recorded = reusable(ledger, tonight, str(key)) if reuse_ok else {}
    replayed = sum(1 for p in warm if prep.space.config_hash(p) in recorded)
    if action != "already done":
        tune_night(prep, ledger, tonight, cfg)
        tell_tpe(prep, ledger, tonight)
        s = prep.settings
    p = plan_budget(s.scheduler, s.trials, s.max_epochs, s.grace_period, s.reduction_factor)
    lines = [
        f"Dry run of night {tonight} ({cfg.source or cfg.name}): nothing written, nothing started.",
        f"- sweep {name}, experiment {s.experiment}, seed {s.seed}, strategy {s.strategy}, scheduler {s.scheduler}",
        f"- storage {storage.uri} (ledger {'found: ' + str(len(ledger.nights)) + ' nights' if ledger.path.exists() else 'not yet written'}), "
        f"tracking {s.tracking_uri or 'off'}",
        f"- reuse key: {key}",
        "  code: " + ", ".join(f"{k} {v}" for k, v in key.code_parts.items()),
    ]
    lines += [f"- {line}" for line in prep.budget_lines]
    if resume:
        lines.append(f"- first resumes the interrupted night{'s' if len(resume) > 1 else ''} {', '.join(resume)}")
    if action == "already done":
        lines.append(f"- night {tonight} is already done ({entry['sweep']}): a start only prints its verdict "
                     "(--force runs it again)")
    else:
        if action == "rerun":
            lines.append(f"- --force: night {tonight}'s entry ({entry.get('sweep')}, {status}) would be kept as superseded")
        elif action == "retry":
            lines.append(f"- night {tonight} crashed before ({entry.get('error')}): a start tries it again")
        lines.append(f"- reuse: {len(recorded)} configurations have a recorded result under this key" if reuse_ok
                     else f"- reuse: off ({no_reuse})")
        lines.append(f"- warm start: {len(warm)} earlier winners first, {replayed} replayed from recorded results, "
                     f"{len(warm) - replayed} trained" + "".join(f"\n    {json.dumps(w, default=str)}" for w in warm))
        lines.append(f"- plan: {s.trials} trials, up to {p.total_epochs} epochs ({p.full_epochs} if every trial ran "
                     f"all {s.max_epochs}), less what is replayed; deadline {cfg.deadline_hours:g} h")
    for line in lines:
        log(line)
    return NightPlan(tonight, name, s.seed, key, reuse_ok, action, resume, len(recorded), warm, replayed, s.trials,
                     p.total_epochs, p.full_epochs, lines)
