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
import json
import math
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import date as Date, datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

from hpsearch.sweep import (
    REUSED_KEY, _NAME, _REPLAY_MARK, PreparedSweep, Replay, Resources, SweepResult, prepare,
    prepare_resume, read_results, resume_prepared, run_prepared,
)

EXIT_OK, EXIT_WORSE, EXIT_BUSY = 0, 1, 3


# -- the config -------------------------------------------------------------------------------

@dataclass(frozen=True)
class NightlyConfig:
    """What a nightly run does; read from TOML by ``load_config`` (keys as the field names)."""

    name: str  # nights are sweeps named <name>-<YYYY-MM-DD>
    space: str  # a space module: a path (relative to the config file) or a short name
    strategy: str = "tpe"
    scheduler: str = "asha"
    trials: int | None = None
    max_epochs: int | None = None
    grace_period: int = 1
    reduction_factor: float = 3
    seed: int = 0  # tonight's seed is this plus the date's ordinal, so each night explores anew
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    concurrency: int | None = None
    max_failures: int = 1
    dataset: str | None = None
    address: str | None = None  # Ray cluster: auto or ray://host:10001 (default: start one here)
    storage: str | None = None  # Ray results and the nightly ledger (default ~/ray_results)
    tracking_uri: str | bool | None = None  # false: no MLflow
    experiment: str | None = None  # default: name
    deadline_hours: float = 8.0  # from the start; running trials are stopped then
    warm_start: int = 3  # best configurations of earlier nights evaluated first
    history: int = 7  # earlier nights the verdict compares with
    regression_threshold: float = 0.01  # in metric units: worse than the recent best by more -> exit 1
    code_version: str | None = None  # default: git commit (+ uncommitted diff) and the space module's text
    source: str = field(default="", compare=False)  # the config file


_INTS = {"trials", "max_epochs", "grace_period", "seed", "concurrency", "max_failures", "warm_start", "history"}
_NUMBERS = {"reduction_factor", "cpus_per_trial", "gpus_per_trial", "deadline_hours", "regression_threshold"}
_STRINGS = {"name", "space", "strategy", "scheduler", "dataset", "address", "storage", "experiment", "code_version"}


def load_config(path: str | os.PathLike) -> NightlyConfig:
    """Read and check a nightly config; every mistake is one ``ValueError`` line naming the key.

    Example:
        >>> cfg = load_config("scripts/nightly/mlp.toml")  # doctest: +SKIP
        >>> cfg.name, cfg.deadline_hours                     # doctest: +SKIP
        ('mlp-nightly', 6.0)
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: no such file {str(path)!r}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config: {path} is not valid TOML: {exc}") from None
    known = [f.name for f in fields(NightlyConfig) if f.name != "source"]
    for key in raw:
        if key not in known:
            raise ValueError(f"config: unknown key {key!r} in {path} (known: {', '.join(known)})")
    for key in ("name", "space"):
        if key not in raw:
            raise ValueError(f"{key}: required in {path}")
    for key, value in raw.items():
        if key in _INTS and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{key}: must be a whole number, got {value!r}")
        if key in _NUMBERS and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"{key}: must be a number, got {value!r}")
        if key in _STRINGS and not isinstance(value, str):
            raise ValueError(f"{key}: must be a string, got {value!r}")
        if key == "tracking_uri" and not (isinstance(value, str) or value is False):
            raise ValueError(f"tracking_uri: must be a URI or false, got {value!r}")
    if not _NAME.match(raw["name"]) or len(raw["name"]) > 100:
        raise ValueError(f"name: letters, digits and _ . = - only (max 100), got {raw['name']!r}")
    deadline = raw.get("deadline_hours", NightlyConfig.deadline_hours)
    if not deadline > 0 or math.isinf(deadline):
        raise ValueError(f"deadline_hours: must be a number > 0, got {deadline!r}")
    for key, low in (("warm_start", 0), ("history", 1)):
        if key in raw and raw[key] < low:
            raise ValueError(f"{key}: must be >= {low}, got {raw[key]!r}")
    threshold = raw.get("regression_threshold", 0.0)
    if not threshold >= 0 or math.isinf(threshold):
        raise ValueError(f"regression_threshold: must be a number >= 0, got {threshold!r}")
    here = path.resolve().parent
    # Paths are relative to the config file, not to wherever cron starts; a space without a slash
    # or .py is a short name.
    space = raw["space"]
    if space.endswith(".py") or "/" in space:
        raw["space"] = str((here / Path(space).expanduser()).resolve())
    if "storage" in raw:
        raw["storage"] = str((here / Path(raw["storage"]).expanduser()).resolve())
    uri = raw.get("tracking_uri")
    if isinstance(uri, str) and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_absolute():
        raw["tracking_uri"] = "sqlite:///" + str(here / uri[len("sqlite:///"):])
    return NightlyConfig(**raw, source=str(path))


def parse_date(text: str | None) -> Date:
    if text is None:
        return datetime.now().date()
    try:
        return Date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"date: must be YYYY-MM-DD, got {text!r}") from None


# -- versions: when may a recorded result stand in for training? -----------------------------

def code_version(cfg: NightlyConfig, space_path: str | None) -> str:
    """The configured ``code_version``, else a hash of the space module's text, hpsearch's version
    and, where the module lives in git, the commit and any uncommitted change."""
    if cfg.code_version:
        return cfg.code_version
    from hpsearch import __version__

    h = hashlib.sha256(__version__.encode())
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
    return f"epochs={prep.settings.max_epochs} data={data} code={code_version(cfg, prep.settings.space_path)}"


# -- the ledger -------------------------------------------------------------------------------

class Ledger:
    """Every night's record, in ``<storage>/<name>.nightly/ledger.json`` (rewritten atomically)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "ledger.json"
        self.nights: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text())["nights"] if self.path.exists() else {}
        )

    def save(self) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"nights": self.nights}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def done_before(self, night: str) -> list[dict[str, Any]]:
        return [self.nights[d] for d in sorted(self.nights) if d < night and self.nights[d]["status"] == "done"]


