"""``scripts/gpu-check``: proves on a real GPU that hpsearch's trials run on CUDA, that fractional
GPUs pack several trials per GPU, and that a multi-worker trial trains with NCCL (2+ GPUs).

Every step is a real sweep on a local Ray (no MLflow: tracking off). The JSON it writes:

    {"gpu": bool, "why": str | null,            # why nothing ran on a GPU, when gpu is false
     "machine": {...}, "git": {...}, "started": iso time, "wall_s": float,
     "cuda": {"devices": int, "name": str, "trials": [{"trial_id", "device", "val_acc"}], "ok": bool},
     "packing": {"1": {"trials_per_hour", "gpu_utilization_mean", "completed", "wall_s"}, "2": ..., "4": ..., "8": ...},
     "nccl": {"ran": bool, "why": str | null, "backend": str, "devices": [str], "world_size": int, "ok": bool}}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import ROOT, git_state, machine


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] gpu-check: {message}", flush=True)


def cuda_train(config, data, max_epochs):
    """The reference network on the device a trial is given (hpsearch.ddp.device, as the
    reference trainable), reporting which device trained and, with several workers, the backend."""
    import torch
    import torch.distributed as dist
    from torch import nn

    import hpsearch
    from hpsearch import ddp
    from hpsearch.trial.train import build_model

    dev = ddp.device()
    model = build_model(config, data.num_features, data.num_classes).to(dev)
    net = ddp.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.tensor(data.x_train, device=dev).flatten(1)
    y = torch.tensor(data.y_train, device=dev)
    shard = ddp.sampler(len(x), seed=0)
    for epoch in range(1, max_epochs + 1):
        shard.set_epoch(epoch)
        order = torch.tensor(list(shard), device=dev)
        for i in range(0, len(order), 128 // ddp.world_size()):
            idx = order[i:i + 128 // ddp.world_size()]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        with torch.no_grad():
            xv = torch.tensor(data.x_val, device=dev).flatten(1)
            acc = (model(xv).argmax(1) == torch.tensor(data.y_val, device=dev)).float().mean().item()
        devices = [None] * ddp.world_size()
        if ddp.world_size() > 1:
            dist.all_gather_object(devices, f"{dev}:{torch.cuda.get_device_name(dev) if dev.type == 'cuda' else ''}")
        hpsearch.report(epoch=epoch, val_acc=acc, device=str(dev), on_cuda=int(dev.type == "cuda"),
                        backend=dist.get_backend() if ddp.world_size() > 1 else "none",
                        devices=json.dumps(devices), world_size=ddp.world_size())


def _space():
    from hpsearch.space import Choice, Fixed, Space

    return Space(Fixed("model", "mlp"), Fixed("width", 256), Fixed("depth", 2), Choice("seed", [0, 1]))


def _last_rows(result) -> list[dict[str, Any]]:
    rows = []
    for t in result.trials:
        lines = [json.loads(line) for line in open(Path(t.path, "result.json")) if line.strip()]
        rows.append({"trial_id": t.trial_id, "status": str(t.status), **(lines[-1] if lines else {})})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results", help="folder for gpu-check.json")
    args = ap.parse_args(argv)
    started, start = datetime.now(timezone.utc), time.perf_counter()
    out: dict[str, Any] = {"gpu": False, "why": None, "machine": machine(), "git": git_state(),
                           "started": started.isoformat(timespec="seconds")}

    def write() -> None:
        out["wall_s"] = round(time.perf_counter() - start, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu-check.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
        log(f"wrote {args.out / 'gpu-check.json'}")

    import torch

    smi = shutil.which("nvidia-smi")
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices == 0:
        out["why"] = (f"no GPU: torch {torch.__version__} sees no CUDA device "
                      f"(nvidia-smi {'present' if smi else 'absent'})")
        log(out["why"])
        write()
        return 0
    out["gpu"] = True
    if smi:
        query = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
        out["nvidia_smi"] = query.stdout.strip().splitlines()
    log(f"{devices} GPU(s): {torch.cuda.get_device_name(0)}")

    import logging

    import ray

    import hpsearch
    from hpsearch.ray.cluster import repair_cleaner

    work = Path(tempfile.mkdtemp(prefix="hpsearch-gpu-check-"))
    # One Ray for every step, with the setup hook multi-worker trials need (hpsearch.ray.cluster.connect
    # gives it to a Ray it starts itself).
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, runtime_env={"worker_process_setup_hook": repair_cleaner})
    try:
        # 1. CUDA trials
        r = hpsearch.sweep(_space(), train=cuda_train, data="mnist1d", metric="val_acc", mode="max", strategy="grid",
                           scheduler="fifo", max_epochs=2, resources=hpsearch.Resources(cpus=1, gpus=1),
                           storage=str(work / "ray"), tracking_uri=False, progress=False)
        rows = _last_rows(r)
        out["cuda"] = {"devices": devices, "name": torch.cuda.get_device_name(0),
                       "trials": [{k: row.get(k) for k in ("trial_id", "status", "device", "val_acc")} for row in rows],
                       "ok": bool(rows) and all(row.get("on_cuda") == 1 for row in rows)}
        log(f"CUDA trials: {out['cuda']['trials']} -> {'ok' if out['cuda']['ok'] else 'NOT on CUDA'}")
        # 2. Fractional packing: the benchmark's GPU part at its quick size
        from bench import gpu

        packed = gpu.run(trials=8, max_epochs=3, work=work, log=lambda m: log(m))
        out["packing"] = packed["raw"].get("runs", packed["raw"])
        # 3. NCCL multi-worker, with 2+ GPUs
        if devices < 2:
            out["nccl"] = {"ran": False, "why": f"one GPU on this machine: a 2-worker NCCL trial needs 2 ({devices} seen)",
                           "ok": None}
            log(out["nccl"]["why"])
        else:
            r = hpsearch.sweep(_space(), train=cuda_train, data="mnist1d", metric="val_acc", mode="max",
                               strategy="grid", scheduler="fifo", max_epochs=2, trials=1,
                               resources=hpsearch.Resources(workers=2, cpus=1, gpus=1), storage=str(work / "ray"),
                               tracking_uri=False, progress=False)
            row = _last_rows(r)[0]
            out["nccl"] = {"ran": True, "why": None, "backend": row.get("backend"),
                           "devices": json.loads(row.get("devices") or "[]"), "world_size": row.get("world_size"),
                           "status": row.get("status"),
                           "ok": row.get("backend") == "nccl" and row.get("world_size") == 2}
            log(f"NCCL trial: {out['nccl']}")
    except Exception as exc:  # noqa: BLE001 - a failed step is written down, not lost
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"failed: {out['error']}")
        write()
        return 1
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    write()
    ok = out["cuda"]["ok"] and out["nccl"].get("ok") is not False
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
