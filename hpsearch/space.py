"""Search spaces: a small frozen vocabulary of parameters and a ``Space`` that validates as a whole.

Every numeric parameter maps to and from the unit interval (``to_unit`` / ``from_unit``), so the
log scale lives in one place and grid, random and model-based search share it. This module knows
nothing of Ray, Optuna, MLflow or torch; conversions to Ray Tune and Optuna live in
``hpsearch.strategies``.

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

import ast
import hashlib
import importlib.util
import json
import math
import operator
import os
import random
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

Scalar = str | int | float | bool | None
Config = dict[str, Any]

_SIGNIFICANT = 12  # grid points are rounded so that 1e-4 is 1e-4, not 9.999999999999999e-05


def _tidy(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{kind}: the name must be a Python identifier, got name={name!r}")


def _check_grid(name: str, grid: Any) -> None:
    if grid is not None and (not isinstance(grid, int) or isinstance(grid, bool) or grid < 1):
        raise ValueError(f"{name}: grid must be a whole number of points >= 1, got grid={grid!r}")


def _normalise_when(name: str, when: Any) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
    """``{"optimizer": "sgd"}`` or ``{"optimizer": ["sgd", "nesterov"]}`` -> sorted tuple pairs."""
    if when is None:
        return ()
    if isinstance(when, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in when):
        when = dict(when)
    if not isinstance(when, Mapping) or not when:
        raise ValueError(
            f"{name}: when must be a non-empty mapping such as {{'optimizer': 'sgd'}}, got when={when!r}"
        )
    pairs = []
    for parent, values in sorted(when.items()):
        if not isinstance(values, (list, tuple, set, frozenset)):
            values = (values,)
        values = tuple(values)
        if not values:
            raise ValueError(f"{name}: when[{parent!r}] needs at least one value, got when={dict(when)!r}")
        pairs.append((parent, values))
    return tuple(pairs)


@dataclass(frozen=True)
class Param:
    """Base of all parameters. ``when`` makes the parameter exist only for some parent values."""

    name: str

    kind = "param"

    @property
    def conditions(self) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
        return getattr(self, "when", ()) or ()

    def references(self) -> tuple[str, ...]:
        """Names this parameter depends on (conditions, and expressions for ``Derived``)."""
        return tuple(parent for parent, _ in self.conditions)

    def active(self, config: Mapping[str, Any]) -> bool:
        return all(parent in config and config[parent] in values for parent, values in self.conditions)

    def grid_values(self) -> list[Any]:
        raise NotImplementedError

    def sample(self, rng: random.Random) -> Any:
        return self.from_unit(rng.random())

    def from_unit(self, u: float) -> Any:
        raise NotImplementedError

    def to_unit(self, value: Any) -> float:
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "when":
                if value:
                    out["when"] = {parent: list(values) for parent, values in value}
            elif f.name == "options":
                out["options"] = list(value)
            else:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class Float(Param):
    """A real number in ``[low, high]``, on a linear or log scale.

    Example:
        >>> Float("lr", 1e-5, 1e-1, log=True, grid=5).grid_values()
        [1e-05, 0.0001, 0.001, 0.01, 0.1]
    """

    low: float = 0.0
    high: float = 1.0
    log: bool = False
    grid: int = 3
    when: Any = None

    kind = "float"

    def __post_init__(self) -> None:
        _check_name("Float", self.name)
        if not _is_number(self.low) or not _is_number(self.high):
            raise ValueError(f"{self.name}: low and high must be numbers, got low={self.low!r}, high={self.high!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"{self.name}: low and high must be finite, got low={self.low!r}, high={self.high!r}")
        if self.low > self.high:
            raise ValueError(f"{self.name}: needs low <= high, got low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: log scale needs low > 0, got low={self.low!r}")
        _check_grid(self.name, self.grid)
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        object.__setattr__(self, "when", _normalise_when(self.name, self.when))

    def from_unit(self, u: float) -> float:
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return min(max(math.exp(lo + u * (hi - lo)), self.low), self.high)
        return self.low + u * (self.high - self.low)

    def to_unit(self, value: float) -> float:
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def grid_values(self) -> list[float]:
        if self.grid == 1 or self.low == self.high:
            return [_tidy(self.from_unit(0.5))]
        return [_tidy(self.from_unit(i / (self.grid - 1))) for i in range(self.grid)]

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= value <= self.high


@dataclass(frozen=True)
class Int(Param):
    """A whole number in ``[low, high]`` (both included), optionally on a log scale.

    ``grid=None`` enumerates every value when there are at most 10, else 5 spread points.

    Example:
        >>> Int("depth", 1, 4).grid_values()
        [1, 2, 3, 4]
    """

    low: int = 0
    high: int = 1
    log: bool = False
    grid: int | None = None
    when: Any = None

    kind = "int"

    def __post_init__(self) -> None:
        _check_name("Int", self.name)
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{self.name}: {bound} must be a whole number, got {bound}={value!r}")
        if self.low > self.high:
            raise ValueError(f"{self.name}: needs low <= high, got low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: log scale needs low > 0, got low={self.low!r}")
        _check_grid(self.name, self.grid)
        object.__setattr__(self, "when", _normalise_when(self.name, self.when))

    def from_unit(self, u: float) -> int:
        if self.log:
            # Widen by half a step each side so the end values are as likely as the inner ones.
            lo, hi = math.log(self.low - 0.5 if self.low > 0.5 else self.low), math.log(self.high + 0.5)
            value = round(math.exp(lo + u * (hi - lo)))
        else:
            value = self.low + math.floor(u * (self.high - self.low + 1))
        return int(min(max(value, self.low), self.high))

    def to_unit(self, value: int) -> float:
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def grid_values(self) -> list[int]:
        count = self.high - self.low + 1
        points = self.grid if self.grid is not None else (count if count <= 10 else 5)
        if points >= count:
            return list(range(self.low, self.high + 1))
        if points == 1:
            return [self.from_unit(0.5)]
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            raw = [round(math.exp(lo + i / (points - 1) * (hi - lo))) for i in range(points)]
        else:
            raw = [round(self.low + i / (points - 1) * (self.high - self.low)) for i in range(points)]
        return sorted(set(raw))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass(frozen=True)
class PowerOfTwo(Param):
    """Powers of two from ``low`` to ``high`` (batch size, width); sampled log-uniformly.

    Example:
        >>> PowerOfTwo("batch_size", 16, 128).grid_values()
        [16, 32, 64, 128]
    """

    low: int = 1
    high: int = 1
    when: Any = None

    kind = "pow2"

    def __post_init__(self) -> None:
        _check_name("PowerOfTwo", self.name)
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value & (value - 1):
                raise ValueError(f"{self.name}: {bound} must be a power of two (1, 2, 4, ...), got {bound}={value!r}")
        if self.low > self.high:
            raise ValueError(f"{self.name}: needs low <= high, got low={self.low!r}, high={self.high!r}")
        object.__setattr__(self, "when", _normalise_when(self.name, self.when))

    @property
    def _exponents(self) -> range:
        return range(self.low.bit_length() - 1, self.high.bit_length())

    def from_unit(self, u: float) -> int:
        exps = self._exponents
        return 2 ** exps[min(math.floor(u * len(exps)), len(exps) - 1)]

    def to_unit(self, value: int) -> float:
        exps = self._exponents
        return 0.0 if len(exps) == 1 else (value.bit_length() - 1 - exps[0]) / (len(exps) - 1)

    def grid_values(self) -> list[int]:
        return [2**e for e in self._exponents]

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and value in self.grid_values()


@dataclass(frozen=True)
class Choice(Param):
    """One of a few options (strings, numbers, booleans).

    Example:
        >>> Choice("optimizer", ["adamw", "sgd"]).grid_values()
        ['adamw', 'sgd']
    """

    options: Sequence[Scalar] = ()
    when: Any = None

    kind = "choice"

    def __post_init__(self) -> None:
        _check_name("Choice", self.name)
        if isinstance(self.options, (str, bytes)) or not isinstance(self.options, Iterable):
            raise ValueError(f"{self.name}: options must be a list, got options={self.options!r}")
        options = tuple(self.options)
        if not options:
            raise ValueError(f"{self.name}: needs at least one option, got options={list(options)!r}")
        bad = [o for o in options if not isinstance(o, (str, int, float, bool, type(None)))]
        if bad:
            raise ValueError(f"{self.name}: options must be str, int, float, bool or None, got {bad[0]!r}")
        if len(set(map(repr, options))) != len(options):
            raise ValueError(f"{self.name}: options must be distinct, got options={list(options)!r}")
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "when", _normalise_when(self.name, self.when))

    def from_unit(self, u: float) -> Scalar:
        return self.options[min(math.floor(u * len(self.options)), len(self.options) - 1)]

    def to_unit(self, value: Scalar) -> float:
        return 0.0 if len(self.options) == 1 else self.options.index(value) / (len(self.options) - 1)

    def grid_values(self) -> list[Scalar]:
        return list(self.options)

    def contains(self, value: Any) -> bool:
        return value in self.options


@dataclass(frozen=True)
class Fixed(Param):
    """A value that is recorded with every trial but not tuned (a model family, an epoch count)."""

    value: Scalar = None
    when: Any = None

    kind = "fixed"

    def __post_init__(self) -> None:
        _check_name("Fixed", self.name)
        if not isinstance(self.value, (str, int, float, bool, type(None))):
            raise ValueError(f"{self.name}: a fixed value must be str, int, float, bool or None, got value={self.value!r}")
        object.__setattr__(self, "when", _normalise_when(self.name, self.when))

    def from_unit(self, u: float) -> Scalar:
        return self.value

    def to_unit(self, value: Scalar) -> float:
        return 0.0

    def grid_values(self) -> list[Scalar]:
        return [self.value]

    def contains(self, value: Any) -> bool:
        return value == self.value


# A derived value is an arithmetic expression over other parameters, kept as text so that a space
# round-trips through JSON (a lambda would not). Python's own eval is unsafe on recorded JSON and
# no small, well-kept library evaluates just arithmetic, so we walk the AST with a whitelist.
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float,
    "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp, "sqrt": math.sqrt,
}


def _expression_names(name: str, expr: str) -> tuple[str, ...]:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"{name}: expression is not valid arithmetic ({exc.msg}), got expr={expr!r}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise ValueError(
                    f"{name}: expression may call only {', '.join(sorted(_FUNCTIONS))}, got expr={expr!r}"
                )
        elif isinstance(node, ast.Name):
            if node.id not in _FUNCTIONS:
                names.add(node.id)
        elif isinstance(node, ast.Constant):
            if not _is_number(node.value):
                raise ValueError(f"{name}: expression may use only numbers, got {node.value!r} in expr={expr!r}")
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, *_BINARY, *_UNARY)):
            raise ValueError(
                f"{name}: expression may use only numbers, parameter names, + - * / // % ** and "
                f"{', '.join(sorted(_FUNCTIONS))}; got {type(node).__name__} in expr={expr!r}"
            )
    return tuple(sorted(names))


def _evaluate(node: ast.AST, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, values)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*(_evaluate(a, values) for a in node.args))  # type: ignore[union-attr]
    raise ValueError(f"unsupported expression node {type(node).__name__}")  # unreachable: checked at build


@dataclass(frozen=True)
class Derived(Param):
    """A value computed from other parameters, e.g. the linear-scaling rule.

    Example:
        >>> Derived("lr", "base_lr * batch_size / 256").compute({"base_lr": 0.1, "batch_size": 512})
        0.2
    """

    expr: str = ""

    kind = "derived"

    def __post_init__(self) -> None:
        _check_name("Derived", self.name)
        if not isinstance(self.expr, str) or not self.expr.strip():
            raise ValueError(f"{self.name}: a derived value needs an expression, got expr={self.expr!r}")
        _expression_names(self.name, self.expr)

    def references(self) -> tuple[str, ...]:
        return _expression_names(self.name, self.expr)

    def compute(self, config: Mapping[str, Any]) -> Any:
        try:
            value = _evaluate(ast.parse(self.expr, mode="eval"), config)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise ValueError(f"{self.name}: cannot compute {self.expr!r} from {dict(config)!r}: {exc}") from None
        return _tidy(value) if isinstance(value, float) else value

    def grid_values(self) -> list[Any]:
        raise TypeError(f"{self.name}: a derived value has no grid of its own")

    def contains(self, value: Any) -> bool:
        return True


_KINDS: dict[str, type[Param]] = {cls.kind: cls for cls in (Float, Int, PowerOfTwo, Choice, Fixed, Derived)}


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
        if not isinstance(index, int) or isinstance(index, bool):
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
        norm = {k: (_tidy(v) if isinstance(v, float) else v) for k, v in sorted(self.complete(config).items())}
        return hashlib.sha1(json.dumps(norm, sort_keys=True).encode()).hexdigest()[:12]

    # -- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"hpsearch_space": 1, "params": [p.to_dict() for p in self._order]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Space":
        if not isinstance(data, Mapping) or data.get("hpsearch_space") != 1 or "params" not in data:
            raise ValueError("space: not a recorded hpsearch space (expected {'hpsearch_space': 1, 'params': [...]})")
        params = []
        for entry in data["params"]:
            entry = dict(entry)
            kind = entry.pop("kind", None)
            if kind not in _KINDS:
                raise ValueError(f"{entry.get('name', '?')}: unknown parameter kind {kind!r} (have {', '.join(_KINDS)})")
            params.append(_KINDS[kind](**entry))
        return cls(*params)

    @classmethod
    def from_json(cls, text: str) -> "Space":
        return cls.from_dict(json.loads(text))


# -- search-space modules ----------------------------------------------------------------------

_MODES = ("max", "min")


@dataclass(frozen=True)
class SpaceModule:
    """What a file in ``spaces/`` exports: the space and what it is tuned for.

    A module defines ``SPACE`` (a ``Space``), ``METRIC`` (reported name), ``MODE`` ("max" or
    "min") and ``MAX_EPOCHS`` (default budget); optionally ``DATASET`` (a name for the reference
    trainable) and ``TRAIN`` (your own ``train(config)`` function).
    """

    name: str
    path: Path
    space: Space
    metric: str
    mode: str
    max_epochs: int
    dataset: str | None = None
    train: Callable[..., Any] | None = field(default=None, compare=False)


def _spaces_dirs() -> list[Path]:
    dirs = [Path.cwd() / "spaces", Path(__file__).resolve().parent.parent / "spaces"]
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
    """Import a search-space module by path or short name and check what it exports.

    Example:
        >>> load_space_module("mlp").metric  # spaces/mlp.py
        'val_acc'
    """
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
    if mode not in _MODES:
        raise ValueError(f"MODE: must be 'max' or 'min', got {mode!r} in {str(path)!r}")
    max_epochs = getattr(module, "MAX_EPOCHS", None)
    if not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < 1:
        raise ValueError(f"MAX_EPOCHS: must be a whole number >= 1, got {max_epochs!r} in {str(path)!r}")
    train = getattr(module, "TRAIN", None)
    if train is not None and not callable(train):
        raise ValueError(f"TRAIN: must be a function train(config), got {type(train).__name__} in {str(path)!r}")
    dataset = getattr(module, "DATASET", None)
    if dataset is not None and not isinstance(dataset, str):
        raise ValueError(f"DATASET: must be a dataset name, got {dataset!r} in {str(path)!r}")
    return SpaceModule(path.stem, path, space, metric, mode, max_epochs, dataset, train)
