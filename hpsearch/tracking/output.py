"""A trial's printed output as its MLflow run keeps it: the end of its stdout and stderr (and a
failed trial's error), read from its folder here or its copy in storage, without Ray's own marks.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping

from hpsearch.storage import Location

log = logging.getLogger(__name__)

OUTPUT_ARTIFACT = "output/trial.log"  # a trial's stdout, stderr and error, on its child run
OUTPUT_STREAMS = ("stdout", "stderr")  # the files Ray's RunConfig(log_to_file=True) writes in a trial's folder
# The artifact keeps the end of what a trial printed, at most this many characters: its text travels
# in the writer's operation (and in the journal when MLflow is away), not as a path to a file.
OUTPUT_LIMIT = 1 << 20
_RAY_MARKS = (":actor_name:", ":task_name:", ":job_id:")  # lines Ray writes for its own log prefixes
_COLOUR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours (Ray's error file has some): noise in a file


def tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``, from a line's start, saying what was cut.

    Example:
        >>> tail("one\\ntwo\\nthree\\n", 9)
        '[... 8 characters cut]\\nthree\\n'
        >>> tail("short", 9)
        'short'
    """
    if len(text) <= limit:
        return text
    kept = text[len(text) - limit:]
    start = kept.find("\n") + 1 if "\n" in kept[:-1] else 0
    kept = kept[start:]
    return f"[... {len(text) - len(kept)} characters cut]\n{kept}"


def output_text(streams: Mapping[str, str], error: str | None = None, limit: int = OUTPUT_LIMIT) -> str:
    """A trial's output artifact: each stream (``stdout``, ``stderr``) and the error that ended it
    under a ``==> name <==`` header, as ``tail`` prints several files; empty parts left out, Ray's
    own prefix lines and terminal colours dropped. Each part keeps its end within an equal share of ``limit`` (a share a
    shorter part leaves goes to the others). "" when the trial printed nothing and did not fail.

    Example:
        >>> print(output_text({"stdout": ":actor_name:x\\nepoch 1\\n", "stderr": ""}, "ValueError: bad\\n"), end="")
        ==> stdout <==
        epoch 1
        <BLANKLINE>
        ==> error <==
        ValueError: bad
    """
    parts = {name: "".join(line for line in text.splitlines(keepends=True) if not line.startswith(_RAY_MARKS))
             for name, text in streams.items()}
    if error:
        parts["error"] = error
    parts = {name: _COLOUR.sub("", text) for name, text in parts.items()}
    parts = {name: text for name, text in parts.items() if text.strip()}
    budget, kept = limit, {}
    for i, (name, text) in enumerate(sorted(parts.items(), key=lambda p: len(p[1]))):
        kept[name] = tail(text, max(budget // (len(parts) - i), 1))
        budget -= len(kept[name])
    return "\n".join(f"==> {name} <==\n{kept[name]}" + ("" if kept[name].endswith("\n") else "\n") for name in parts)


def read_output(folder: str | None, stored: Location | None, limit: int = OUTPUT_LIMIT) -> dict[str, str]:
    """The streams Ray wrote for a trial: from ``folder`` (its working folder, when it ran on this
    machine: there whole, closed when its actor let the trial go) or else ``stored`` (its folder in
    the sweep's storage, where Ray copies them); each stream's last ``limit`` bytes, undecodable
    bytes replaced. A file that cannot be read is left out (said in the log)."""
    out = {}
    for name in OUTPUT_STREAMS:
        try:
            if folder and os.path.isfile(os.path.join(folder, name)):
                out[name] = _tail_of(Path(folder, name), limit)
            elif stored is not None and (stored / name).exists():
                with (stored / name).local_copy() as path:  # a bucket's: downloaded (Ray copied it whole)
                    out[name] = _tail_of(path, limit)
        except OSError as exc:  # the trial's output is a help, never worth failing the sweep's end
            log.warning("trial output %s not read from %s: %s: %s", name, folder or stored, type(exc).__name__, exc)
    return out


def _tail_of(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(os.fstat(f.fileno()).st_size - limit, 0))
        return f.read().decode(errors="replace")
