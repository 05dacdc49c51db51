"""Shared fixtures: one real local Ray for the whole session (each start costs seconds)."""

import os

import pytest

from hpsearch.space import Choice, Fixed, Float, PowerOfTwo, Space

# A small MLP space on MNIST-1D: 3 lr x 2 width x (adamw + sgd) = 12 grid points; ~20 ms an epoch.
TINY = Space(
    Fixed("model", "mlp"),
    Float("lr", 1e-3, 1e-1, log=True, grid=3),
    PowerOfTwo("width", 16, 32),
    Fixed("batch_size", 256),
    Fixed("depth", 1),
    Choice("optimizer", ["adamw", "sgd"]),
    Float("momentum", 0.8, 0.95, when={"optimizer": "sgd"}, grid=1),
)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mnist1d():
    from hpsearch.data import load_dataset

    return load_dataset("mnist1d")


@pytest.fixture()
def storage(tmp_path):
    return str(tmp_path / "ray_results")
