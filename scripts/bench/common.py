"""What every part of the suite shares: the one Ray instance, environment switches, medians and
their spread, the MLflow server, and the shape of a figure in bench.json."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2  # every arm runs 2 trials at a time: one per core of the reference machine


def ray_up() -> None:
    """One local Ray instance for every Ray-based arm, started once (not timed).

    The setup hook instruments the reference trainable in every worker (see workloads.py), so
    hpsearch runs ``hpsearch.train.train`` itself and still tells us how long each epoch trained.
    """
    import ray

    if ray.is_initialized():
        return
    # address="local": always a new instance of our own, even where another Ray runs on this machine.
    ray.init(address="local", num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"worker_process_setup_hook": "bench.workloads.install_import_hook"})


def ray_down() -> None:
    import ray

    ray.shutdown()


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for a block, then put them back."""
    def apply(settings: dict[str, str | None]) -> None:
        for k, v in settings.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    old = {k: os.environ.get(k) for k in values}
    try:
        apply(values)
        yield
    finally:
        apply(old)


@contextlib.contextmanager
def quiet(log_path: Path) -> Iterator[None]:
    """Send what a library prints (Ray's status tables, Optuna's per-trial lines) to a log file.

    File descriptors, not just sys.stdout: some of it comes from threads and C code.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as f:
        saved = os.dup(1), os.dup(2)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def median(values: Sequence[float]) -> float | None:
    """Median of the finite values; inf ("never reached") counts as a value, so a median of
    [3, inf, inf] is inf. None for no values."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else None


def span(values: Sequence[float]) -> list[float] | None:
    """[min, max] of the values (inf, "never reached", included), the spread beside a median."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return [min(vals), max(vals)] if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isinf(b) and math.isinf(a):
        return None
    return a / b


def start_mlflow_server(store: Path) -> tuple[subprocess.Popen, str]:
    """A real ``mlflow server`` on 127.0.0.1 (through mlflow/serve, as a user starts it)."""
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(ROOT / "mlflow" / "serve"), "--port", str(port), "--store", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(uri + "/health", timeout=1).status_code == 200:
                return proc, uri
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop_mlflow_server(proc)
    raise RuntimeError("mlflow server did not start")


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)


def count_children(uri: str, parent_run_id: str) -> int:
    """Child runs of a sweep's parent run, counted in the store itself."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    total, token = 0, None
    while True:
        page = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                  max_results=5000, page_token=token)
        total += len(page)
        token = page.token
        if not token:
            return total


# Student's t quantile at 0.95 (a two-sided 90% interval) by degrees of freedom; between the
# listed ones the next smaller df is taken (wider: conservative). Written out so the bench needs
# no SciPy (not among hpsearch's dependencies).
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
        12: 1.782, 15: 1.753, 20: 1.725, 25: 1.708, 30: 1.697, 60: 1.671, 120: 1.658}
VERDICTS = ("met", "missed", "undecided")


def _t95(df: int) -> float:
    return _T95[max(k for k in _T95 if k <= df)] if df < 1000 else 1.645


def paired_ratio(values: Sequence[float], baselines: Sequence[float]) -> dict[str, Any] | None:
    """The ratio of paired measurements (value_i / baseline_i, one pair per seed): its geometric
    mean and a 90% interval from Student's t on the log ratios. None with fewer than 2 finite
    positive pairs; the pairs used are counted in ``pairs``.

    >>> r = paired_ratio([11, 12, 10.5, 11.5, 11], [10, 10, 10, 10, 10])
    >>> round(r["ratio"], 3), [round(x, 3) for x in r["interval"]], r["pairs"]
    (1.119, [1.066, 1.174], 5)
    """
    logs = [math.log(a / b) for a, b in zip(values, baselines)
            if a is not None and b is not None and 0 < a < math.inf and 0 < b < math.inf]
    if len(logs) < 2:
        return None
    mean, sd = statistics.fmean(logs), statistics.stdev(logs)
    half = _t95(len(logs) - 1) * sd / math.sqrt(len(logs))
    return {"ratio": math.exp(mean), "interval": [math.exp(mean - half), math.exp(mean + half)], "pairs": len(logs),
            "per_seed": [math.exp(x) for x in logs]}


