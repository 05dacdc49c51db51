"""What a training loop needs to run under PyTorch DistributedDataParallel, without importing Ray.

In a trial with several workers (``workers_per_trial`` above 1) each worker runs the user's
``train(config)``; these helpers give it its rank, wrap the model in DDP, shard the data and
combine the workers' sums. Everywhere else (one worker, outside a sweep, a notebook, a unit test)
they fall back to plain single-process behaviour, so the same loop runs in both.

Example:
    >>> import torch
    >>> from hpsearch import ddp
    >>> ddp.rank(), ddp.world_size()
    (0, 1)
    >>> model = torch.nn.Linear(4, 2)
    >>> ddp.prepare_model(model) is model
    True
    >>> s = ddp.sampler(8, seed=1); s.set_epoch(3); len(list(s))
    8
    >>> ddp.sum_across(2.0, 3)
    (2.0, 3.0)
"""

from __future__ import annotations

from typing import Any

import hpsearch.trial.session as session


def rank() -> int:
    """This worker's rank in its trial (0 outside a multi-worker trial)."""
    return session.group.rank if session.group is not None else 0


def world_size() -> int:
    """How many workers train this trial together (1 outside a multi-worker trial)."""
    return session.group.size if session.group is not None else 1


def is_main() -> bool:
    """True on the worker whose reports and checkpoint count (rank 0), and in a plain process."""
    return rank() == 0


def _distributed() -> bool:
    return world_size() > 1


def device():
    """The device this worker trains on: in a multi-worker trial the GPU Ray gave this worker (or
    the CPU); otherwise the GPU Ray gave the trial, if any, else the CPU."""
    import torch  # torch: only where a model trains

    if _distributed():
        from ray.train.torch import get_device  # Ray: only where Ray runs, so `import hpsearch` stays light

        return get_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_model(model):
    """The model moved to this worker's device and wrapped in ``DistributedDataParallel`` (gradients
    averaged across the workers at each ``backward``); the model itself with one worker.

    Keep a reference to the unwrapped model for ``state_dict()`` so checkpoints load in a plain
    process too."""
    if not _distributed():
        return model
    # Ray: only where Ray runs, so `import hpsearch` stays light
    from ray.train.torch import prepare_model as ray_prepare_model

    return ray_prepare_model(model)


def prepare_data_loader(loader):
    """A ``DataLoader`` that gives each worker its own shard (a ``DistributedSampler``) and moves
    batches to its device; the loader itself with one worker."""
    if not _distributed():
        return loader
    # Ray: only where Ray runs, so `import hpsearch` stays light
    from ray.train.torch import prepare_data_loader as ray_prepare_data_loader

    return ray_prepare_data_loader(loader)


def sampler(dataset: Any, *, shuffle: bool = True, seed: int = 0):
    """A ``DistributedSampler`` over ``dataset`` (anything with a length, or a number of samples)
    for this worker's shard; with one worker it yields every index. Call ``set_epoch(epoch)``
    before each epoch: the shuffle depends on ``seed + epoch`` only, so it is the same permutation
    whether a trial resumed or not, and whatever the number of workers (worker ``r`` of ``n`` takes
    positions ``r, r+n, ...`` of it)."""
    from torch.utils.data import DistributedSampler  # torch: only where a model trains

    data = range(dataset) if isinstance(dataset, int) else dataset
    return DistributedSampler(data, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed)


def sum_across(*values: float) -> tuple[float, ...]:
    """Each value summed over the trial's workers (e.g. a loss total and a sample count, for a
    metric over the whole epoch rather than rank 0's shard); the values themselves with one worker."""
    if not _distributed():
        return tuple(float(v) for v in values)
    import torch  # torch: only where a model trains
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.to(device())
    dist.all_reduce(t)
    return tuple(t.cpu().tolist())
