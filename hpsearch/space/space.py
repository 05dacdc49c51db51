"""Search spaces: a small frozen vocabulary of parameters and a ``Space`` that validates as a whole.

The parameters live in ``hpsearch.space.params`` and ``hpsearch.space`` re-exports them, so a
space module needs one import. This module knows nothing of Ray, Optuna, MLflow or torch;
conversion to Optuna lives in ``hpsearch.search.strategies``, to Ray in ``hpsearch.ray.searchers``;
loading space modules lives in ``hpsearch.space.modules``.

Example:
    >>> from hpsearch.space import Space, Float, PowerOfTwo, Choice
    >>> space = Space(
    ...     Float("lr", 1e-4, 1e-2, log=True, grid=3),
    ...     PowerOfTwo("batch_size", 32, 64),
    ...     Choice("optimizer", ["adamw", "sgd"]),
    ...     Float("momentum", 0.8, 0.99, when={"optimizer": "sgd"}, grid=2),
    ... )
    >>> len(space.grid())
    18
    >>> space.grid()[0]
    {'batch_size': 32, 'lr': 0.0001, 'optimizer': 'adamw'}
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Iterable, Iterator, Mapping, Sequence

from hpsearch.space.params import KINDS, Choice, Config, Derived, Fixed, Float, Int, Param, PowerOfTwo, Scalar, tidy
from hpsearch.text import MASK, is_secret
from hpsearch.vocab import is_whole

__all__ = ["Choice", "Config", "Derived", "Fixed", "Float", "Grid", "Int", "Param", "PowerOfTwo", "Scalar", "Space"]


class Grid(Sequence[Config]):
    """Every configuration of a space, in a deterministic order; ``len()`` and indexing.

    Conditional parameters are expanded only where they are active, so a grid over
    ``optimizer in {adamw, sgd}`` with three momentum values has 1 + 3 entries, not 2 x 3.
    """

    def __init__(self, space: "Space") -> None:
        self._space = space
        configs: list[Config] = [{}]
        for param in space.tuned:
            expanded: list[Config] = []
            for config in configs:
                if param.active(config):
                    expanded.extend({**config, param.name: value} for value in param.grid_values())
                else:
                    expanded.append(config)
            configs = expanded
        self._configs = [space.complete(c) for c in configs]

    def __len__(self) -> int:
        return len(self._configs)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [dict(c) for c in self._configs[index]]
        if not is_whole(index):
            raise TypeError(f"grid index must be an int or a slice, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"grid index {index} out of range for a grid of {len(self)} configurations")
        return dict(self._configs[index])

    def __iter__(self) -> Iterator[Config]:
        return (dict(c) for c in self._configs)


class Space:
    """An ordered, validated set of parameters.

    Example:
        >>> space = Space(Float("base_lr", 1e-3, 1e-1, log=True), PowerOfTwo("batch_size", 128, 512),
        ...               Derived("lr", "base_lr * batch_size / 256"))
        >>> config = space.sample(1, seed=0)[0]
        >>> abs(config["lr"] - config["base_lr"] * config["batch_size"] / 256) < 1e-12
        True
    """

    def __init__(self, *params: Param) -> None:
        if len(params) == 1 and not isinstance(params[0], Param) and isinstance(params[0], Iterable):
            params = tuple(params[0])  # Space([p1, p2]) as well as Space(p1, p2)
        if not params:
            raise ValueError("space: needs at least one parameter, got none")
        for p in params:
            if not isinstance(p, Param):
                raise ValueError(f"space: every entry must be a parameter (Float, Int, ...), got {p!r}")
        names = [p.name for p in params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{dupes[0]}: parameter names must be unique, got {names.count(dupes[0])} definitions")
        self._params = {p.name: p for p in params}
        self._order = self._topological_order()
        self._check_conditions()

    # -- validation ------------------------------------------------------------------------

    def _topological_order(self) -> list[Param]:
        for p in self._params.values():
            for ref in p.references():
                if ref == p.name:
                    raise ValueError(f"{p.name}: cannot depend on itself")
                if ref not in self._params:
                    raise ValueError(
                        f"{p.name}: refers to {ref!r}, which is not a parameter of this space "
                        f"(have {', '.join(sorted(self._params))})"
                    )
        order: list[Param] = []
        done: set[str] = set()
        pending = dict(self._params)
        while pending:
            ready = sorted(n for n, p in pending.items() if set(p.references()) <= done)
            if not ready:
                cycle = " -> ".join(sorted(pending))
                raise ValueError(f"{min(pending)}: dependencies form a cycle among {cycle}")
            for n in ready:
                order.append(pending.pop(n))
                done.add(n)
        return order

    def _check_conditions(self) -> None:
        for p in self._params.values():
            for parent_name, values in p.conditions:
                parent = self._params[parent_name]
                if isinstance(parent, Derived):
                    raise ValueError(f"{p.name}: a condition must name a tuned parameter, {parent_name!r} is derived")
                impossible = [v for v in values if not parent.contains(v)]
                if impossible:
                    raise ValueError(
                        f"{p.name}: condition {parent_name} == {impossible[0]!r} can never hold "
                        f"({parent_name} takes {parent.grid_values() if not isinstance(parent, Float) else 'floats'})"
                    )
            if isinstance(p, Derived):
                conditional = [r for r in p.references() if self._params[r].conditions]
                if conditional:
                    raise ValueError(
                        f"{p.name}: a derived value cannot use the conditional parameter {conditional[0]!r}, "
                        "which is absent from some configurations"
                    )

    # -- access ----------------------------------------------------------------------------

    @property
    def params(self) -> tuple[Param, ...]:
        """Parameters in dependency order (parents before the values that depend on them)."""
        return tuple(self._order)

    @property
    def tuned(self) -> tuple[Param, ...]:
        """Parameters that take values (everything but derived ones), in dependency order."""
        return tuple(p for p in self._order if not isinstance(p, Derived))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._order]

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._params == other._params

    def __repr__(self) -> str:
        return f"Space({', '.join(map(repr, self._order))})"

    # -- configurations ----------------------------------------------------------------------

    def complete(self, partial: Mapping[str, Any]) -> Config:
        """Drop inactive conditional values, add derived ones; keys in a stable (sorted) order."""
        config: Config = {}
        for p in self._order:
            if not p.active(config):
                continue
            if isinstance(p, Derived):
                config[p.name] = p.compute(config)
            elif p.name in partial:
                config[p.name] = partial[p.name]
        return dict(sorted(config.items()))

    def validate_config(self, config: Mapping[str, Any]) -> Config:
        """Check a full configuration (a warm-start point, say) against the space; return it completed."""
        for p in self.tuned:
            present = p.name in config
            if p.active(config) and not present:
                raise ValueError(f"{p.name}: missing from configuration {dict(config)!r}")
            if present and p.active(config) and not p.contains(config[p.name]):
                raise ValueError(f"{p.name}: value {config[p.name]!r} is outside the space ({p!r})")
        unknown = sorted(set(config) - set(self._params))
        if unknown:
            raise ValueError(f"{unknown[0]}: not a parameter of this space (have {', '.join(self.names)})")
        return self.complete(config)

    def sample(self, n: int, seed: int) -> list[Config]:
        """``n`` random configurations; the same seed always gives the same list."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n: must be a whole number >= 0, got n={n!r}")
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            config: Config = {}
            for p in self.tuned:
                if p.active(config):
                    config[p.name] = p.sample(rng)
            out.append(self.complete(config))
        return out

    def grid(self) -> Grid:
        """Every configuration: grid points per parameter, conditionals only where active."""
        return Grid(self)

    def config_hash(self, config: Mapping[str, Any]) -> str:
        """A stable short hash of a configuration; floats are rounded so noise does not change it."""
        norm = {k: (tidy(v) if isinstance(v, float) else v) for k, v in sorted(self.complete(config).items())}
        return hashlib.sha1(json.dumps(norm, sort_keys=True).encode()).hexdigest()[:12]

    def fingerprint(self) -> str:
        """A short hash of the space's definition: sweeps with the same one searched the same space.

        Example:
            >>> Space(Float("lr", 1e-4, 1e-1, log=True)).fingerprint() == Space(Float("lr", 1e-4, 1e-1, log=True)).fingerprint()
            True
        """
        return hashlib.sha1(json.dumps(self.to_dict(masked=True), sort_keys=True).encode()).hexdigest()[:12]

    # -- JSON --------------------------------------------------------------------------------

    def to_dict(self, masked: bool = False) -> dict[str, Any]:
        """``masked``: a fixed value whose name says it is a secret reads ``***`` (``vocab.is_secret``):
        the form logged to MLflow and written into tables; the sweep's own record keeps the value."""
        params = [p.to_dict() for p in self._order]
        if masked:
            params = [{**d, "value": MASK} if "value" in d and is_secret(d["name"]) else d for d in params]
        return {"hpsearch_space": 1, "params": params}

    def to_json(self, masked: bool = False) -> str:
        return json.dumps(self.to_dict(masked), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Space":
        if not isinstance(data, Mapping) or data.get("hpsearch_space") != 1 or "params" not in data:
            raise ValueError("space: not a recorded hpsearch space (expected {'hpsearch_space': 1, 'params': [...]})")
        params = []
        for entry in data["params"]:
            entry = dict(entry)
            kind = entry.pop("kind", None)
            if kind not in KINDS:
                raise ValueError(f"{entry.get('name', '?')}: unknown parameter kind {kind!r} (have {', '.join(KINDS)})")
            params.append(KINDS[kind](**entry))
        return cls(*params)

    @classmethod
    def from_json(cls, text: str) -> "Space":
        return cls.from_dict(json.loads(text))


# -- search-space modules ----------------------------------------------------------------------
