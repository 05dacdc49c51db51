"""The one writer to MLflow: an ordered queue of JSON operations drained by a thread (its calls
made in a process of its own once they keep a core busy, ``hpsearch.tracking.process``), merged
into fewer calls when it falls behind, kept on disk when the store is away, and sent later by
``sync`` (``hpsearch sync``).

Operations are plain JSON naming runs by reference (``parent``, ``trial:<id>``), not by run
objects, so what cannot be delivered can be written to disk and sent later in the same order:

- ``{"op": "create_run", "ref", "name", "tags"}``
- ``{"op": "log_batch", "ref", "metrics": [[key, value, ms, step], ...], "params", "tags"}``
- ``{"op": "log_text", "ref", "text", "file"}``
- ``{"op": "set_status", "ref", "status"}`` (RUNNING, FINISHED, FAILED, KILLED)
- ``{"op": "set_name", "ref", "name"}`` (a stopped trial's run, renamed with a marker)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from hpsearch.storage import Location, as_location
from hpsearch.tracking.store import open_client
from hpsearch.tracking.uri import check_reachable
from hpsearch.vocab import TAG_PARENT, TAG_TRIAL

log = logging.getLogger(__name__)

# The writes move to a process of their own (``hpsearch.tracking.process``) once they take this
# share of a core, measured as this thread's CPU over at least MOVE_WINDOW_S: SQLAlchemy's work
# for a SQLite store (~40 ms of CPU a trial) holds the driver's GIL, which Ray Tune's loop needs.
# Below the share, or in a sweep shorter than the window, the process is not worth starting (~5 s
# of CPU to import MLflow again, more than a short sweep's writes cost): a sweep of trials that
# last minutes never moves, one of many short trials moves after half a minute.
MOVE_SHARE = 0.10
MOVE_WINDOW_S = 30.0
_MERGE_WINDOW = 256  # queued operations the writer looks through for more of the same run's batch
# MLflow's error codes for a write it refuses (a value too long, a parameter changed, a run gone):
# the same write would be refused again, so it is dropped (and said) rather than retried.
_REFUSED = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                      "INVALID_STATE", "RESOURCE_CONFLICT", "PERMISSION_DENIED", "UNAUTHENTICATED"})


class Refused(Exception):
    """A write that cannot succeed however often it is tried."""


def refused(exc: BaseException) -> bool:
    """Whether MLflow refused the write itself (as opposed to being unreachable or busy)."""
    from mlflow.exceptions import MlflowException  # MLflow (~2 s): only when the store is used

    return isinstance(exc, Refused) or (isinstance(exc, MlflowException) and exc.error_code in _REFUSED)


def _fits(metrics: int, params: int, tags: int) -> bool:
    """Within MLflow's limits for one log_batch call."""
    return metrics <= 1000 and params <= 100 and tags <= 100 and metrics + params + tags <= 1000


def merge_head(queue: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[int]]:
    """The operation to send next, and the queue positions it stands for.

    A ``log_batch`` at the head takes in the later ``log_batch`` operations of the same run (up to
    MLflow's limits per call), as long as no other operation of that run lies between: each call
    costs a SQLite transaction (~5 ms of CPU here). The writer calls this when it takes the next
    operation, so merging happens when it is behind, which is when it pays.

    Example:
        >>> q = [{"op": "log_batch", "ref": "a", "metrics": [1]}, {"op": "create_run", "ref": "b"},
        ...      {"op": "log_batch", "ref": "a", "tags": {"t": "x"}}, {"op": "set_status", "ref": "a"},
        ...      {"op": "log_batch", "ref": "a", "metrics": [2]}]
        >>> op, taken = merge_head(q)
        >>> taken, op["metrics"], op["tags"]
        ([0, 2], [1], {'t': 'x'})
    """
    head = queue[0]
    if head["op"] != "log_batch":
        return head, [0]
    ref = head["ref"]
    metrics, params, tags = list(head.get("metrics", ())), dict(head.get("params", {})), dict(head.get("tags", {}))
    taken = [0]
    for i in range(1, min(len(queue), _MERGE_WINDOW)):
        op = queue[i]
        if op["ref"] != ref:
            continue
        if op["op"] != "log_batch":
            break
        m, p, t = op.get("metrics", ()), op.get("params", {}), op.get("tags", {})
        if not _fits(len(metrics) + len(m), len(params.keys() | p.keys()), len(tags.keys() | t.keys())) or \
                any(k in params for k in p):
            break
        metrics += m
        params.update(p)
        tags.update(t)  # a tag set twice: the later value, as two calls would leave it
        taken.append(i)
    if len(taken) == 1:
        return head, taken
    return {"op": "log_batch", "ref": ref, "metrics": metrics, "params": params, "tags": tags}, taken


