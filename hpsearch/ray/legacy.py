"""The module names hpsearch had before its sub-packages, for sweeps saved under them.

Ray pickles a sweep's Tuner (scheduler, searcher, stopper, callbacks, the trial-folder namer) and
its searcher's state by import path: ``hpsearch.persist.ResumableASHA``,
``hpsearch.tpe.PrunedAwareOptunaSearch``, ``hpsearch.engine.trial_dirname``... A sweep (or a
night) interrupted before the layout changed must still resume. ``install`` makes those paths
resolve to where each name lives now: a module that no longer exists becomes an alias, and a module
that still exists looks a name it lost up in its successors. Only a resume installs it.

Example:
    >>> install()
    >>> import pickle
    >>> pickle.loads(b"chpsearch.persist\\nResumableASHA\\n.").__module__
    'hpsearch.ray.schedulers'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

# Each module before the sub-packages -> the modules its names live in now.
MOVED = {
    "hpsearch.params": ("hpsearch.space.params",),
    "hpsearch.space": ("hpsearch.space.space", "hpsearch.space.params"),
    "hpsearch.modules": ("hpsearch.space.modules",),
    "hpsearch.strategies": ("hpsearch.search.strategies", "hpsearch.ray.searchers"),
    "hpsearch.schedulers": ("hpsearch.search.schedulers", "hpsearch.ray.schedulers", "hpsearch.settings"),
    "hpsearch.tpe": ("hpsearch.ray.searchers",),
    "hpsearch.session": ("hpsearch.trial.session",),
    "hpsearch.ddp": ("hpsearch.trial.ddp",),
    "hpsearch.data": ("hpsearch.trial.data",),
    "hpsearch.train": ("hpsearch.trial.train",),
    "hpsearch.trial": ("hpsearch.trial.entry",),
    "hpsearch.workers": ("hpsearch.trial.workers",),
    "hpsearch.settings": ("hpsearch.record", "hpsearch.environment", "hpsearch.tracking.uri"),
    "hpsearch.vocab": ("hpsearch.text",),
    "hpsearch.results": (),
    "hpsearch.store": ("hpsearch.tracking.store",),
    "hpsearch.writer": ("hpsearch.tracking.writer",),
    "hpsearch.tracking": ("hpsearch.tracking.tracker", "hpsearch.tracking.reconcile", "hpsearch.tracking.close",
                          "hpsearch.ray.callbacks"),
    "hpsearch.analysis": ("hpsearch.tracking.analysis",),
    "hpsearch.cluster": ("hpsearch.ray.cluster",),
    "hpsearch.callbacks": ("hpsearch.ray.callbacks",),
    "hpsearch.stopper": ("hpsearch.ray.stopper",),
    "hpsearch.persist": ("hpsearch.ray.schedulers", "hpsearch.ray.checkpoints"),
    "hpsearch.progress": ("hpsearch.ray.callbacks",),
    "hpsearch.engine": ("hpsearch.ray.tuner", "hpsearch.record"),
    "hpsearch.curves": ("hpsearch.simulate.curves",),
}


def _lookup(old: str):
    """A module ``__getattr__`` that finds a name ``old`` held in the modules it moved to."""
    def __getattr__(name: str):
        if not name.startswith("__") and not _exists(f"{old}.{name}"):  # a submodule is imported, not looked up
            for new in MOVED[old]:
                module = importlib.import_module(new)
                if name in vars(module):
                    return vars(module)[name]
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a module of ``MOVED`` that no longer exists as an empty module with the lookup."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED and not _exists(fullname):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name, f"hpsearch's former {spec.name}: names now in {', '.join(MOVED[spec.name])}")
        module.__getattr__ = _lookup(spec.name)
        return module

    def exec_module(self, module) -> None:
        pass


def _exists(name: str) -> bool:
    """Whether ``name`` is a module of the installed hpsearch, found by the other finders."""
    parent = importlib.import_module(name.rsplit(".", 1)[0])
    path = getattr(parent, "__path__", None)
    if path is None:
        return False
    return any(finder.find_spec(name, path) is not None for finder in sys.meta_path
               if not isinstance(finder, _Aliases) and hasattr(finder, "find_spec"))


def install() -> None:
    """Make the names of ``MOVED`` resolve (idempotent)."""
    if not any(isinstance(f, _Aliases) for f in sys.meta_path):
        sys.meta_path.append(_Aliases())  # last: a module that exists is always found first
    for old in MOVED:
        if _exists(old):
            module = importlib.import_module(old)
            if "__getattr__" not in vars(module):
                module.__getattr__ = _lookup(old)
