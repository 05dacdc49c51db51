"""The MLflow client in a process of its own, for the sweep's one writer (``Writer``).

Why: each write to a SQLite store is SQLAlchemy work in Python, ~40 ms of CPU a trial (a create,
a batch and an ending). On the writer's thread it held the driver's GIL as long as Ray Tune's own
loop did (300 no-op trials: 13.0 s of writer CPU against 13.2 s of main thread), so the loop
waited for it. In a process of its own it runs on another core, and the driver keeps only the
queue, which costs microseconds an operation. Starting the process costs ~5 s of CPU (MLflow
imported again), so the writer moves there only when its writes take a share of a core
(``hpsearch.tracking.writer.MOVE_SHARE``): sweeps of many short trials.

The process is started with ``python -c`` (not ``multiprocessing``, whose "spawn" would import the
user's script again in the child: a script that calls ``hpsearch.sweep`` at its top would start a
second sweep). It answers calls in order over its standard input and output, ignores Ctrl-C and
SIGTERM (the driver decides when writes end: it drains its queue or keeps it on disk) and exits
when the driver closes its input, or dies. A process that ended is started again on the next
call; the call that found it gone fails, and the writer retries it as it would a store that
was unreachable.

Example:
    >>> import io
    >>> pipe = io.BytesIO(); _send(pipe, ("log_batch", ("run",), {})); _ = pipe.seek(0)
    >>> _receive(pipe)
    ('log_batch', ('run',), {})
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from hpsearch.tracking.store import open_client
from hpsearch.tracking.writer import Refused, refused

_HEADER = struct.Struct("!I")
_ENTRY = "import sys; from hpsearch.tracking.process import serve; serve(sys.argv[1])"
# The client methods the writer calls (``Writer._execute``); nothing else crosses.
METHODS = frozenset({"create_run", "log_batch", "log_text", "update_run", "set_terminated"})


def _send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class StoreProcess:
    """An ``MlflowClient`` for ``uri`` (opened by ``open_client``) in a child process: the calls
    ``Writer`` makes, made there and answered in order. A call the store refused raises
    ``Refused``; any other failure, the process's end included, raises ``ConnectionError``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()  # one call at a time: answers come in order
        self._proc: subprocess.Popen | None = None
        self.answered = False  # whether it ever answered: one that never did could not start
        self._start()

    def _start(self) -> None:
        # The hpsearch this driver runs, first on the child's path (on a cluster it may have come
        # as shipped code, on the worker's path only).
        here = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        # -c, not -m: runpy would warn (on the user's console) that the package imported this module first.
        self._proc = subprocess.Popen([sys.executable, "-c", _ENTRY, self.uri], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)

    def _call(self, method: str, *args, **kwargs) -> Any:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            proc = self._proc
            try:
                _send(proc.stdin, (method, args, kwargs))
                answer, error = _receive(proc.stdout), None
            except OSError as exc:  # a broken pipe: the process is gone
                answer, error = None, exc
            if answer is None:
                code = proc.poll()
                raise ConnectionError(f"the MLflow writer process ended ({'exit ' + str(code) if code is not None else error})")
        self.answered = True
        kind, value = answer
        if kind == "ok":
            return value
        raise Refused(value) if kind == "refused" else ConnectionError(value)

    def create_run(self, *args, **kwargs):
        return self._call("create_run", *args, **kwargs)

    def log_batch(self, *args, **kwargs):
        return self._call("log_batch", *args, **kwargs)

    def log_text(self, *args, **kwargs):
        return self._call("log_text", *args, **kwargs)

    def update_run(self, *args, **kwargs):
        return self._call("update_run", *args, **kwargs)

    def set_terminated(self, *args, **kwargs):
        return self._call("set_terminated", *args, **kwargs)

    def close(self, timeout: float = 30.0) -> None:
        """End the process: its input closed, it exits after the call in hand (if any)."""
        proc, self._proc = self._proc, None  # not under the lock: a call in hand holds it until answered
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            proc.stdout.close()


def serve(uri: str) -> None:
    """The child's side: open the store, then answer calls until the input ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything printed goes to stderr, not into the answers
    calls = sys.stdin.buffer
    # Its stderr is the user's console: a failure's traceback belongs there, MLflow's chatter does not.
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = open_client(uri)
    while (message := _receive(calls)) is not None:
        method, args, kwargs = message
        try:
            if method not in METHODS:
                raise ValueError(f"not a writer call: {method!r}")
            value = getattr(client, method)(*args, **kwargs)
            answer = ("ok", value if method == "create_run" else None)  # the new Run
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the driver's writer, which decides
            answer = ("refused" if refused(exc) else "failed", f"{type(exc).__name__}: {exc}")
        _send(answers, answer)

