"""The trial side: the function Ray runs in a trial's actor, and the replay of recorded curves.

Nothing here imports the driver side (engine, tracking): this code is shipped to Ray's workers.

``trial_entry`` calls the user's ``train(config)``; a configuration with a result recorded
earlier under the same budget, data and code (a nightly's reuse) reports that result again
instead, epoch by epoch, so that schedulers and searchers see it as if it were trained.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from hpsearch.ray.compat import quiet_checkpoint_notices
from hpsearch.space import Space
from hpsearch.trial.data import Dataset
from hpsearch.trial.session import checkpoint_policy
from hpsearch.trial.spec import TrialSpec
from hpsearch.vocab import REPLAY_MARK, REUSED_KEY


@dataclass(frozen=True)
class Replay:
    """A trial result recorded earlier, to be reported again rather than trained again.

    ``curve`` holds one dict of metrics per epoch (``epoch`` included). ``checkpoint`` is the
    directory of the checkpoint reported at ``checkpoint_epoch``: a trial the scheduler lets run
    past the recorded curve continues training from there. ``source`` names where it came from.

    Example:
        >>> Replay(curve=({"epoch": 1}, {"epoch": 2}), source="night-1").usable(max_epochs=2)
        True
    """

    curve: tuple[dict[str, Any], ...]
    source: str
    checkpoint: str | None = None
    checkpoint_epoch: int = 0

    def usable(self, max_epochs: int) -> bool:
        """Whole to the budget, or resumable from its checkpoint."""
        last = int(self.curve[-1]["epoch"]) if self.curve else 0
        return last >= max_epochs or (self.checkpoint is not None and self.checkpoint_epoch >= 1)


def trial_entry(
    config: dict[str, Any], *, train_fn: Callable[..., Any], data: Dataset | None, spec: TrialSpec,
    space: Space, reuse: Mapping[str, Replay] | None = None,
) -> None:
    """Calls the user's ``train(config)``, passing ``data`` / ``max_epochs`` if it declares them.

    Ray fills inactive conditional parameters with None; the user sees them absent, as in the space.
    A configuration with a recorded result (``reuse``) reports that result again instead. ``spec``
    says what the trial needs of its sweep; with ``spec.workers`` above 1, ``train`` runs on a group
    of workers (``hpsearch.trial.workers``).
    """
    replay = (reuse or {}).get(space.config_hash(config))
    if replay is not None and replay_curve(replay, spec.max_epochs):
        return
    spec.use_code_folder()
    quiet_checkpoint_notices()
    params = inspect.signature(train_fn).parameters
    kwargs: dict[str, Any] = {}
    if "data" in params:
        kwargs["data"] = data
    if "max_epochs" in params:
        kwargs["max_epochs"] = spec.max_epochs
    if spec.workers > 1:
        from hpsearch.trial.workers import run_group  # imports Ray Train (~1 s): only where a trial needs it

        run_group(space.complete(config), train_fn, kwargs, spec)
        return
    try:
        with checkpoint_policy(spec.checkpoint_policy()):
            train_fn(space.complete(config), **kwargs)
    finally:
        # What the trial printed since its last report, into its output files (log_to_file) now: Ray
        # copies them to storage before it closes them, so a stopped actor's copy would lack it.
        sys.stdout.flush()
        sys.stderr.flush()


def replay_curve(replay: Replay, max_epochs: int) -> bool:
    """Report a recorded curve epoch by epoch, so the scheduler and searcher see it as if trained.

    Returns True when the curve covers the budget; False when training must go on from the
    recorded checkpoint (reported with the last replayed epoch, so ``load_checkpoint`` finds it).
    Each earlier replayed epoch carries a small marker checkpoint: a trial paused mid-replay
    (HyperBand) and resumed goes on replaying from there rather than from epoch 1.
    """
    import ray  # in the trial's actor Ray is loaded; at module level `import hpsearch` would pay for it
    from ray import tune

    done = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            mark = Path(d, REPLAY_MARK)
            if not mark.exists():
                return False  # resumed past the replay: the user's train() continues from its state
            done = int(json.loads(mark.read_text())["epoch"])
    whole = bool(replay.curve) and int(replay.curve[-1]["epoch"]) >= max_epochs
    upto = max_epochs if whole else replay.checkpoint_epoch
    node = ray.get_runtime_context().get_node_id()
    for row in replay.curve:
        epoch = int(row["epoch"])
        if epoch <= done or epoch > upto:
            continue
        values = {**row, "node_id": node, REUSED_KEY: replay.source}
        if epoch == upto and not whole:
            # A folder or a URI in a bucket: Ray opens either with the storage's filesystem.
            tune.report(values, checkpoint=tune.Checkpoint(replay.checkpoint))
            continue
        with tempfile.TemporaryDirectory(prefix="hpsearch-replay-") as tmp:
            Path(tmp, REPLAY_MARK).write_text(json.dumps({"epoch": epoch}))
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(tmp))
    return whole
