"""What a trial needs to know of its sweep, and nothing more: ``TrialSpec``.

The driver builds it once from the resolved settings (``hpsearch.ray.tuner.trial_spec``) and Ray
ships it to every trial's actor and every DDP worker, instead of the sweep's whole settings.

Example:
    >>> spec = TrialSpec(max_epochs=9, checkpoint_epochs=frozenset({1, 3}), checkpoint_every_s=3600)
    >>> policy = spec.checkpoint_policy()
    >>> [e for e in range(1, 10) if policy.due(e)]
    [1, 3, 9]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from hpsearch.trial.session import CheckpointPolicy


@dataclass(frozen=True)
class TrialSpec:
    """A trial's budget and checkpoint policy, and for a multi-worker trial its workers.

    ``checkpoint_epochs``: where the scheduler may pause or stop the trial (a checkpoint pays
    there); ``group_storage``: the folder under which each running worker group keeps Ray Train's
    storage (the sweep's folder, which the driver knows); ``code_folder``: the space module's
    folder, which the trial puts on its ``sys.path`` where it exists on its node (a Ray started on
    the driver's machine; a joined cluster gets it shipped as the job's ``working_dir``).
    """

    max_epochs: int
    checkpoint_epochs: frozenset[int] = frozenset()
    checkpoint_every_s: float = 60.0
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    group_storage: str | None = None
    code_folder: str | None = None

    def use_code_folder(self) -> None:
        """A ``TRAIN`` importing a module beside its space module finds it (see ``code_folder``)."""
        folder = self.code_folder
        if folder and folder not in sys.path and os.path.isdir(folder):
            sys.path.insert(0, folder)

    def checkpoint_policy(self) -> CheckpointPolicy:
        """A new policy (its own clock) for one run of the trial's ``train``."""
        return CheckpointPolicy(self.checkpoint_epochs, self.max_epochs, self.checkpoint_every_s)

    def worker_resources(self) -> dict[str, float]:
        """What each worker of a multi-worker trial holds."""
        out = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            out["GPU"] = float(self.gpus_per_worker)
        return out