def _better(mode: str, a: float, b: float) -> bool:
    return a > b if mode == "max" else a < b


def warm_start_points(ledger: Ledger, night: str, prep: PreparedSweep, k: int) -> list[dict[str, Any]]:
    """The ``k`` best distinct configurations of earlier nights that still fit the space."""
    mode, space = prep.settings.mode, prep.space
    seen, scored = set(), []
    for entry in ledger.done_before(night):
        for t in entry["trials"]:
            if t["metric"] is not None and t["status"] != "failed" and math.isfinite(t["metric"]):
                scored.append(t)
    scored.sort(key=lambda t: t["metric"], reverse=(mode == "max"))
    points = []
    for t in scored:
        if len(points) >= k:
            break
        try:
            config = space.validate_config(t["config"])
        except ValueError:  # the space changed since: this winner is no longer a valid point
            continue
        h = space.config_hash(config)
        if h not in seen:
            seen.add(h)
            points.append(config)
    return points


def reusable(ledger: Ledger, night: str, key: str) -> dict[str, Replay]:
    """config_hash -> the longest curve recorded under the same budget, data and code version."""
    out: dict[str, Replay] = {}
    for entry in ledger.done_before(night):
        if entry["key"] != key:
            continue
        for t in entry["trials"]:
            if t["status"] == "failed" or not t["curve"]:
                continue
            ckpt = t.get("checkpoint")
            replay = Replay(
                curve=tuple(t["curve"]), source=t["source"],
                checkpoint=ckpt["path"] if ckpt and Path(ckpt["path"]).is_dir() else None,
                checkpoint_epoch=ckpt["epoch"] if ckpt else 0,
            )
            old = out.get(t["config_hash"])
            if old is None or len(replay.curve) >= len(old.curve):
                out[t["config_hash"]] = replay
    return out


