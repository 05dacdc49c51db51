"""Search-space parameters: small frozen value objects, each checked on its own.

Every numeric parameter maps to and from the unit interval (``to_unit`` / ``from_unit``), so the
log scale lives in one place and grid, random and model-based search share it. ``Derived``
computes a value from others with a small safe expression language. ``hpsearch.space`` builds a
``Space`` of these and re-exports them, so space modules import everything from there.

Example:
    >>> Float("lr", 1e-4, 1e-2, log=True, grid=3).grid_values()
    [0.0001, 0.001, 0.01]
"""

from __future__ import annotations

import ast
import math
import operator
import random
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Mapping, Sequence

from hpsearch.vocab import is_number, is_whole

Scalar = str | int | float | bool | None
Config = dict[str, Any]

_SIGNIFICANT = 12  # grid points are rounded so that 1e-4 is 1e-4, not 9.999999999999999e-05


def tidy(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


def _unit(value: float, low: float, high: float, log: bool) -> float:
    """Where ``value`` lies in ``[low, high]`` as a number in [0, 1], on a log or linear scale
    (``Float`` and ``Int`` share it; ``from_unit`` differs: an Int rounds to its whole values)."""
    if high == low:
        return 0.0
    if log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{kind}: the name must be a Python identifier, got name={name!r}")


def _check_grid(name: str, grid: Any) -> None:
    if grid is not None and (not is_whole(grid) or grid < 1):
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
        if not is_number(self.low) or not is_number(self.high):
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
        return _unit(value, self.low, self.high, self.log)

    def grid_values(self) -> list[float]:
        if self.grid == 1 or self.low == self.high:
            return [tidy(self.from_unit(0.5))]
        return [tidy(self.from_unit(i / (self.grid - 1))) for i in range(self.grid)]

    def contains(self, value: Any) -> bool:
        return is_number(value) and self.low <= value <= self.high


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
            if not is_whole(value):
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
        return _unit(value, self.low, self.high, self.log)

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
        return is_whole(value) and self.low <= value <= self.high


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
            if not is_whole(value) or value < 1 or value & (value - 1):
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
            if not is_number(node.value):
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
        return tidy(value) if isinstance(value, float) else value

    def grid_values(self) -> list[Any]:
        raise TypeError(f"{self.name}: a derived value has no grid of its own")

    def contains(self, value: Any) -> bool:
        return True


KINDS: dict[str, type[Param]] = {cls.kind: cls for cls in (Float, Int, PowerOfTwo, Choice, Fixed, Derived)}
