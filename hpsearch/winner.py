"""The best trial's model: rebuilt from its last checkpoint, for MLflow to log (and register).

A trainable hands its model over in one of three ways: its checkpoint holds the ``nn.Module``
itself, or a dict with one under ``"model"``; or a dict whose ``"model"`` is a state dict, which
is loaded into the network the sweep's ``MODEL`` builder makes from the trial's config (the
reference trainable's own network when it trained).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from hpsearch.results import TrialRecord
from hpsearch.storage import as_location
from hpsearch.trial.data import Dataset
from hpsearch.trial.session import read_checkpoint_dir


def best_model(best: TrialRecord | None, data: Dataset | None, builder: Callable[..., Any] | None,
               train_fn: Callable[..., Any] | None):
    """The trained model of the ``best`` trial; None if its checkpoint holds no model (or none
    that ``builder``, the sweep's ``MODEL``, can take)."""
    if best is None or not best.checkpoint:
        return None
    from torch import nn  # torch: only where a model trains


    with as_location(best.checkpoint).local_copy() as folder:  # a checkpoint in a bucket is downloaded
        state = read_checkpoint_dir(str(folder))
    if isinstance(state, nn.Module):
        return state.eval()
    if not isinstance(state, dict):
        return None
    held = state.get("model")
    if isinstance(held, nn.Module):
        return held.eval()
    from hpsearch.trial.train import build_model  # torch: only for the reference trainable
    from hpsearch.trial.train import train as reference_train

    if builder is None and train_fn is reference_train and data is not None:
        builder = lambda config, data: build_model(config, data.num_features, data.num_classes)  # noqa: E731
    if builder is None or not isinstance(held, dict):
        return None
    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present  # torch: only where a model trains

    wants_data = "data" in inspect.signature(builder).parameters
    model = builder(best.config, data=data) if wants_data else builder(best.config)
    held = dict(held)
    consume_prefix_in_state_dict_if_present(held, "module.")  # saved from the DDP wrapper rather than the model
    model.load_state_dict(held)
    return model.eval()