def _trial_entries(result: SweepResult, prep: PreparedSweep) -> list[dict[str, Any]]:
    """What a later night needs of each trial: its curve, its last real checkpoint, where it came from."""
    from hpsearch.tracking import _RAY_KEYS

    out = []
    for r in result.trials:
        rows = read_results(r.path)
        by_epoch: dict[int, dict[str, Any]] = {}
        ckpt = None
        for row in rows:
            epoch = int(row.get("epoch", 0) or 0)
            if epoch < 1:
                continue
            by_epoch[epoch] = row  # a resumed trial may repeat an epoch: the later report stands
            name = row.get("checkpoint_dir_name")
            if name and r.path and Path(r.path, name).is_dir() and not Path(r.path, name, _REPLAY_MARK).exists():
                ckpt = {"epoch": epoch, "path": str(Path(r.path, name))}
        curve = [{"epoch": e, **{k: v for k, v in row.items() if k not in _RAY_KEYS and k != REUSED_KEY
                                 and isinstance(v, (int, float)) and not isinstance(v, bool)}}
                 for e, row in sorted(by_epoch.items())]
        replayed = sum(1 for row in by_epoch.values() if REUSED_KEY in row)
        sources = [row[REUSED_KEY] for row in by_epoch.values() if REUSED_KEY in row]
        out.append({
            "trial_id": r.trial_id, "config": r.config, "config_hash": prep.space.config_hash(r.config),
            "status": r.status, "epochs": r.epochs, "metric": r.metric, "curve": curve, "checkpoint": ckpt,
            "reused_epochs": replayed, "trained_epochs": len(by_epoch) - replayed,
            "source": sources[0] if sources else f"{result.name}/trial-{r.trial_id}",
        })
    return out


# -- the verdict ------------------------------------------------------------------------------

@dataclass
class Verdict:
    kind: str  # first | better | same | worse | no-result
    exit_code: int
    tonight: float | None
    reference: float | None
    reference_night: str | None
    change: float | None  # positive: better, in metric units
    markdown: str


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "–" if v is None else str(v)


def _signed(v: float | None) -> str:
    return "–" if v is None else f"{v:+.4g}"


def judge(cfg: NightlyConfig, ledger: Ledger, night: str) -> Verdict:
    """Tonight's best against the best of the last ``history`` nights before it."""
    entry = ledger.nights[night]
    metric, mode = entry["metric"], entry["mode"]
    earlier = [e for e in ledger.done_before(night) if e["best"] is not None][-cfg.history:]
    best = entry["best"]
    tonight = best["metric"] if best else None
    ref = None
    for e in earlier:
        if ref is None or _better(mode, e["best"]["metric"], ref["best"]["metric"]):
            ref = e
    sign = 1 if mode == "max" else -1
    change = None if tonight is None or ref is None else sign * (tonight - ref["best"]["metric"])
    if tonight is None:
        kind, code = "no-result", EXIT_WORSE
    elif ref is None:
        kind, code = "first", EXIT_OK
    elif change < -cfg.regression_threshold:
        kind, code = "worse", EXIT_WORSE
    elif change > cfg.regression_threshold:
        kind, code = "better", EXIT_OK
    else:
        kind, code = "same", EXIT_OK

    headline = {
        "first": "first night: nothing to compare with yet",
        "better": f"better by {_fmt(change)} {metric}",
        "same": f"within {_fmt(cfg.regression_threshold)} of the best recent night (change {_signed(change)})",
        "worse": f"WORSE by {_fmt(-change) if change is not None else ''} {metric} (threshold {_fmt(cfg.regression_threshold)})",
        "no-result": "NO RESULT: no trial reported the metric",
    }[kind]
    lines = [f"# {cfg.name}, night of {night}: {headline}", ""]
    lines += [f"| | {metric} ({mode}) | night |", "|---|---|---|",
              f"| tonight | **{_fmt(tonight)}** | {night} |"]
    if ref is not None:
        rel = f" ({100 * change / abs(ref['best']['metric']):+.1f}%)" if change is not None and ref["best"]["metric"] else ""
        lines += [f"| best of the {len(earlier)} nights before | {_fmt(ref['best']['metric'])} | {ref['night']} |",
                  f"| change | {_signed(change)}{rel} | |"]
    trend = [(e["night"], e["best"]["metric"]) for e in earlier] + ([(night, tonight)] if tonight is not None else [])
    if len(trend) > 1:
        lines += ["", "Trend: " + " → ".join(f"{_fmt(v)} ({d[5:]})" for d, v in trend)]
    if best:
        lines += ["", "## Winning configuration", "",
                  f"Trial {best['trial_id']}" + (f", reused from {best['source']}" if best.get("reused") else "") + ".", ""]
        before = ref["best"]["config"] if ref else {}
        lines += ["| parameter | tonight | " + (f"best before ({ref['night']})" if ref else "") + " |", "|---|---|---|"]
        for k in sorted(set(best["config"]) | set(before)):
            a, b = best["config"].get(k), before.get(k)
            changed = ref is not None and _fmt(a) != _fmt(b)
            lines.append(f"| {'**' + k + '**' if changed else k} | {_fmt(a)} | {_fmt(b) if ref else ''} |")
        if ref is not None:
            diff = [k for k in sorted(set(best["config"]) | set(before)) if _fmt(best["config"].get(k)) != _fmt(before.get(k))]
            lines += ["", "Changed: " + (", ".join(diff) if diff else "nothing (the same configuration won)") + "."]
    c = entry["counts"]
    lines += ["", "## The night", "",
              f"- {entry['trials_total']} trials: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items())) + ".",
              f"- Reused without training: {entry['reused_trials']} trials ({entry['reused_epochs']} epochs); "
              f"trained: {entry['trained_epochs']} epochs; warm-started from {entry['warm_started']} earlier winners.",
              f"- Wall time {entry['wall_s']:.0f} s; deadline {'reached: running trials were stopped' if entry['deadline_hit'] else 'not reached'}.",
              f"- Sweep `{entry['sweep']}`" + (f", MLflow run `{entry['parent_run_id']}`" if entry.get("parent_run_id") else "") + "."]
    return Verdict(kind, code, tonight, ref["best"]["metric"] if ref else None, ref["night"] if ref else None,
                   change, "\n".join(lines) + "\n")


