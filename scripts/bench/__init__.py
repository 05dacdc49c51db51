"""hpsearch's benchmark suite (``scripts/bench/run``). A package so that Ray workers and spawned
Optuna workers can import the trainables by name (``scripts/`` is put on ``PYTHONPATH``)."""
