"""Scheduled nightly tuning: a config (``config``), every night's record (``ledger``), the morning
verdict (``verdict``), and one start of ``hpsearch nightly`` (``run``)."""

from hpsearch.nightly.config import NightlyConfig, load_config, parse_date
from hpsearch.nightly.ledger import Ledger
from hpsearch.nightly.run import EXIT_BUSY, Busy, run_nightly
from hpsearch.nightly.verdict import EXIT_OK, EXIT_WORSE, judge

__all__ = ["EXIT_BUSY", "EXIT_OK", "EXIT_WORSE", "Busy", "Ledger", "NightlyConfig", "judge", "load_config",
           "parse_date", "run_nightly"]
