"""Recorded learning curves replayed through Ray's own schedulers on a virtual clock: the curve
table (``curves``), one simulated sweep (``events``), many seeds and settings (``many``), where
curves come from (``sources``), and what ``plan`` and ``simulate`` print (``explain``, ``plot``)."""
