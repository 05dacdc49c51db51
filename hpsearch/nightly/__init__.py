"""Scheduled nightly tuning: a config (``config``), every night's record (``ledger``), the morning
verdict (``verdict``), the reuse key (``key``), a start's exit status and notification
(``outcome``), and one start of ``hpsearch nightly`` or its dry run (``run``)."""

from hpsearch.nightly.config import NightlyConfig, load_config, parse_date
from hpsearch.nightly.ledger import Ledger
from hpsearch.nightly.outcome import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_CODES, EXIT_CRASHED
from hpsearch.nightly.run import Busy, NightPlan, dry_run, run_nightly
from hpsearch.nightly.verdict import EXIT_NO_RESULT, EXIT_OK, EXIT_WORSE, judge

__all__ = ["EXIT_BAD_INPUT", "EXIT_BUSY", "EXIT_CODES", "EXIT_CRASHED", "EXIT_NO_RESULT", "EXIT_OK", "EXIT_WORSE",
           "Busy", "Ledger", "NightPlan", "NightlyConfig", "dry_run", "judge", "load_config", "parse_date",
           "run_nightly"]
