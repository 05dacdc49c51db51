"""When a recorded result may stand in for training: the reuse key of a night.

The reuse key is the budget (``max_epochs``), the data (the dataset's hash, and ``data_version``:
the config's, else the space module's ``DATA_VERSION``) and the code version (``code_version`` or
the space module's text with git's commit and uncommitted diff, plus hpsearch's version, its
trial code and the versions of torch, ray, optuna, mlflow and numpy). A ``TRAIN`` that loads its
own data has no hash: without a ``data_version`` its results are not reused unless the config
says ``reuse = true``; ``reuse = false`` trains every trial.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.nightly.config import NightlyConfig
from hpsearch.record import PreparedSweep
from hpsearch.space.modules import SpaceModule
from hpsearch.text import first_line
from hpsearch.vocab import VERSION

# The libraries whose upgrade can change a trial's curve: part of the code version.
LIBRARIES = ("torch", "ray", "optuna", "mlflow", "numpy")
TRIAL_CODE = Path(__file__).resolve().parents[1] / "trial"  # what runs in a trial: the reference trainer, data


def _installed(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def code_parts(cfg: NightlyConfig, space_path: str | None) -> dict[str, str]:
    """What the code version is made of: hpsearch (its version, installed and in the source, and a
    hash of its trial code), the libraries in ``LIBRARIES``, and the configured ``code_version`` or
    else the space module's text and, where it lives in git, the commit and any uncommitted change.

    Example:
        >>> parts = code_parts(NightlyConfig(name="n", space="s", code_version="v1"), None)
        >>> parts["code_version"], sorted(set(parts) - {"code_version"})[:3]
        ('v1', ['hpsearch', 'hpsearch.installed', 'hpsearch.trial'])
    """
    trial = hashlib.sha256()
    for path in sorted(TRIAL_CODE.glob("*.py")):
        trial.update(path.name.encode() + path.read_bytes())
    parts = {"hpsearch": VERSION, "hpsearch.installed": _installed("hpsearch"), "hpsearch.trial": trial.hexdigest()[:12],
             **{lib: _installed(lib) for lib in LIBRARIES}}
    if cfg.code_version:
        parts["code_version"] = cfg.code_version
    elif space_path:
        parts["space"] = hashlib.sha256(Path(space_path).read_bytes()).hexdigest()[:12]
        folder = str(Path(space_path).parent)
        git = []
        for args in (["rev-parse", "HEAD"], ["diff", "HEAD"]):
            try:
                done = subprocess.run(["git", "-C", folder, *args], capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                break
            git.append(done.stdout if done.returncode == 0 else b"")
        if git and git[0]:
            parts["git"] = git[0].decode().strip()[:12] + (
                "+" + hashlib.sha256(git[1]).hexdigest()[:8] if len(git) > 1 and git[1] else "")
    return parts


def code_version(cfg: NightlyConfig, space_path: str | None) -> str:
    """A short hash of ``code_parts``: equal only when hpsearch, the libraries and the code are."""
    parts = code_parts(cfg, space_path)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def data_version(cfg: NightlyConfig, module: SpaceModule | None) -> str | None:
    """The config's ``data_version``, else the space module's ``DATA_VERSION`` (called, if it is a
    function); None when neither says. Raises ValueError (one line) for a function that raises or
    returns anything but a non-empty string."""
    if cfg.data_version:
        return cfg.data_version
    given = module.data_version if module is not None else None
    if given is None or isinstance(given, str):
        return given
    where = f"in {str(module.path)!r}"
    try:
        value = given()
    except Exception as exc:  # a user's function may raise anything: one line, before any compute
        raise ValueError(f"data_version: DATA_VERSION() {where} raised {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"data_version: DATA_VERSION() must return a non-empty string, got {value!r} {where}")
    return value


@dataclass(frozen=True)
class ReuseKey:
    """Budget, data and code: a trial's curve depends on these and on its config only (the
    scheduler decides how far a trial goes, not what it reports at an epoch)."""

    epochs: int
    data: str  # the dataset's hash, or "none" (a TRAIN that loads its own data)
    data_version: str  # the config's or the module's data_version, or "none"
    code: str  # code_version(): a hash of code_parts
    code_parts: dict[str, str] = field(compare=False, hash=False)

    def __str__(self) -> str:
        return f"epochs={self.epochs} data={self.data} data_version={self.data_version} code={self.code}"

    @property
    def data_known(self) -> bool:
        return self.data != "none" or self.data_version != "none"


def reuse_key(prep: PreparedSweep, cfg: NightlyConfig, module: SpaceModule | None = None) -> ReuseKey:
    """Tonight's reuse key (see ``ReuseKey``); calls the module's ``DATA_VERSION`` if it is a function."""
    parts = code_parts(cfg, prep.space_path)
    return ReuseKey(
        epochs=prep.settings.max_epochs, data=prep.data.version() if prep.data is not None else "none",
        data_version=data_version(cfg, module) or "none",
        code=hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12], code_parts=parts,
    )


def reuse_allowed(cfg: NightlyConfig, key: ReuseKey) -> tuple[bool, str]:
    """Whether tonight replays recorded results, and why not."""
    if cfg.reuse is False:
        return False, "reuse = false in the config: every trial trains"
    if cfg.reuse is None and not key.data_known:
        return False, ("the data has no hash (TRAIN loads its own) and no data_version: every trial trains "
                       "(set DATA_VERSION in the space module or data_version in the config, or reuse = true)")
    return True, ""


def key_fields(key: ReuseKey) -> dict[str, Any]:
    """The parts of a reuse key as the ledger records them."""
    return {"epochs": key.epochs, "data": key.data, "data_version": key.data_version, "code": key.code}
