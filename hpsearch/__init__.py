"""hpsearch: hyperparameter search for PyTorch on Ray Tune, with every trial in MLflow.

The public API is what this module exports; everything else is private.
"""

import sys

from hpsearch.engine import resume_sweep, sweep
from hpsearch.results import SweepResult, TrialRecord
from hpsearch.settings import Resources, SweepSettings
from hpsearch.space import Choice, Derived, Fixed, Float, Int, PowerOfTwo, Space
from hpsearch.space.modules import load_space_module
from hpsearch.trial import ddp, session
from hpsearch.trial.data import Dataset, load_dataset
from hpsearch.trial.session import TrialFailed, load_checkpoint, report
from hpsearch.vocab import VERSION, Scheduler, StopReason, Strategy, TrialStatus

# The trial side's public modules keep their short names: `import hpsearch.session`, `import hpsearch.ddp`.
sys.modules.setdefault("hpsearch.session", session)
sys.modules.setdefault("hpsearch.ddp", ddp)

__version__ = VERSION

__all__ = [
    "Choice", "Dataset", "Derived", "Fixed", "Float", "Int", "PowerOfTwo", "Resources", "Scheduler", "Space",
    "StopReason", "Strategy", "SweepResult", "SweepSettings", "TrialFailed", "TrialRecord", "TrialStatus",
    "ddp", "load_checkpoint", "load_dataset", "load_space_module", "report", "resume_sweep", "session", "sweep",
    "__version__",
]
