"""What one start of ``hpsearch nightly`` ends with: its exit status, its outcome, and who is told
(the config's ``notify`` command).

Exit status (``EXIT_CODES``; a start that finishes several nights exits with the highest):

    0    fine: first night, better, or within ``regression_threshold`` of the recent best
    1    regression: worse than the best of recent nights by more than ``regression_threshold``
    2    bad input: one line naming the key, the rule and the value; nothing started
    3    no result: no trial reported the metric
    4    crashed: an error that is not bad input ended the night; the ledger marks it crashed with
         the error's first line, and the next start for that night tries it again (resuming
         what Ray saved)
    5    another copy holds the lock: nothing done
    130  interrupted by SIGINT: the next start resumes the night
    143  interrupted by SIGTERM: the same
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable

from hpsearch.nightly.config import NightlyConfig
from hpsearch.nightly.verdict import EXIT_NO_RESULT, EXIT_OK, EXIT_WORSE, Verdict
from hpsearch.results import SweepResult
from hpsearch.storage import Location

EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_BUSY = 2, 4, 5

# Every exit status of `hpsearch nightly`: (outcome word, meaning). The word is HPSEARCH_OUTCOME.
EXIT_CODES: dict[int, tuple[str, str]] = {
    EXIT_OK: ("ok", "fine: first night, better, or within regression_threshold of the recent best"),
    EXIT_WORSE: ("regression", "worse than the best of recent nights by more than regression_threshold"),
    EXIT_BAD_INPUT: ("bad-input", "bad input: nothing started"),
    EXIT_NO_RESULT: ("no-result", "no trial reported the metric"),
    EXIT_CRASHED: ("crashed", "an error ended the night; the ledger says which; the next start tries it again"),
    EXIT_BUSY: ("busy", "another copy holds the lock: nothing done"),
    130: ("interrupted", "SIGINT: the next start resumes the night"),
    143: ("interrupted", "SIGTERM: the next start resumes the night"),
}


@dataclass
class NightlyOutcome:
    exit_code: int
    verdicts: dict[str, Verdict]  # night -> verdict, for the nights finished by this start
    results: dict[str, SweepResult]
    messages: list[str]
    notified: bool = False  # the notify command ran and exited 0
    errors: dict[str, str] = field(default_factory=dict)  # night -> the first line of what crashed it


def notify(cfg: NightlyConfig, outcome: NightlyOutcome, night: str, folder: Location,
           warn: Callable[[str], Any]) -> bool:
    """Run ``cfg.notify`` (no shell) with the outcome in its environment; wait at most
    ``cfg.notify_timeout_s`` (then its whole process group is killed). A failure is one warning
    line: it never changes the exit status. Returns whether it ran and exited 0."""
    word = EXIT_CODES.get(outcome.exit_code, ("crashed", ""))[0]
    verdict = folder / "verdicts" / f"{night}.md"
    nights = sorted(set(outcome.verdicts) | set(outcome.errors) | {night})
    env = {**os.environ, "HPSEARCH_NIGHTLY": cfg.name, "HPSEARCH_NIGHT": night, "HPSEARCH_NIGHTS": " ".join(nights),
           "HPSEARCH_EXIT_CODE": str(outcome.exit_code), "HPSEARCH_OUTCOME": word,
           "HPSEARCH_VERDICT": verdict.uri if night in outcome.verdicts else "",
           "HPSEARCH_VERDICT_KIND": str(outcome.verdicts[night].kind) if night in outcome.verdicts else "",
           "HPSEARCH_ERROR": outcome.errors.get(night, "")}
    command = list(cfg.notify or ())
    try:
        # Its own session, so a timeout kills what it started too (curl under sh -c) and no child
        # is left holding the pipes.
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        warn(f"hpsearch nightly: warning: notify: cannot run {command[0]!r}: {exc.strerror or exc}")
        return False
    try:
        _, err = proc.communicate(timeout=cfg.notify_timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        warn(f"hpsearch nightly: warning: notify: {command[0]} did not finish within {cfg.notify_timeout_s:g} s "
             "(notify_timeout_s); stopped")
        return False
    if proc.returncode != 0:
        last = [line for line in (err or "").splitlines() if line.strip()]
        warn(f"hpsearch nightly: warning: notify: {command[0]} exited with status {proc.returncode}"
             + (f": {last[-1].strip()[:300]}" if last else ""))
        return False
    outcome.notified = True
    return True
