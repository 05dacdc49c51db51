"""What the tracker holds before it writes: parameters, metrics and tags per run, batched within
MLflow's limits (``Buffers``), and when a result was reported (``report_ms``)."""

from __future__ import annotations

import threading
from typing import Any, Mapping

from hpsearch.vocab import is_number


def report_ms(ray_timestamp: Any, now: float) -> int:
    """When a result was reported, in ms. Ray's ``timestamp`` counts whole seconds, too coarse to
    time an epoch by (``hpsearch.simulate.curves`` does); a result that arrives live takes the driver's clock
    instead, one replayed later (resume reads Ray's result files) keeps Ray's second.

    Example:
        >>> report_ms(1000, 1000.25), report_ms(1000, 1900.0), report_ms(None, 5.5)
        (1000250, 1000000, 5500)
    """
    if not is_number(ray_timestamp) or abs(now - float(ray_timestamp)) < 2:
        return int(now * 1000)
    return int(float(ray_timestamp) * 1000)


class Buffers:
    """Parameters, metrics and tags per run, held until flushed as few ``log_batch`` operations as
    MLflow's limits allow (100 parameters, 100 tags, 1000 items a call). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._params: dict[str, dict[str, str]] = {}
        self._metrics: dict[str, list] = {}
        self._tags: dict[str, dict[str, str]] = {}

    def add(self, ref: str, metrics=(), params: Mapping[str, str] | None = None,
            tags: Mapping[str, str] | None = None) -> None:
        with self._lock:
            if metrics:
                self._metrics.setdefault(ref, []).extend(metrics)
            if params:
                self._params.setdefault(ref, {}).update(params)
            if tags:
                self._tags.setdefault(ref, {}).update({k: str(v)[:5000] for k, v in tags.items()})

    def take(self, ref: str | None = None) -> list[dict[str, Any]]:
        """The ``log_batch`` operations for one run's buffers (or every run's), emptied."""
        with self._lock:
            refs = [ref] if ref else list(self._metrics.keys() | self._params.keys() | self._tags.keys())
            batches = {r: (list(self._params.pop(r, {}).items()), self._metrics.pop(r, []),
                           list(self._tags.pop(r, {}).items())) for r in refs}
        ops = []
        for r, (params, metrics, tags) in batches.items():
            while params or metrics or tags:
                p, params = params[:100], params[100:]
                t, tags = tags[:100], tags[100:]
                room = 1000 - len(p) - len(t)
                m, metrics = metrics[:room], metrics[room:]
                ops.append({"op": "log_batch", "ref": r, "params": dict(p), "metrics": m, "tags": dict(t)})
        return ops
