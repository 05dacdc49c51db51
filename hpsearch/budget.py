"""What a sweep may spend: ``--budget``, as wall-clock, epochs or worker-hours.

A budget is the user's question ("what fits in 4 hours?") turned into one number in one unit:
``hpsearch.simulate.budget`` picks the settings that fit it, and the sweep's stopper ends the
sweep when it is spent (counted from each start of the driver, as ``--time-budget``).

Example:
    >>> Budget.parse("4h"), Budget.parse("500 epochs"), Budget.parse("16 gpu-h")
    (Budget(kind='wall', amount=14400.0), Budget(kind='epochs', amount=500.0), Budget(kind='gpu-h', amount=16.0))
    >>> str(Budget.parse("1.5h")), Budget.parse("8 cpu-h").describe()
    ('1.5h', '8 CPU-hours')
    >>> Budget.parse("4 weeks")
    Traceback (most recent call last):
    ...
    ValueError: budget: give a wall-clock (4h, 90m), epochs (500 epochs) or worker-hours (16 gpu-h, 8 cpu-h), got '4 weeks'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hpsearch.text import duration

_WALL = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_OTHER = {"epoch": "epochs", "epochs": "epochs", "ep": "epochs",
          "gpu-h": "gpu-h", "gpu-hours": "gpu-h", "gpuh": "gpu-h", "cpu-h": "cpu-h", "cpu-hours": "cpu-h", "cpuh": "cpu-h"}
_TEXT = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*([a-z-]*)\s*")
KINDS = ("wall", "epochs", "cpu-h", "gpu-h")


@dataclass(frozen=True)
class Budget:
    """``kind``: wall (``amount`` in seconds), epochs (summed over trials), cpu-h or gpu-h (the
    hours a trial's CPUs or GPUs are held, summed over trials)."""

    kind: str
    amount: float

    @classmethod
    def parse(cls, text: str) -> "Budget":
        found = _TEXT.fullmatch(str(text).lower())
        unit = found.group(2) if found else ""
        if found is None or (unit not in _WALL and unit not in _OTHER):
            raise ValueError("budget: give a wall-clock (4h, 90m), epochs (500 epochs) or worker-hours "
                             f"(16 gpu-h, 8 cpu-h), got {text!r}")
        value = float(found.group(1))
        if not value > 0 or math.isinf(value):
            raise ValueError(f"budget: must be > 0, got {text!r}")
        if unit in _WALL:
            return cls("wall", value * _WALL[unit])
        return cls(_OTHER[unit], value)

    def __str__(self) -> str:
        if self.kind == "wall":
            for unit in ("d", "h", "m"):
                if self.amount >= _WALL[unit] and (self.amount / _WALL[unit]) * 100 == round((self.amount / _WALL[unit]) * 100):
                    return f"{self.amount / _WALL[unit]:g}{unit}"
            return f"{self.amount:g}s"
        return f"{self.amount:g} {self.kind}"

    def describe(self, amount: float | None = None) -> str:
        """``amount`` (default the budget's) in this budget's unit, for people."""
        value = self.amount if amount is None else amount
        if self.kind == "wall":
            return duration(value)
        if self.kind == "epochs":
            return f"{value:.0f} epochs"
        return f"{value:.3g} {self.kind[:3].upper()}-hours"

    def units_per_trial(self, cpus: float, gpus: float, workers: int) -> float:
        """What one trial holds of what a worker-hour budget counts (1 for the others)."""
        if self.kind == "gpu-h":
            return gpus * workers
        if self.kind == "cpu-h":
            return cpus * workers
        return 1.0

    def spent(self, wall_s: float, epochs: float, worker_s: float, units: float) -> float:
        """What a sweep of ``wall_s`` seconds, ``epochs`` epochs and ``worker_s`` seconds of trial
        time (trials of ``units`` each) spent, in this budget's unit."""
        if self.kind == "wall":
            return wall_s
        if self.kind == "epochs":
            return epochs
        return worker_s * units / 3600
