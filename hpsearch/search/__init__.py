"""How configurations are proposed and the budget shared, as pure functions: the strategies'
points and Optuna distributions (``strategies``), the schedulers' rung and bracket arithmetic
(``schedulers``). Ray's searchers and schedulers are built from these in ``hpsearch.ray``."""