def bootstrap_interval(values: Sequence[float], stat=statistics.median, resamples: int = 4000,
                       seed: int = 0) -> list[float] | None:
    """A 90% percentile-bootstrap interval of ``stat`` over ``values`` (for figures that are not
    ratios of log-normal pairs: a median speed-up where some seeds never reach, a share). None
    with fewer than 2 values.

    >>> bootstrap_interval([1.0, 1.0, 1.0])
    [1.0, 1.0]
    """
    import random

    vals = [v for v in values if v is not None and not math.isnan(v)]
    if len(vals) < 2:
        return None
    rng = random.Random(seed)
    stats = sorted(stat(rng.choices(vals, k=len(vals))) for _ in range(resamples))
    return [stats[int(0.05 * (resamples - 1))], stats[int(math.ceil(0.95 * (resamples - 1)))]]


def verdict(value: float | None, goal_op: str, goal: float, interval: Sequence[float] | None = None) -> str | None:
    """Met, missed, or undecided: with an interval, met when all of it is on the goal's side,
    missed when all of it is off, undecided when it straddles the goal; without one, the value
    alone decides. None where there is no value.

    >>> verdict(0.97, "<=", 1.0, [0.95, 0.99]), verdict(0.97, "<=", 1.0, [0.9, 1.04]), verdict(1.1, "<=", 1.0, [1.02, 1.2])
    ('met', 'undecided', 'missed')
    >>> verdict(7.0, ">=", 8.0), verdict(None, ">=", 8.0)
    ('missed', None)
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    lo, hi = (interval if interval is not None else (value, value))
    if goal_op == "<=":
        return "met" if hi <= goal else "missed" if lo > goal else "undecided"
    if goal_op == ">=":
        return "met" if lo >= goal else "missed" if hi < goal else "undecided"
    raise ValueError(f"goal_op must be '<=' or '>=', got {goal_op!r}")


class Sampler:
    """``read()`` sampled every ``every_s`` seconds on a thread while a block runs (``with
    Sampler(read, 0.5) as s: ...``; then ``s.samples``), a reading of None skipped. ``at_ends``:
    also read once on entry and once on exit, so even a block shorter than a period has two."""

    def __init__(self, read: Callable[[], float | None], every_s: float, at_ends: bool = True) -> None:
        import threading

        self.read, self.every_s, self.at_ends = read, every_s, at_ends
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        value = self.read()
        if value is not None:
            self.samples.append(value)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self):
        if self.at_ends:
            self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.at_ends:
            self._sample()


class LoadSampler(Sampler):
    """The machine's 1-minute load average, sampled every 5 s while a part runs (``with
    LoadSampler() as load: ...``; then ``load.summary()``): a figure measured while something else
    ran on the same cores says so."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__(lambda: round(os.getloadavg()[0], 2), every_s)

    def summary(self) -> dict[str, Any]:
        return {"median": statistics.median(self.samples), "max": max(self.samples), "samples": len(self.samples),
                "every_s": self.every_s}


def figure(part: str, name: str, value: Any, unit: str, *, baselines: dict[str, Any] | None = None,
           ratio_value: float | None = None, ratio_text: str = "", goal: str = "", met: bool | None = None,
           note: str = "", verdict: str | None = None, interval: Sequence[float] | None = None,
           seeds: int | None = None, by_construction: bool = False) -> dict[str, Any]:
    """One row of the results: a figure with its baselines beside it, and the verdict on its goal.

    ``ratio_text`` says what the ratio divides (e.g. "random / hpsearch"). ``verdict`` is "met",
    "missed" or "undecided" (the interval straddles the goal; see ``verdict()``), None where the
    figure has no goal of its own; ``met`` (True/False) is the older two-state form, taken when no
    verdict is given. ``interval``: the 90% interval of the ratio (or of the value where there is no
    ratio); ``seeds``: how many paired seeds or repeats it rests on, as run; ``by_construction``:
    the figure passes whatever the code does (a count the harness itself ensures), shown as such.
    """
    if verdict is None and met is not None:
        verdict = "met" if met else "missed"
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    baselines = baselines or {}
    ratios = {k: ratio(value, v) for k, v in baselines.items()
              if isinstance(value, (int, float)) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"part": part, "figure": name, "value": value, "unit": unit, "baselines": baselines,
            "value_over_baseline": ratios, "ratio": ratio_value, "ratio_of": ratio_text, "goal": goal,
            "verdict": verdict, "met": None if verdict is None else verdict == "met",
            "interval": list(interval) if interval is not None else None, "seeds": seeds,
            "by_construction": by_construction, "note": note}


def machine() -> dict[str, Any]:
    import platform

    import optuna
    import ray
    import torch

    import mlflow

    mem = None
    with contextlib.suppress(OSError, ValueError):
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": mem, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
        "optuna": optuna.__version__, "mlflow": mlflow.__version__, "gpu": _gpu_name(),
    }


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
