"""hpsearch: hyperparameter search for PyTorch on Ray Tune, with every trial in MLflow.

The public API is what this module exports; everything else is private.
"""

from hpsearch import session
from hpsearch.data import Dataset, load_dataset
from hpsearch.session import TrialFailed, load_checkpoint, report
from hpsearch.space import Choice, Derived, Fixed, Float, Int, PowerOfTwo, Space, load_space_module

__version__ = "0.1.0"

__all__ = [
    "Choice", "Dataset", "Derived", "Fixed", "Float", "Int", "PowerOfTwo", "Space", "TrialFailed",
    "load_checkpoint", "load_dataset", "load_space_module", "report", "session", "__version__",
]
