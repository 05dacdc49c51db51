"""What a sweep is once it is checked: ``PreparedSweep`` (plain data the driver runs) and
``SweepRecord`` (what it writes beside Ray's results, so ``resume`` rebuilds the same sweep).

Plain data, below the driver: the engine builds them, the nightly ledger and the simulator read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpsearch.settings import SweepSettings
from hpsearch.space import Space
from hpsearch.storage import Location, open_storage
from hpsearch.trial.data import Dataset
from hpsearch.trial.entry import Replay
from hpsearch.vocab import SETTINGS_FILE


@dataclass(frozen=True)
class SweepRecord:
    """What a sweep writes beside Ray's results (``hpsearch.json``): its resolved settings, the
    space module it came from, and the space as it was, so ``resume`` rebuilds the same sweep."""

    settings: SweepSettings
    space_path: str | None
    space: dict[str, Any]

    @property
    def folder(self) -> Location:
        return self.settings.folder

    def save(self) -> None:
        data = {"settings": self.settings.to_json(), "space_path": self.space_path, "space": self.space}
        (self.folder / SETTINGS_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, name: str, storage: str | None = None) -> "SweepRecord":
        """The record of a sweep, by name, from its storage (a local folder or a URI: one line if
        it cannot be opened)."""
        root = open_storage(storage)
        path = root / name / SETTINGS_FILE
        if not path.exists():
            known = sorted(c.name for c in root.children() if (c / SETTINGS_FILE).exists()) if root.is_local else []
            raise ValueError(f"name: no sweep {name!r} under {root.uri!r}"
                             + (f" (known: {', '.join(known[-5:]) or 'none'})" if root.is_local else ""))
        data = json.loads(path.read_text())
        if "settings" not in data:  # written before November 2026: one flat object
            data = {"space_path": data.pop("space_path"), "space": data.pop("space"), "settings": data}
            data["settings"]["tracking_uri"] = data["settings"]["tracking_uri"] or False  # None meant off
        return cls(SweepSettings.from_mapping(data["settings"], f" in {path}"), data["space_path"], data["space"])


@dataclass
class PreparedSweep:
    """A sweep checked and ready: resolved settings, the space, the trainable and its data."""

    settings: SweepSettings  # every field resolved
    space: Space
    space_path: str | None  # the space module, if the sweep came from one
    train_fn: Callable[..., Any]
    data: Dataset | None
    points_to_evaluate: list[dict[str, Any]]
    # config_hash -> a result recorded earlier with the same budget, data and code (see Replay);
    # such a trial replays it instead of training again.
    reuse: dict[str, Replay] = field(default_factory=dict)
    deadline: float | None = None  # time.time() after which running trials are stopped
    # Multi-worker trials: how many worker groups the cluster holds at once (set when Ray is joined).
    groups_at_once: int | None = None
    # Builds the trainable's network from a config (MODEL), for the best trial's state dict.
    model_fn: Callable[..., Any] | None = None
    # --budget: what the choice of settings said (hpsearch.simulate.budget), for the console and the parent run.
    budget_lines: list[str] = field(default_factory=list)
    forecast: Any = None  # hpsearch.simulate.budget.Forecast: the promise, re-forecast as the sweep runs
    # Trials evaluated before (a nightly's earlier nights), told to TPE without running them again:
    # config, state (completed, stopped, failed), value, curve, night (hpsearch.ray.searchers.tell_earlier).
    told: list[dict[str, Any]] = field(default_factory=list)
    parent_tags: dict[str, str] = field(default_factory=dict)  # added to a new parent run's tags

    @property
    def path(self) -> Location:
        """The sweep's folder in its storage."""
        return self.settings.folder

    @property
    def code_folder(self) -> str | None:
        """The space module's folder (what a joined cluster gets as the job's working_dir)."""
        return str(Path(self.space_path).parent) if self.space_path else None

    @property
    def record(self) -> SweepRecord:
        return SweepRecord(self.settings, self.space_path, self.space.to_dict())
