"""Tracking cost (part 4 of the suite), kept as its own command for habit:

    .venv/bin/python scripts/bench/tracking_cost.py [--quick]

is ``scripts/bench/run --only tracking``: hpsearch random/ASHA on the MNIST-1D MLP space with
tracking off, into the embedded SQLite store and into a real ``mlflow server``, interleaved; see
time_to_model.py for the measurement.
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    scripts = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(scripts))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scripts), os.environ.get("PYTHONPATH")]))
    from bench.suite import main

    sys.exit(main(["--only", "tracking", *sys.argv[1:]]))
