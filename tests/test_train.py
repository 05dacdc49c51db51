"""The reference trainable's model builder (no Ray)."""

import pytest
import torch
from torch import nn

from hpsearch.trial.train import build_model


@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
def test_build_model_rejects_a_misspelt_norm(model):
    # A typo must not silently train without batch norm.
    with pytest.raises(ValueError) as info:
        build_model({"model": model, "width": 4, "depth": 1, "norm": "btach"}, 40, 10)
    assert str(info.value) == "norm: must be 'batch' or 'none', got 'btach'"


@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
@pytest.mark.parametrize("norm, batch_norms", [("batch", 2), ("none", 0)])  # one per block of depth 2
def test_build_model_accepts_batch_and_none(model, norm, batch_norms):
    net = build_model({"model": model, "width": 4, "depth": 2, "norm": norm}, 40, 10)
    assert net(torch.zeros(3, 40)).shape == (3, 10)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == batch_norms
