"""Part 6, GPU: trials per hour on one GPU with 1, 2, 4 and 8 trials packed on it (fractional
``gpus_per_trial``), and the GPU's utilization while they run (``nvidia-smi``, sampled twice a
second). Where there is no GPU, it records that it was not measured and why.

The work is hpsearch random/FIFO over the MNIST-1D MLP space (the reference trainable moves to the
GPU Ray assigns); the baseline is one trial per GPU.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import WORKERS, Sampler, figure, quiet

PACKING = (1, 2, 4, 8)


def _gpu_utilization() -> float | None:
    """GPU 0's utilization now (percent), from nvidia-smi; None where it does not answer."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"],
                         capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None


def run(trials: int, max_epochs: int, work: Path, log) -> dict[str, Any]:
    import ray
    import torch

    gpus = ray.cluster_resources().get("GPU", 0)
    if not torch.cuda.is_available() or gpus < 1:
        why = "no GPU on this machine" if not torch.cuda.is_available() else "Ray sees no GPU"
        log(f"gpu: not measured ({why})")
        return {"raw": {"measured": False, "why": why},
                "figures": [figure("gpu", "trials per hour on one GPU, 1/2/4/8 trials packed", "not measured", "",
                                   goal="", met=None, note=why)]}
    import hpsearch

    raw: dict[str, Any] = {"measured": True, "gpu": torch.cuda.get_device_name(0), "trials": trials,
                           "max_epochs": max_epochs, "runs": {}}
    for k in PACKING:
        # The CPU share shrinks with the GPU share so that k trials fit on this Ray instance's CPUs.
        resources = hpsearch.Resources(cpus=WORKERS / k, gpus=1 / k)
        with Sampler(_gpu_utilization, 0.5, at_ends=False) as util, quiet(work / "gpu-output.log"):
            start = time.perf_counter()
            result = hpsearch.sweep("spaces/mlp.py", strategy="random", scheduler="fifo", trials=trials,
                                    max_epochs=max_epochs, seed=0, resources=resources, storage=str(work / "ray"),
                                    tracking_uri=False, progress=False)
            wall = time.perf_counter() - start
        done = result.counts().get("completed", 0)
        mean_util = sum(util.samples) / len(util.samples) if util.samples else None
        raw["runs"][k] = {"wall_s": wall, "completed": done, "trials_per_hour": done / wall * 3600,
                          "gpu_utilization_mean": mean_util, "samples": len(util.samples)}
        log(f"gpu: {k} per GPU: {done / wall * 3600:.0f} trials/h, GPU utilization {mean_util}")
    one = raw["runs"][1]["trials_per_hour"]
    figs = [figure("gpu", f"trials per hour, {k} trials per GPU", raw["runs"][k]["trials_per_hour"], "trials/h",
                   baselines={"1 per GPU": one}, ratio_value=raw["runs"][k]["trials_per_hour"] / one,
                   ratio_text="this / 1 per GPU", goal="", met=None,
                   note=f"GPU utilization {raw['runs'][k]['gpu_utilization_mean'] or 0:.0f}%")
            for k in PACKING]
    return {"raw": raw, "figures": figs, "nvidia_smi": shutil.which("nvidia-smi")}
