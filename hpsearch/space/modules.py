"""Search-space modules: a file in ``spaces/`` (or any path) that exports a space and what it is
tuned for, loaded by path or by short name.

Example:
    >>> load_space_module("mlp").metric  # spaces/mlp.py
    'val_acc'
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpsearch.space import Space
from hpsearch.vocab import Mode, whole


@dataclass(frozen=True)
class SpaceModule:
    """What a file in ``spaces/`` exports: the space and what it is tuned for.

    A module defines ``SPACE`` (a ``Space``), ``METRIC`` (reported name), ``MODE`` ("max" or
    "min") and ``MAX_EPOCHS`` (default budget); optionally ``DATASET`` (a name for the reference
    trainable), ``TRAIN`` (your own ``train(config)`` function) and ``MODEL`` (a function
    ``MODEL(config)`` or ``MODEL(config, data)`` building your trainable's network, so the best
    trial's checkpointed state dict, its ``"model"`` entry, becomes a model MLflow can log) and
    ``DATA_VERSION`` (what the data is, for a ``TRAIN`` that loads its own: a string, or a
    function returning one, e.g. a file's hash; a nightly reuses a result only under the same one).
    """

    name: str
    path: Path
    space: Space
    metric: str
    mode: str
    max_epochs: int
    dataset: str | None = None
    train: Callable[..., Any] | None = field(default=None, compare=False)
    model: Callable[..., Any] | None = field(default=None, compare=False)
    # DATA_VERSION: what a TRAIN that loads its own data reads (a string, or a function returning
    # one, called only where it is needed: a nightly's reuse key).
    data_version: str | Callable[[], str] | None = field(default=None, compare=False)


def _spaces_dirs() -> list[Path]:
    # Here, then the examples that ship with hpsearch: inside the package once installed
    # (hpsearch/spaces), the repository's spaces/ in a checkout (pyproject maps one to the other).
    package = Path(__file__).resolve().parents[1]
    dirs = [Path.cwd() / "spaces", package / "spaces"]
    if (package.parent / "pyproject.toml").is_file():  # a checkout, not site-packages (another "spaces")
        dirs.append(package.parent / "spaces")
    extra = os.environ.get("HPSEARCH_SPACES")
    if extra:
        dirs = [Path(p) for p in extra.split(os.pathsep)] + dirs
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def resolve_space_path(spec: str) -> Path:
    """``spaces/mlp.py`` (a path) or ``mlp`` (a short name looked up in the spaces folders)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"space: give a path such as spaces/mlp.py or a short name such as mlp, got {spec!r}")
    as_path = Path(spec).expanduser()
    if spec.endswith(".py") or os.sep in spec:
        if not as_path.is_file():
            raise ValueError(f"space: no such file {spec!r}")
        return as_path.resolve()
    for d in _spaces_dirs():
        candidate = d / f"{spec}.py"
        if candidate.is_file():
            return candidate.resolve()
    known = sorted({p.stem for d in _spaces_dirs() if d.is_dir() for p in d.glob("*.py") if not p.stem.startswith("_")})
    raise ValueError(f"space: no space module named {spec!r} (known: {', '.join(known) or 'none'})")


def load_space_module(spec: str) -> SpaceModule:
    """Import a search-space module by path or short name and check what it exports."""
    path = resolve_space_path(spec)
    module_name = f"hpsearch_space_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"space: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # a user's module may raise anything; report it as one line
        sys.modules.pop(module_name, None)
        raise ValueError(f"space: importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from None
    space = getattr(module, "SPACE", None)
    if not isinstance(space, Space):
        raise ValueError(f"SPACE: {str(path)!r} must define SPACE = Space(...), got {type(space).__name__}")
    metric = getattr(module, "METRIC", None)
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"METRIC: {str(path)!r} must name the metric to optimise, got {metric!r}")
    mode = getattr(module, "MODE", None)
    if mode not in [m.value for m in Mode]:
        raise ValueError(f"MODE: must be 'max' or 'min', got {mode!r} in {str(path)!r}")
    max_epochs = getattr(module, "MAX_EPOCHS", None)
    try:
        whole("MAX_EPOCHS", max_epochs, 1)
    except ValueError as exc:
        raise ValueError(f"{exc} in {str(path)!r}") from None
    train = getattr(module, "TRAIN", None)
    if train is not None and not callable(train):
        raise ValueError(f"TRAIN: must be a function train(config), got {type(train).__name__} in {str(path)!r}")
    model = getattr(module, "MODEL", None)
    if model is not None and not callable(model):
        raise ValueError(f"MODEL: must be a function MODEL(config) building the network, got {type(model).__name__} "
                         f"in {str(path)!r}")
    dataset = getattr(module, "DATASET", None)
    if dataset is not None and not isinstance(dataset, str):
        raise ValueError(f"DATASET: must be a dataset name, got {dataset!r} in {str(path)!r}")
    data_version = getattr(module, "DATA_VERSION", None)
    if data_version is not None and not callable(data_version) and (not isinstance(data_version, str) or not data_version):
        raise ValueError(f"data_version: DATA_VERSION must be a non-empty string or a function returning one, "
                         f"got {data_version!r} in {str(path)!r}")
    return SpaceModule(path.stem, path, space, metric, mode, max_epochs, dataset, train, model, data_version)