def _record_verdict(entry: dict[str, Any], verdict: Verdict, tracking_uri: str | None, folder: Path) -> None:
    (folder / "verdicts").mkdir(exist_ok=True)
    (folder / "verdicts" / f"{entry['night']}.md").write_text(verdict.markdown)
    entry["verdict"] = {"kind": verdict.kind, "exit_code": verdict.exit_code, "change": verdict.change,
                        "reference": verdict.reference, "reference_night": verdict.reference_night}
    if not tracking_uri or not entry.get("parent_run_id"):
        return
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        run_id = entry["parent_run_id"]
        client.log_text(run_id, verdict.markdown, "verdict.md")
        tags = {"hpsearch.nightly": entry["name"], "hpsearch.night": entry["night"], "hpsearch.verdict": verdict.kind,
                "hpsearch.verdict.reused_trials": str(entry["reused_trials"]),
                "mlflow.note.content": verdict.markdown}
        if verdict.change is not None:
            tags["hpsearch.verdict.change"] = f"{verdict.change:.6g}"
            tags["hpsearch.verdict.reference_night"] = str(verdict.reference_night)
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    except Exception as exc:  # the verdict is on disk and printed; MLflow being down must not hide it
        print(f"hpsearch nightly: verdict not logged to MLflow: {type(exc).__name__}: {exc}", file=sys.stderr)


# -- one start --------------------------------------------------------------------------------

class Busy(RuntimeError):
    """Another nightly of the same name holds the lock."""


@contextmanager
def _lock(folder: Path) -> Iterator[str | None]:
    """An exclusive lock for one nightly name. ``flock`` locks die with their process, so a crashed
    run leaves no lock behind; the holder file says who held it, for the message and the takeover
    note. Yields the dead holder taken over from, if any."""
    from filelock import FileLock, Timeout

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


def _prepare_night(cfg: NightlyConfig, night: Date, storage: str | None = None) -> PreparedSweep:
    return prepare(
        cfg.space, data=cfg.dataset, strategy=cfg.strategy, scheduler=cfg.scheduler, trials=cfg.trials,
        max_epochs=cfg.max_epochs, grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor,
        seed=cfg.seed + night.toordinal(), resources=Resources(cfg.cpus_per_trial, cfg.gpus_per_trial),
        concurrency=cfg.concurrency, max_failures=cfg.max_failures, name=f"{cfg.name}-{night.isoformat()}",
        storage=storage or cfg.storage, tracking_uri=cfg.tracking_uri, experiment=cfg.experiment or cfg.name,
    )


