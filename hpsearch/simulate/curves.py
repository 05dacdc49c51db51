"""Recorded learning curves as a table: what ``hpsearch simulate`` replays.

A ``CurveTable`` holds, for each recorded configuration, its metric after every epoch and the
seconds each epoch took, plus the space the configurations come from. It is read from any
finished sweep in MLflow (per-epoch metrics are logged with ``step=epoch``; an epoch's seconds are
the gaps between its metric's timestamps) or from a file (``.npz``: two arrays and a JSON header).

Only whole curves make a table: a trial that a scheduler stopped early says nothing about its
later epochs, so it is left out (and counted). A trial that failed (diverged) is kept: its curve
ends where it failed, and a replay fails it there too.

A configuration the table lacks is answered by the nearest recorded one in the space's unit cube
(each tuned parameter mapped to [0, 1] by its own scale; a categorical value or an active-versus-
inactive conditional parameter counts as distance 1); the distance is reported with every answer.

Example:
    >>> from hpsearch.space import Space, Float
    >>> t = CurveTable.build(Space(Float("lr", 1e-3, 1e-1, log=True)), "acc", "max",
    ...                      [{"lr": 1e-3}, {"lr": 1e-1}], [[0.1, 0.2], [0.3, 0.5]], [[1.0, 1.0], [2.0, 2.0]])
    >>> t.nearest({"lr": 0.05})[0], round(t.nearest({"lr": 0.05})[1], 3)
    (1, 0.151)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hpsearch.space import Choice, Derived, Fixed, Space
from hpsearch.tracking.analysis import SweepData, find_parent, load_sweep, param_from_text
from hpsearch.vocab import TAG_SWEEP, Mode, TrialStatus

FORMAT = 1  # the file header's "hpsearch_curves" version


@dataclass(frozen=True, eq=False)
class CurveTable:
    """``values[i, e]``: the metric of configuration ``i`` after epoch ``e + 1`` (NaN past its end);
    ``seconds[i, e]``: how long that epoch took; ``failed[i]``: the trial failed after its last
    recorded epoch."""

    space: Space
    metric: str
    mode: str
    configs: tuple[dict[str, Any], ...]
    values: np.ndarray
    seconds: np.ndarray
    failed: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.configs)
        if n == 0:
            raise ValueError("table: needs at least one recorded configuration, got none")
        if self.values.shape != self.seconds.shape or self.values.shape[0] != n or self.failed.shape != (n,):
            raise ValueError(f"table: {n} configurations but values {self.values.shape}, seconds {self.seconds.shape}")
        Mode.parse(self.mode)
        object.__setattr__(self, "_unit", self._encode(self.configs))
        finite = self.seconds[np.isfinite(self.seconds)]
        fallback = float(np.median(finite)) if finite.size else 1.0
        medians = [float(np.median(r[np.isfinite(r)])) if np.isfinite(r).any() else fallback for r in self.seconds]
        object.__setattr__(self, "_medians", medians)

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, space: Space, metric: str, mode: str, configs: Sequence[Mapping[str, Any]],
              curves: Sequence[Sequence[float]], seconds: Sequence[Sequence[float]],
              failed: Sequence[bool] | None = None, source: str = "") -> "CurveTable":
        """A table from lists of curves (they may differ in length: shorter ones are padded with NaN)."""
        width = max((len(c) for c in curves), default=0)
        values = np.full((len(curves), width), np.nan)
        secs = np.full((len(curves), width), np.nan)
        for i, (c, s) in enumerate(zip(curves, seconds)):
            if len(s) != len(c):
                raise ValueError(f"table: configuration {i} has {len(c)} values but {len(s)} epoch durations")
            values[i, : len(c)] = c
            secs[i, : len(s)] = s
        flags = np.zeros(len(curves), bool) if failed is None else np.asarray(failed, bool)
        return cls(space, metric, str(Mode.parse(mode)), tuple(space.complete(c) for c in configs), values, secs, flags, source)

    @property
    def max_epochs(self) -> int:
        return int(self.values.shape[1])

    @cached_property  # the simulator asks at every simulated epoch: computed once (profiled: half its time)
    def lengths(self) -> np.ndarray:
        """Epochs recorded per configuration."""
        return np.sum(~np.isnan(self.values), axis=1)

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def median_seconds(self) -> float:
        """The median epoch's seconds over the whole table."""
        return float(np.median(self.seconds[np.isfinite(self.seconds)]))

    def epoch_time(self, row: int, epoch_index: int) -> float:
        """Seconds of epoch ``epoch_index + 1`` of a row; past its recorded end (the epoch a failed
        trial broke in), the row's median epoch."""
        seconds = self.seconds[row, epoch_index] if epoch_index < self.seconds.shape[1] else math.nan
        if math.isnan(seconds):
            seconds = self._medians[row]  # type: ignore[attr-defined]
        return float(seconds)

    def best(self) -> float:
        """The best value any configuration reached at any epoch."""
        return float(np.nanmax(self.values) if Mode(self.mode) is Mode.MAX else np.nanmin(self.values))

    def describe(self) -> str:
        done = int(np.sum(self.lengths == self.max_epochs))
        return (f"{len(self)} configurations ({done} trained to epoch {self.max_epochs}, {int(self.failed.sum())} failed), "
                f"{self.metric} ({self.mode}), median epoch {self.median_seconds:.3g} s"
                + (f"; from {self.source}" if self.source else ""))

    # -- nearest configuration ----------------------------------------------------------------

    def _columns(self) -> list:
        return [p for p in self.space.tuned if not isinstance(p, (Fixed, Derived))]

    def _encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Unit-cube coordinates; NaN where a conditional parameter is inactive, a Choice's option index."""
        cols = self._columns()
        out = np.full((len(configs), len(cols)), np.nan)
        for i, c in enumerate(configs):
            for j, p in enumerate(cols):
                if p.name in c and p.active(c) and p.contains(c[p.name]):
                    out[i, j] = p.options.index(c[p.name]) if isinstance(p, Choice) else p.to_unit(c[p.name])
        return out

    def nearest(self, config: Mapping[str, Any]) -> tuple[int, float]:
        """The recorded configuration closest to ``config``, and its distance (0: recorded as such)."""
        u = self._encode([self.space.complete(config)])[0]
        table = self._unit  # type: ignore[attr-defined]
        cats = np.array([isinstance(p, Choice) for p in self._columns()], bool)
        a, b = np.isnan(table), np.isnan(u)[None, :]
        diff = np.abs(table - u[None, :])
        diff[:, cats] = (diff[:, cats] > 0).astype(float)
        diff = np.where(a & b, 0.0, np.where(a | b, 1.0, diff))
        dist = np.sqrt(np.sum(diff * diff, axis=1))
        i = int(np.argmin(dist))
        return i, float(dist[i])

    # -- files --------------------------------------------------------------------------------

    def save(self, path: str | Path, command: str = "") -> Path:
        """Write a compressed ``.npz``: ``values`` and ``seconds`` (float32) and a JSON header."""
        path = Path(path)
        header = {"hpsearch_curves": FORMAT, "metric": self.metric, "mode": self.mode, "space": self.space.to_dict(masked=True),
                  "configs": list(self.configs), "failed": self.failed.tolist(), "source": self.source, "command": command}
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, values=self.values.astype(np.float32), seconds=self.seconds.astype(np.float32),
                                header=np.array(json.dumps(header)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CurveTable":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"table: no such file {str(path)!r}")
        try:
            with np.load(path, allow_pickle=False) as f:
                header = json.loads(str(f["header"]))
                values, seconds = f["values"].astype(float), f["seconds"].astype(float)
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"table: {str(path)!r} is not a curve table written by hpsearch ({exc})") from None
        if header.get("hpsearch_curves") != FORMAT:
            raise ValueError(f"table: {str(path)!r} has format {header.get('hpsearch_curves')!r}, expected {FORMAT}")
        return cls(Space.from_dict(header["space"]), header["metric"], header["mode"], tuple(header["configs"]),
                   values, seconds, np.asarray(header["failed"], bool), header.get("source") or str(path))

    @classmethod
    def from_sweep(cls, client, name: str, experiment: str | None = None) -> "CurveTable":
        """The whole curves of a finished sweep in MLflow (trials stopped early are left out)."""

        return cls.from_parent(client, find_parent(client, name, experiment))

    @classmethod
    def from_parent(cls, client, parent, data: SweepData | None = None) -> "CurveTable":
        """``from_sweep`` for a sweep's parent run already found (``data``: its trials, if read)."""

        name = parent.data.tags.get(TAG_SWEEP, parent.info.run_id)
        data = data or load_sweep(client, parent)
        configs, curves, seconds, failed = [], [], [], []
        for row in data.rows:
            whole = row.status == str(TrialStatus.COMPLETED) and len(row.curve) >= data.max_epochs
            broke = row.status == str(TrialStatus.FAILED)
            if not (whole or broke) or not row.curve:
                continue
            steps = [s for s, _ in row.curve]
            if steps != list(range(1, len(steps) + 1)):
                continue  # a curve with holes (an epoch never logged) cannot be replayed
            configs.append({k: param_from_text(data.space, k, v) for k, v in row.params.items() if k in data.space})
            curves.append([v for _, v in row.curve][: data.max_epochs])
            seconds.append(epoch_seconds(row.start_ms, [t for _, t in row.stamps])[: data.max_epochs])
            failed.append(broke)
        if not configs:
            raise ValueError(f"name: sweep {name!r} has no trial trained to its last epoch ({data.max_epochs}); "
                             "a table needs whole curves (a FIFO sweep records them)")
        return cls.build(data.space, data.metric, data.mode, configs, curves, seconds, failed,
                         source=f"sweep {name} ({len(configs)} of {len(data.rows)} trials)")


