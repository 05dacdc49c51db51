"""Strategies propose configurations: grid, random, tpe. Ray Tune runs them
(``hpsearch.ray.searchers.make_search_alg`` builds its search algorithm from what is here).

Grid and random share one path: the space enumerates or samples (seeded, with conditional and
derived values exact) and Ray's ``BasicVariantGenerator`` runs those points in order. TPE is
Optuna's, through Ray's ``OptunaSearch`` with a define-by-run function, which is the only way
Optuna expresses conditional parameters. The space stays ours; conversion happens here, at the edge.

Example:
    >>> from hpsearch.space import Space, Float, Choice
    >>> space = Space(Float("lr", 1e-4, 1e-2, log=True), Choice("optimizer", ["adamw", "sgd"]))
    >>> sorted(to_optuna_distributions(space))
    ['lr', 'optimizer']
"""

from __future__ import annotations

from typing import Any

from hpsearch.space import Choice, Derived, Fixed, Float, Int, Param, PowerOfTwo, Space
from hpsearch.vocab import Strategy, whole


def planned_trials(space: Space, strategy: str, trials: int | None) -> int:
    """How many trials a strategy will run: the grid's size for grid (unless capped), else ``trials``."""
    strategy = Strategy.parse(strategy)
    if trials is not None:
        whole("trials", trials, 1)
    if strategy == "grid":
        size = len(space.grid())
        return size if trials is None else min(trials, size)
    return 20 if trials is None else trials


def initial_points(space: Space, strategy: str, trials: int, seed: int) -> list[dict[str, Any]]:
    """The configurations grid and random search will run, in order."""
    if strategy == "grid":
        return list(space.grid()[:trials])
    if strategy == "random":
        return space.sample(trials, seed=seed)
    raise ValueError(f"strategy: {strategy!r} proposes configurations as it learns, not up front")


# -- Optuna ------------------------------------------------------------------------------------

def _optuna_distribution(p: Param):
    import optuna.distributions as od  # Optuna: only when it samples or ranks

    if isinstance(p, Float):
        return od.FloatDistribution(p.low, p.high, log=p.log)
    if isinstance(p, Int):
        return od.IntDistribution(p.low, p.high, log=p.log)
    if isinstance(p, PowerOfTwo):
        return od.CategoricalDistribution(p.grid_values())
    if isinstance(p, Choice):
        return od.CategoricalDistribution(list(p.options))
    raise TypeError(f"{p.name}: {type(p).__name__} has no Optuna distribution")


def to_optuna_distributions(space: Space) -> dict[str, Any]:
    """Optuna distributions of the tuned parameters (fixed and derived values are not sampled)."""
    return {p.name: _optuna_distribution(p) for p in space.tuned if not isinstance(p, Fixed)}


class define_by_run:  # noqa: N801 - used like a function; a class so Ray can pickle the searcher
    """An Optuna define-by-run function: suggests active parameters, returns fixed and derived ones.

    Ray saves the searcher's state with plain pickle, which refuses closures; hence an object.
    """

    def __init__(self, space: Space) -> None:
        self.space = space

    def __call__(self, trial) -> dict[str, Any]:
        space = self.space
        distributions = to_optuna_distributions(space)
        config: dict[str, Any] = {}
        for p in space.tuned:
            if not p.active(config):
                continue
            if isinstance(p, Fixed):
                config[p.name] = p.value
                continue
            d = distributions[p.name]
            if isinstance(p, Float):
                config[p.name] = trial.suggest_float(p.name, d.low, d.high, log=d.log)
            elif isinstance(p, Int):
                config[p.name] = trial.suggest_int(p.name, d.low, d.high, log=d.log)
            else:
                config[p.name] = trial.suggest_categorical(p.name, d.choices)
        full = space.complete(config)
        # Ray merges what this returns with what was suggested: return only the constants.
        return {k: v for k, v in full.items() if isinstance(space[k], (Fixed, Derived))}