def run_nightly(cfg: NightlyConfig, night: Date, *, progress: bool = True, log=print) -> NightlyOutcome:
    """One start (see the module docstring). Raises ValueError for bad input before any compute,
    ``Busy`` when another copy runs."""
    prep = _prepare_night(cfg, night)  # every check of a sweep, before the lock and before Ray
    key = reuse_key(prep, cfg)
    folder = Path(prep.settings.storage, f"{cfg.name}.nightly")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    deadline = start + cfg.deadline_hours * 3600
    outcome = NightlyOutcome(EXIT_OK, {}, {}, [])

    def say(message: str) -> None:
        outcome.messages.append(message)
        log(message)

    with _lock(folder) as stale:
        if stale:
            say(f"Took over the lock of a run that is gone ({stale}).")
        ledger = Ledger(folder)
        for name in sorted(d for d, e in ledger.nights.items() if e["status"] == "running"):
            _finish_interrupted(cfg, ledger, name, prep.settings.storage, deadline, progress, outcome, say)
        tonight = night.isoformat()
        entry = ledger.nights.get(tonight)
        if entry is not None and entry["status"] == "done":
            if tonight not in outcome.verdicts:
                say(f"Night {tonight} is already done ({prep.settings.name}); its verdict:")
                say((folder / "verdicts" / f"{tonight}.md").read_text())
                outcome.exit_code = max(outcome.exit_code, entry["verdict"]["exit_code"])
            return outcome
        if time.time() >= deadline:
            say(f"No time left before the deadline for night {tonight}; it was not started.")
            return outcome
        prep.deadline = deadline
        prep.points_to_evaluate = warm_start_points(ledger, tonight, prep, cfg.warm_start)
        prep.reuse = reusable(ledger, tonight, key)
        ledger.nights[tonight] = {
            "night": tonight, "name": cfg.name, "sweep": prep.settings.name, "status": "running", "key": key,
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
    from ray import tune

    entry = ledger.nights[night]
    path = Path(storage, entry["sweep"])
    if not tune.Tuner.can_restore(str(path)):
        # Killed before Ray saved anything: there is nothing to resume; tonight starts it anew.
        del ledger.nights[night]
        ledger.save()
        say(f"Night {night} was interrupted before any trial was saved; it is started again if it is tonight.")
        return
    say(f"Night {night} was interrupted; resuming {entry['sweep']}.")
    prep = prepare_resume(entry["sweep"], storage=str(path.parent))
    prep.deadline = deadline
    prep.reuse = reusable(ledger, night, entry["key"])
    result = resume_prepared(prep, address=cfg.address, progress=progress)
    _close_night(cfg, ledger, night, prep, result, outcome, say)


def _close_night(cfg, ledger: Ledger, night: str, prep: PreparedSweep, result: SweepResult, outcome, say) -> None:
    entry = ledger.nights[night]
    trials = _trial_entries(result, prep)
    best = None
    if result.best is not None:
        t = next(t for t in trials if t["trial_id"] == result.best.trial_id)
        best = {"trial_id": t["trial_id"], "metric": t["metric"], "config": t["config"], "epochs": t["epochs"],
                "reused": t["trained_epochs"] == 0 and t["reused_epochs"] > 0, "source": t["source"]}
    entry.update(
        status="done", finished=time.time(), wall_s=result.wall_s, trials=trials, best=best,
        counts=result.counts(), trials_total=len(trials),
        reused_trials=sum(1 for t in trials if t["reused_epochs"] and not t["trained_epochs"]),
        reused_epochs=sum(t["reused_epochs"] for t in trials), trained_epochs=sum(t["trained_epochs"] for t in trials),
        deadline_hit=result.deadline_hit,
        parent_run_id=(result.tracking or {}).get("parent_run_id"),
    )
    entry.setdefault("warm_started", 0)
    verdict = judge(cfg, ledger, night)
    _record_verdict(entry, verdict, prep.settings.tracking_uri, ledger.folder)
    ledger.save()
    outcome.verdicts[night], outcome.results[night] = verdict, result
    outcome.exit_code = max(outcome.exit_code, verdict.exit_code)
    say(verdict.markdown)
