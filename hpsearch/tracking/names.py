"""Child run names a person can read in the MLflow UI's runs table and chart legends.

A trial's run is named after the values of the parameters the sweep varies, shortened, with a
short form of its trial id so two trials with the same rounded values stay apart:
``lr=0.05 w=16 · #3``. A run that a scheduler stopped early is renamed at its end with a marker in
front, ``[stopped@2] lr=1e-5 w=32 · #2``, so the table tells it from a completed one at a glance.

Names are for people only: hpsearch finds a trial's run by its ``hpsearch.trial_id`` tag, so runs
of earlier versions, named ``trial-<id>``, are found and continued just the same.

Example:
    >>> from hpsearch.space import Choice, Fixed, Float, Space
    >>> space = Space(Float("learning_rate", 1e-4, 1e-1, log=True), Float("weight_decay", 0.0, 0.1),
    ...               Choice("batch_size", [32, 64]), Fixed("model", "mlp"))
    >>> config = {"learning_rate": 0.00312, "weight_decay": 1e-4, "batch_size": 64, "model": "mlp"}
    >>> run_name(config, space, "7c1e2f3a")
    'lr=3.1e-3 wd=1e-4 bs=64 · 2f3a'
    >>> stopped_name(run_name(config, space, "a1b2c_00007"), 3)
    '[stopped@3] lr=3.1e-3 wd=1e-4 bs=64 · #7'
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from hpsearch.space import Choice, Derived, Fixed, Space

# Abbreviations people already use for the usual hyperparameters, roughly by how much they usually
# matter: the name shows these first, then the others in the space's order. Other names are
# shortened by rule (``alias``).
KNOWN = {
    "learning_rate": "lr", "lr": "lr", "weight_decay": "wd", "batch_size": "bs", "dropout": "do",
    "momentum": "mom", "optimizer": "opt", "width": "w", "depth": "d", "hidden_size": "hs", "num_layers": "nl",
    "activation": "act", "epochs": "ep", "warmup_steps": "wu", "label_smoothing": "ls",
}
NAME_WIDTH = 40  # characters of parameters, before the trial's short id
MAX_PARAMS = 4
SEPARATOR = " · "
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_RAY_COUNTER = re.compile(r"^[0-9a-f]+_(\d+)$")  # Ray's grid and random trial ids: a prefix, then a counter


def alias(name: str) -> str:
    """A short name for a parameter: a known abbreviation, the initials of a name of several words,
    or a single word cut to three letters when it is longer than five.

    Example:
        >>> [alias(n) for n in ("learning_rate", "token_dropout", "hiddenDim", "norm", "scheduler")]
        ['lr', 'td', 'hd', 'norm', 'sch']
    """
    if name in KNOWN:
        return KNOWN[name]
    words = _WORDS.findall(name)
    if len(words) > 1:
        return "".join(w[0] for w in words).lower()
    return name if len(name) <= 5 else name[:3]


def short_value(value: Any) -> str:
    """A value in few characters: numbers to two significant digits (exponents without padding),
    text cut to eight characters.

    Example:
        >>> [short_value(v) for v in (0.003, 0.00025, 0.05, 0.25, 1.0, 12.34, 256, 123456, 1e12, "adamw", True)]
        ['3e-3', '2.5e-4', '0.05', '0.25', '1', '12', '256', '1.2e5', '1e12', 'adamw', 'True']
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) and abs(value) < 10_000:
        return str(value)
    if isinstance(value, (int, float)):
        v = float(value)
        if not math.isfinite(v) or v == 0:
            return f"{v:g}"
        if abs(v) < 0.01 or abs(v) >= 10_000:
            mantissa, exponent = f"{v:.1e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2g}"
    text = str(value)
    return text if len(text) <= 8 else text[:7] + "…"


def short_id(trial_id: str) -> str:
    """A trial id in a few characters, unique within a sweep: Ray's counter (``#7``) for its grid
    and random trials, else the id's last four characters.

    Example:
        >>> short_id("a1b2c_00007"), short_id("7c1e2f3a")
        ('#7', '2f3a')
    """
    counter = _RAY_COUNTER.match(trial_id)
    return f"#{int(counter.group(1))}" if counter else trial_id[-4:]


def varied(space: Space) -> list[str]:
    """The parameters whose value a sweep chooses (not fixed, not derived): the ``KNOWN`` ones
    first, in that order, then the others in the space's order.

    Example:
        >>> from hpsearch.space import Choice, Fixed, Float, Space
        >>> varied(Space(Choice("act", ["relu", "gelu"]), Float("lr", 1e-3, 1e-1), Fixed("seed", 0)))
        ['lr', 'act']
    """
    names = [p.name for p in space.tuned
             if not isinstance(p, (Fixed, Derived)) and not (isinstance(p, Choice) and len(p.options) == 1)]
    rank = {name: i for i, name in enumerate(KNOWN)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))  # stable: the others keep the space's order


def run_name(config: Mapping[str, Any], space: Space, trial_id: str, width: int = NAME_WIDTH,
             max_params: int = MAX_PARAMS) -> str:
    """A trial's child run name: ``alias=value`` for the first ``max_params`` varied parameters
    that fit in ``width`` characters (at least one), then ``short_id``. A conditional parameter a
    config does not use is left out; with nothing varied, the name is ``trial``.

    Example:
        >>> from hpsearch.space import Choice, Fixed, Space
        >>> run_name({"lr": 0.1, "optimizer": "sgd", "seed": 1}, Space(Choice("lr", [0.1, 0.01]),
        ...          Choice("optimizer", ["sgd", "adamw"]), Fixed("seed", 1)), "ab12c_00003")
        'lr=0.1 opt=sgd · #3'
    """
    parts: list[str] = []
    used: set[str] = set()
    for name in varied(space):
        if name not in config or config[name] is None:
            continue
        short = alias(name)
        if short in used:  # two names with one alias: the later one keeps more of its name
            short = name[:8]
        part = f"{short}={short_value(config[name])}"
        if parts and (len(parts) >= max_params or len(" ".join([*parts, part])) > width):
            break
        parts.append(part)
        used.add(short)
    return f"{' '.join(parts) or 'trial'}{SEPARATOR}{short_id(trial_id)}"


def stopped_name(name: str, epoch: int) -> str:
    """The name of a run a scheduler stopped early: a marker in front, saying at which epoch, so
    the runs table (which shows FINISHED for it, as for a completed trial) tells them apart."""
    return f"[stopped@{epoch}] {name}"
