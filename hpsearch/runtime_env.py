"""Ray runtime environments as hpsearch takes them: read from a YAML or JSON file, their local
paths resolved against the file's folder, their shape checked before Ray sees them.

Example:
    >>> resolve_env_paths({"working_dir": "src"}, "/cfg")
    {'working_dir': '/cfg/src'}
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Mapping

import yaml  # PyYAML (a dependency of Ray's): YAML is also what Ray's own job files use

RUNTIME_ENV_KEYS = ("working_dir", "py_modules", "pip", "uv", "conda", "env_vars", "excludes", "py_executable",
                    "image_uri", "container", "config", "worker_process_setup_hook", "java_jars", "nsight")


def check_runtime_env(env: Any) -> None:
    """A Ray runtime environment's shape (Ray checks the rest when it builds it): a mapping of Ray's
    fields, ``env_vars`` strings to strings.

    Example:
        >>> check_runtime_env({"env_vars": {"A": 1}})
        Traceback (most recent call last):
        ...
        ValueError: runtime_env: env_vars must map names to strings, got {'A': 1}
    """
    if not isinstance(env, Mapping):
        raise ValueError(f"runtime_env: must be a mapping such as {{'working_dir': '.', 'pip': [...]}}, got {env!r}")
    for key in env:
        if key not in RUNTIME_ENV_KEYS:
            near = difflib.get_close_matches(str(key), RUNTIME_ENV_KEYS, n=1)
            raise ValueError(f"runtime_env: {key!r} is not a field of Ray's runtime environment"
                             + (f" (did you mean {near[0]}?)" if near else f"; fields: {', '.join(RUNTIME_ENV_KEYS)}"))
    env_vars = env.get("env_vars")
    if env_vars is not None and not (isinstance(env_vars, Mapping) and
                                     all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items())):
        raise ValueError(f"runtime_env: env_vars must map names to strings, got {env_vars!r}")


def resolve_env_paths(env: Mapping[str, Any], base: "os.PathLike | str") -> dict[str, Any]:
    """A runtime environment with its local ``working_dir`` and ``py_modules`` folders made absolute
    against ``base`` (a config file's folder); URIs (``s3://``, ``https://``...) stay.

    Example:
        >>> resolve_env_paths({"working_dir": "src", "py_modules": ["s3://b/m.zip"]}, "/cfg")
        {'working_dir': '/cfg/src', 'py_modules': ['s3://b/m.zip']}
    """
    def local(value: Any) -> Any:
        if not isinstance(value, str) or "://" in value:
            return value
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))

    out = dict(env)
    if "working_dir" in out:
        out["working_dir"] = local(out["working_dir"])
    if isinstance(out.get("py_modules"), list):
        out["py_modules"] = [local(m) for m in out["py_modules"]]
    return out


def load_runtime_env(path: str) -> dict[str, Any]:
    """A runtime environment from a YAML or JSON file (``--runtime-env``); its local ``working_dir`` and ``py_modules``
    paths are taken relative to the file's folder (not to wherever the command runs)."""
    file = Path(path).expanduser()
    try:
        env = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ValueError(f"runtime_env: cannot read {path!r} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}: {getattr(exc, 'problem', '')})" if mark is not None else ""
        raise ValueError(f"runtime_env: {path!r} does not parse as YAML or JSON{where}") from None
    if not isinstance(env, dict):
        raise ValueError(f"runtime_env: {path!r} must hold a mapping such as working_dir: ., got {type(env).__name__}")
    return resolve_env_paths(env, file.resolve().parent)