def epoch_seconds(start_ms: int, stamps_ms: Sequence[int]) -> list[float]:
    """Seconds per epoch from the times its metric was reported.

    The first gap also holds the trial's start-up, so the first epoch takes the median of the
    others (or that gap, for a one-epoch curve).

    Example:
        >>> epoch_seconds(0, [3000, 4000, 5500])
        [1.25, 1.0, 1.5]
    """
    gaps = [(b - a) / 1000 for a, b in zip([start_ms, *stamps_ms], stamps_ms)]
    if len(gaps) > 1:
        gaps[0] = float(np.median(gaps[1:]))
    return [max(g, 1e-3) for g in gaps]


def table_beside(module_path: str | Path | None) -> Path | None:
    """The shipped table of a space module: ``spaces/mlp.py`` -> ``spaces/mlp.curves.npz``, if there."""
    if not module_path:
        return None
    path = Path(module_path).with_suffix(".curves.npz")
    return path if path.is_file() else None


def check_table_fits(table: CurveTable, space: Space, metric: str, max_epochs: int) -> None:
    """One line if a table cannot answer for a sweep of ``space`` to ``max_epochs`` on ``metric``."""
    if table.metric != metric:
        raise ValueError(f"metric: the table records {table.metric!r}, the sweep optimises {metric!r}")
    if max_epochs > table.max_epochs:
        raise ValueError(f"max_epochs: the table's curves end at epoch {table.max_epochs}, got max_epochs={max_epochs}")
    missing = sorted({p.name for p in space.tuned} - {p.name for p in table.space.tuned})
    if missing:
        raise ValueError(f"space: the table was recorded without parameter {missing[0]!r}; record a sweep of this space")
    if not math.isfinite(table.best()):
        raise ValueError(f"table: no finite {table.metric} recorded")