class Writer:
    """The one writer to MLflow: an ordered queue of small operations drained by a thread.

    The driver's event loop only enqueues, so a slow or unreachable server never stalls trials;
    the calls themselves move to a process of their own when they take a share of a core
    (``MOVE_SHARE``), so a store's CPU work does not hold the loop's GIL either.
    Operations are plain JSON (run references, not run objects), so what cannot be delivered can
    be written to disk and sent later in the same order. While MLflow is unreachable the head
    operation is retried with backoff; nothing behind it is skipped. A write MLflow refuses is
    dropped with a warning (``refused`` keeps what and why); when it was a merged batch, its parts
    are sent one by one first, so only the refused part is lost.
    """

    def __init__(self, client, experiment_id: str, runs: dict[str, str], apart: Callable[[], Any] | None = None) -> None:
        """``apart``: makes a client in a process of its own (``StoreProcess``), where the writes
        move once they take ``MOVE_SHARE`` of a core; None: they stay on this process's thread."""
        self.client, self.experiment_id = client, experiment_id
        self.local, self.apart, self.moved = client, apart, None  # moved: the process's client, once made
        self.move_share, self.move_window = MOVE_SHARE, MOVE_WINDOW_S
        self._window: tuple[float, float]  # (wall, CPU) at the share's last measure: set by the thread (thread_time is its own)
        self.runs = runs  # reference ("parent", "trial:<id>") -> MLflow run id
        self.queue: deque[dict[str, Any]] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0
        self.refused: list[str] = []  # one line per write MLflow refused and that was dropped
        self._unmerged = 0  # queue positions to send one by one (after a merged batch was refused)
        self.thread = threading.Thread(target=self._loop, name="hpsearch-mlflow-writer", daemon=True)
        self.thread.start()

    def submit(self, op: dict[str, Any]) -> None:
        with self.cond:
            self.queue.append(op)
            self.cond.notify_all()

    def runs_snapshot(self) -> dict[str, str]:
        with self.cond:
            return dict(self.runs)

    def _maybe_move(self) -> None:
        """Move the writes to their own process when they took ``move_share`` of a core over the
        last ``move_window`` seconds (of this thread's CPU: a server's writes wait on the network
        without holding the GIL, and do not move)."""
        if self.apart is None or self.moved is not None:
            return
        wall, cpu = time.perf_counter() - self._window[0], time.thread_time() - self._window[1]
        if wall < self.move_window:
            return
        if cpu >= self.move_share * wall:
            log.debug("MLflow writes took %.0f%% of a core: moving them to their own process", 100 * cpu / wall)
            self.moved = self.client = self.apart()
        self._window = (time.perf_counter(), time.thread_time())

    def _back_home(self, exc: Exception) -> bool:
        """A process that never answered (it could not start): the writes stay on this thread."""
        if self.client is not self.moved or getattr(self.moved, "answered", True):
            return False
        log.warning("the MLflow writer's own process did not start (%s: %s); writing from the driver", type(exc).__name__, exc)
        self.moved.close()
        self.client, self.apart = self.local, None
        return True

    def _loop(self) -> None:
        self._window = (time.perf_counter(), time.thread_time())
        delay = 1.0
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                op, taken = merge_head(self.queue) if not self._unmerged else (self.queue[0], [0])
                originals = [self.queue[i] for i in taken]
            try:
                self._execute(op)
            except Exception as exc:  # noqa: BLE001 - refused: drop it; any other failure: keep it, retry later
                if refused(exc):
                    self._refused(op, taken, originals, exc)
                    continue
                if self._back_home(exc):
                    continue
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if self.failing_since is None:
                    self.failing_since, self.outages = time.monotonic(), self.outages + 1
                    log.warning("MLflow unreachable (%s); keeping writes and retrying", self.last_error)
                with self.cond:
                    self.cond.wait(timeout=delay)
                delay = min(delay * 2, 15.0)
                continue
            delay = 1.0
            self._remove(taken, originals)
            self._maybe_move()

    def _remove(self, taken: list[int], originals: list[dict[str, Any]]) -> None:
        with self.cond:
            # Only this thread removes, and others only append: the positions still hold.
            for i, original in sorted(zip(taken, originals), reverse=True, key=lambda x: x[0]):
                if i < len(self.queue) and self.queue[i] is original:
                    del self.queue[i]
            self._unmerged = max(self._unmerged - 1, 0)
            if self.failing_since is not None:
                log.warning("MLflow reachable again after %.0f s", time.monotonic() - self.failing_since)
                self.failing_since = None
            self.cond.notify_all()

    def _refused(self, op: dict[str, Any], taken: list[int], originals: list[dict[str, Any]], exc: Exception) -> None:
        if len(taken) > 1:  # a merged batch: send its parts one by one, to lose only the refused one
            with self.cond:
                self._unmerged = max(taken) + 1
            return
        what = f"{op['op']} for {op['ref']}: {type(exc).__name__}: {str(exc)[:300]}"
        self.refused.append(what)
        log.warning("MLflow refused a write, dropped: %s", what)
        self._remove(taken, originals)

    def _execute(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag  # MLflow (~2 s): only when the store is used

        kind, ref = op["op"], op["ref"]
        if kind == "create_run":
            if ref not in self.runs:
                run = self.client.create_run(self.experiment_id, run_name=op["name"], tags=op["tags"])
                with self.cond:
                    self.runs[ref] = run.info.run_id
            return
        run_id = self.runs.get(ref)
        if run_id is None:  # its create_run was refused
            raise Refused(f"no run for {ref}: it was never created")
        if kind == "log_batch":
            self.client.log_batch(
                run_id, metrics=[Metric(*m) for m in op.get("metrics", ())],
                params=[Param(k, v) for k, v in op.get("params", {}).items()],
                tags=[RunTag(k, v) for k, v in op.get("tags", {}).items()],
            )
        elif kind == "log_text":
            self.client.log_text(run_id, op["text"], op["file"])
        elif kind == "set_name":
            self.client.update_run(run_id, name=op["name"])
        elif kind == "set_status":
            if op["status"] == "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, op["status"])
        else:
            raise ValueError(f"unknown tracking operation {kind!r}")

    def drain(self, timeout: float) -> bool:
        """Wait until every operation is delivered; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(timeout=min(left, 1.0))
        return True

    def close(self, timeout: float) -> list[dict[str, Any]]:
        """Drain for up to ``timeout``, stop the thread, and return what was not delivered."""
        self.drain(timeout)
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout=90)  # an operation in flight ends within MLflow's own retries
        if self.moved is not None:
            self.moved.close()
        return list(self.queue)


def children_of(client, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """References of the child runs a parent already has: ``trial:<id>`` -> run id."""
    out = {}
    for child in client.search_runs([experiment_id], f"tags.`{TAG_PARENT}` = '{parent_run_id}'", max_results=50000):
        trial_id = child.data.tags.get(TAG_TRIAL)
        if trial_id:
            out[f"trial:{trial_id}"] = child.info.run_id
    return out


def spill(path: str | Path | Location, header: dict[str, Any], ops: Sequence[dict[str, Any]]) -> None:
    """Append undelivered operations to a journal (in the sweep's storage, local or a bucket),
    after a header naming the store and the runs."""
    path = as_location(path)
    earlier = path.read_text() if path.exists() else ""
    path.write_text(earlier + "".join(json.dumps(x) + "\n" for x in [{"header": header}, *ops]))


def sync(path: str | Path | Location, tracking_uri: str | None = None, timeout: float = 600) -> int:
    """Send the writes a sweep kept on disk while MLflow was unreachable; returns how many.

    Child runs created meanwhile (by a resume, say) are found again by trial id, not duplicated.
    """
    path = as_location(path)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = next(line["header"] for line in lines if "header" in line)
    uri = tracking_uri or header["tracking_uri"]
    check_reachable(uri)
    client = open_client(uri)  # as the sweep's: a server's calls bounded, a SQLite store in WAL mode
    runs = {**header["runs"], **children_of(client, header["experiment_id"], header["parent_run_id"])}
    writer = Writer(client, header["experiment_id"], runs)
    ops = [line for line in lines if "header" not in line]
    for op in ops:
        writer.submit(op)
    left = writer.close(timeout)
    if left:
        raise RuntimeError(f"sync: MLflow at {uri} took {len(ops) - len(left)} of {len(ops)} writes; "
                           f"run hpsearch sync again ({writer.last_error})")
    path.rename(path.at_name(path.name.rsplit(".", 1)[0] + ".synced"))
    return len(ops)
