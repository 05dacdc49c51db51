"""A nightly's config: ``NightlyConfig``, read from TOML by ``load_config`` and checked key by key.

The TOML is flat: ``name``, ``space`` and the nightly's own keys; every other key is an option of
the sweep (any ``SweepSettings`` field but ``name``), checked by it.

``notify`` is a command given as a list of strings (``["curl", "-fsS", "-d", "@-", URL]``), run
without a shell: nothing in it is split or expanded, so URLs, paths and tokens need no quoting and
a value in the environment (``$HPSEARCH_VERDICT``) can never be read as shell syntax. Where shell
features are wanted, say so: ``["sh", "-c", "curl ... < \"$HPSEARCH_VERDICT\""]``.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass, field, fields
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Any

from hpsearch.runtime_env import resolve_env_paths
from hpsearch.settings import SweepSettings, option_names
from hpsearch.storage import is_uri
from hpsearch.vocab import NAME, is_number, sqlite_path, whole

# What a nightly sweep does unless its config says otherwise (a sweep's own defaults otherwise).
NIGHTLY_DEFAULTS: dict[str, Any] = {"strategy": "tpe", "max_failures": 1}


@dataclass(frozen=True)
class NightlyConfig:
    """What a nightly run does; read from TOML by ``load_config``.

    The TOML is flat: ``name``, ``space`` and the keys below are the nightly's own; every other key
    is an option of the sweep (any ``SweepSettings`` field but ``name``), checked by it.
    """

    name: str  # nights are sweeps named <name>-<YYYY-MM-DD>
    space: str  # a space module: a path (relative to the config file) or a short name
    sweep: SweepSettings = SweepSettings(**NIGHTLY_DEFAULTS)  # seed: tonight's is this plus the date's ordinal
    address: str | None = None  # Ray cluster: auto or ray://host:10001 (default: start one here)
    deadline_hours: float = 8.0  # from the start; running trials are stopped then
    warm_start: int = 3  # best configurations of earlier nights evaluated first
    history: int = 7  # earlier nights the verdict compares with
    regression_threshold: float = 0.01  # in metric units: worse than the recent best by more -> exit 1
    code_version: str | None = None  # default: git commit (+ uncommitted diff) and the space module's text
    # What the data is (e.g. "2026-11-20" or a file's hash): part of the reuse key; wins over the
    # space module's DATA_VERSION.
    data_version: str | None = None
    # Replay recorded results instead of training: True, False (every trial trains), or None: only
    # when the data is known (a dataset's hash or a data_version), else a new night trains.
    reuse: bool | None = None
    notify: tuple[str, ...] | None = None  # a command run after the verdict (HPSEARCH_* in its environment)
    notify_timeout_s: float = 60.0  # then it is stopped, and the night's exit status stands
    source: str = field(default="", compare=False)  # the config file
    given: tuple[str, ...] = field(default=(), compare=False)  # the sweep options the TOML sets (a budget keeps them)

    def __post_init__(self) -> None:
        for key in ("name", "space", "address", "code_version"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key}: must be a string, got {value!r}")
        if self.data_version is not None and (not isinstance(self.data_version, str) or not self.data_version.strip()):
            raise ValueError(f"data_version: must be a non-empty string, got {self.data_version!r}")
        if self.reuse is not None and not isinstance(self.reuse, bool):
            raise ValueError(f"reuse: must be true or false, got {self.reuse!r}")
        n = self.notify
        if n is not None:
            if not isinstance(n, (list, tuple)) or not n or not all(isinstance(w, str) and w for w in n):
                raise ValueError(f"notify: must be a command as a list of strings, e.g. [\"curl\", \"-fsS\", URL], got {n!r}")
            object.__setattr__(self, "notify", tuple(n))  # frozen: a list would make the config unhashable
        t = self.notify_timeout_s
        if not is_number(t) or not 0 < t < math.inf:
            raise ValueError(f"notify_timeout_s: must be a number > 0, got {t!r}")
        if not NAME.match(self.name) or len(self.name) > 100:
            raise ValueError(f"name: letters, digits and _ . = - only (max 100), got {self.name!r}")
        if not is_number(self.deadline_hours) or not 0 < self.deadline_hours < math.inf:
            raise ValueError(f"deadline_hours: must be a number > 0, got {self.deadline_hours!r}")
        for key, low in (("warm_start", 0), ("history", 1)):
            whole(key, getattr(self, key), low)
        t = self.regression_threshold
        if not is_number(t) or not 0 <= t < math.inf:
            raise ValueError(f"regression_threshold: must be a number >= 0, got {t!r}")


_OWN = [f.name for f in fields(NightlyConfig) if f.name not in ("sweep", "source", "given")]


def load_config(path: str | os.PathLike) -> NightlyConfig:
    """Read and check a nightly config; every mistake is one ``ValueError`` line naming the key.

    Example:
        >>> cfg = load_config(Path(__file__).parents[2] / "scripts/nightly/mlp.toml")
        >>> cfg.name, cfg.deadline_hours, str(cfg.sweep.strategy), cfg.sweep.trials
        ('mlp-nightly', 6, 'tpe', 32)
    """
    if sys.version_info >= (3, 11):
        import tomllib  # only where a nightly config is read
    else:  # pragma: no cover
        import tomli as tomllib  # only where a nightly config is read

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: no such file {str(path)!r}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config: {path} is not valid TOML: {exc}") from None
    sweep_keys = [k for k in option_names() if k != "name"]
    for key in raw:
        if key not in _OWN and key not in sweep_keys:
            raise ValueError(f"config: unknown key {key!r} in {path} (known: {', '.join(_OWN + sweep_keys)})")
    for key in ("name", "space"):
        if key not in raw:
            raise ValueError(f"{key}: required in {path}")
    here = path.resolve().parent
    # Paths are relative to the config file, not to wherever cron starts; a space without a slash
    # or .py is a short name.
    space = raw["space"]
    if isinstance(space, str) and (space.endswith(".py") or "/" in space):
        raw["space"] = str((here / Path(space).expanduser()).resolve())
    if isinstance(raw.get("storage"), str) and not is_uri(raw["storage"]):  # a bucket's URI stays
        raw["storage"] = str((here / Path(raw["storage"]).expanduser()).resolve())
    if isinstance(raw.get("runtime_env"), dict):  # a [runtime_env] table: its folders too
        raw["runtime_env"] = resolve_env_paths(raw["runtime_env"], here)
    db = sqlite_path(raw.get("tracking_uri") if isinstance(raw.get("tracking_uri"), str) else None)
    if db is not None and not Path(db).is_absolute():
        raw["tracking_uri"] = "sqlite:///" + str(here / db)
    notify = raw.get("notify")
    if isinstance(notify, list) and notify and isinstance(notify[0], str) and notify[0]:
        # The program, like every path here, is relative to the config file; checked now, not after
        # a night of compute (a typo would otherwise be a warning in the morning).
        program = notify[0]
        if "/" in program:
            program = str((here / Path(program).expanduser()).resolve())
            if not os.access(program, os.X_OK):
                raise ValueError(f"notify: {notify[0]!r} is not an executable file (relative to {here})")
        elif shutil.which(program) is None:
            raise ValueError(f"notify: no program {program!r} on PATH")
        raw["notify"] = [program, *notify[1:]]
    settings = SweepSettings(**{**NIGHTLY_DEFAULTS, **{k: v for k, v in raw.items() if k in sweep_keys}})
    return NightlyConfig(**{k: v for k, v in raw.items() if k in _OWN}, sweep=settings, source=str(path),
                         given=tuple(k for k in raw if k in sweep_keys))


def parse_date(text: str | None) -> Date:
    if text is None:
        return datetime.now().date()
    try:
        return Date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"date: must be YYYY-MM-DD, got {text!r}") from None
