"""Datasets that need no download: MNIST-1D generated locally, and scikit-learn's bundled digits.

The sweep puts the loaded arrays into Ray's object store once (``tune.with_parameters``); trials
read them from there instead of regenerating or re-reading them.

Example:
    >>> data = load_dataset("digits")
    >>> data.x_train.shape[1], data.num_classes
    (64, 10)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hpsearch.environment import cache_folder


@dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays for training and validation; ``x`` is float32 of shape (n, features), ``y`` int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_val) != len(self.y_val):
            raise ValueError(
                f"{self.name}: x and y must have the same length, got train {len(self.x_train)}/{len(self.y_train)}, "
                f"validation {len(self.x_val)}/{len(self.y_val)}"
            )
        if len(self.x_train) == 0 or len(self.x_val) == 0:
            raise ValueError(f"{self.name}: needs training and validation samples, got {len(self.x_train)} and {len(self.x_val)}")

    @property
    def num_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    def version(self) -> str:
        """A short hash of the arrays: equal for equal data, so results can be reused across runs.

        Example:
            >>> load_dataset("digits").version() == load_dataset("digits").version()
            True
        """

        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_val, self.y_val):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()[:12]


def _mnist1d(num_samples: int = 8000, train_split: float = 0.5, seed: int = 42) -> Dataset:
    """MNIST-1D as in the textbook experiments: 4000 train / 4000 validation, generated here.

    Generation takes a few seconds, so the arrays are cached on disk by their arguments.
    """
    path = cache_folder() / f"mnist1d-n{num_samples}-split{train_split}-seed{seed}.npz"
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset  # never get_dataset: it downloads

        args = get_dataset_args()
        args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
        raw = make_dataset(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=raw["x"], y=raw["y"], x_test=raw["x_test"], y_test=raw["y_test"])
        os.replace(tmp, path)  # atomic: two sweeps starting together never read half a file
    with np.load(path) as f:
        return Dataset(
            "mnist1d",
            f["x"].astype(np.float32), f["y"].astype(np.int64),
            f["x_test"].astype(np.float32), f["y_test"].astype(np.int64),
            num_classes=10,
        )


def _digits(seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 samples), split half and half, scaled to [0, 1]."""
    from sklearn.datasets import load_digits  # scikit-learn: only for this dataset
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x / 16.0, y, test_size=0.5, random_state=seed, stratify=y)
    return Dataset("digits", x_tr.astype(np.float32), y_tr.astype(np.int64),
                   x_va.astype(np.float32), y_va.astype(np.int64), num_classes=10)


DATASETS: dict[str, Callable[[], Dataset]] = {"mnist1d": _mnist1d, "digits": _digits}


def load_dataset(data: str | Dataset | Callable[[], Dataset]) -> Dataset:
    """A dataset by name (``mnist1d``, ``digits``), a ``Dataset``, or a function returning one."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        if data not in DATASETS:
            raise ValueError(f"dataset: unknown dataset {data!r} (have {', '.join(sorted(DATASETS))})")
        return DATASETS[data]()
    if callable(data):
        loaded = data()
        if not isinstance(loaded, Dataset):
            raise ValueError(f"dataset: a data-loading function must return hpsearch.Dataset, got {type(loaded).__name__}")
        return loaded
    raise ValueError(f"dataset: give a name, a Dataset or a function returning one, got {type(data).__name__}")
