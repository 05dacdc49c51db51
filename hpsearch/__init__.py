"""hpsearch: hyperparameter search for PyTorch on Ray Tune, with every trial in MLflow.

The public API is what this module exports; everything else is private.
"""

from hpsearch import session
from hpsearch.data import Dataset, load_dataset
from hpsearch.session import TrialFailed, load_checkpoint, report
from hpsearch.space import Choice, Derived, Fixed, Float, Int, PowerOfTwo, Space, load_space_module
from hpsearch.sweep import Resources, SweepResult, TrialRecord, resume_sweep, sweep

__version__ = "0.1.0"

__all__ = [
    "Choice", "Dataset", "Derived", "Fixed", "Float", "Int", "PowerOfTwo", "Resources", "Space", "SweepResult",
    "TrialFailed", "TrialRecord",
    "load_checkpoint", "load_dataset", "load_space_module", "report", "resume_sweep", "session", "sweep",
    "__version__",
]
