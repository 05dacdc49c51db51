"""How hpsearch shows values to people: numbers for tables, durations, an exception's first line,
and secrets masked wherever a configuration is written (MLflow, ledger, verdict, console).

Imports nothing of hpsearch, so every layer, the trial side included, can use it.

Example:
    >>> fmt(0.123456), duration(210), mask("api_key", "abc")
    ('0.1235', '3.5 min', '***')
"""

from __future__ import annotations

import re
from typing import Any, Mapping


def fmt(value: Any, none: str = "–") -> str:
    """A value for a table: floats to 4 significant digits, None as ``none``.

    Example:
        >>> fmt(0.123456), fmt(3), fmt(None), fmt("adamw")
        ('0.1235', '3', '–', 'adamw')
    """
    if value is None:
        return none
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    """Seconds for people: 42 s, 3.5 min, 2.1 h; ``never`` for infinity.

    Example:
        >>> duration(42.2), duration(210), duration(7560), duration(float("inf"))
        ('42 s', '3.5 min', '2.1 h', 'never')
    """
    if seconds != seconds or seconds == float("inf"):
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")


def parse_duration(name: str, text: str) -> float:
    """A duration from the command line, in seconds: ``90s``, ``5m``, ``1.5h``, ``2d``. The unit is
    required (``--checkpoint-every 5`` could mean epochs), except for 0.

    Example:
        >>> parse_duration("time_budget", "90s"), parse_duration("time_budget", "1.5h"), parse_duration("x", "0")
        (90.0, 5400.0, 0.0)
        >>> parse_duration("checkpoint_every", "5")
        Traceback (most recent call last):
        ...
        ValueError: checkpoint_every: give a duration with its unit, such as 30s, 5m or 2h, got '5'
    """
    found = _DURATION.fullmatch(str(text).lower())
    if found is None or (not found.group(2) and float(found.group(1)) != 0) or (found.group(2) and found.group(2) not in _UNITS):
        raise ValueError(f"{name}: give a duration with its unit, such as 30s, 5m or 2h, got {text!r}")
    return float(found.group(1)) * _UNITS.get(found.group(2), 1)


def parse_list(name: str, text: str, parse) -> list:
    """A comma-separated option (``asha,hyperband``), each value parsed; one line (ValueError) for a bad one.

    Example:
        >>> parse_list("workers", "1, 2", int)
        [1, 2]
    """
    values = []
    for part in str(text).split(","):
        try:
            values.append(parse(part.strip()))
        except ValueError as exc:  # an enum's own line names the option; int() and float() do not
            raise ValueError(str(exc) if str(exc).startswith(f"{name}:") else
                             f"{name}: cannot read {part.strip()!r} in {text!r}") from None
    if not values:
        raise ValueError(f"{name}: give at least one value, got {text!r}")
    return values


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's text (its type's name if it has none).

    Example:
        >>> first_line(ValueError("\\n  bad value\\nmore")), first_line(KeyError())
        ('bad value', 'KeyError')
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


MASK = "***"  # what a secret's value reads as wherever hpsearch writes a configuration
# A name is a secret's when its last part (split at _ . - and camelCase) is one of these words, or
# it ends in one of the key pairs: hyperparameters that merely hold such a word keep their values.
_SECRET_WORDS = frozenset({"token", "password", "passwd", "passphrase", "secret", "credential", "credentials", "apikey"})
_KEY_OWNERS = frozenset({"api", "access", "secret", "private", "signing", "encryption"})


def is_secret(name: str) -> bool:
    """Whether a parameter's name says its value is a secret.

    Example:
        >>> [n for n in ("hf_token", "db_password", "client_secret", "openai_api_key", "aws_secret_access_key",
        ...              "apiKey", "token", "key_dim", "num_key_heads", "token_dropout", "sort_key", "max_tokens")
        ...  if is_secret(n)]
        ['hf_token', 'db_password', 'client_secret', 'openai_api_key', 'aws_secret_access_key', 'apiKey', 'token']
    """
    parts = [p for p in re.split(r"[_.\-]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if p]
    if not parts:
        return False
    return parts[-1] in _SECRET_WORDS or (parts[-1] == "key" and len(parts) > 1 and parts[-2] in _KEY_OWNERS)


def mask(name: str, value: Any) -> Any:
    """Values whose names say they are secrets are never logged.

    Example:
        >>> mask("api_key", "abc"), mask("lr", 0.1), mask("key_dim", 64)
        ('***', 0.1, 64)
    """
    return MASK if is_secret(name) else value


def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as hpsearch writes it anywhere (MLflow, ledger, verdict, console): secrets masked."""
    return {k: mask(k, v) for k, v in config.items()}
