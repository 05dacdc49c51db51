"""Strategies propose configurations: grid, random, tpe -> a Ray Tune search algorithm.

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

from typing import Any, Mapping, Sequence

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
    import optuna.distributions as od

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


# -- Ray Tune ----------------------------------------------------------------------------------

def to_ray_param_space(space: Space) -> dict[str, Any]:
    """Ray Tune domains for a space, to use it with Ray Tune directly.

    Conditional parameters become ``tune.sample_from`` returning None where inactive, derived ones
    ``sample_from`` their expression. hpsearch's own strategies use ``Space.sample`` instead, which
    leaves inactive parameters out and is seeded by one ``seed``.
    """
    from ray import tune

    out: dict[str, Any] = {}
    for p in space.params:
        if isinstance(p, Derived):
            out[p.name] = tune.sample_from(lambda spec, p=p: p.compute(spec.config))
            continue
        if isinstance(p, Float):
            domain = (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
        elif isinstance(p, Int):
            domain = (tune.lograndint if p.log else tune.randint)(p.low, p.high + 1)  # Ray's upper is exclusive
        elif isinstance(p, (PowerOfTwo, Choice)):
            domain = tune.choice(p.grid_values())
        else:
            domain = p.value  # Fixed
        if p.conditions:
            import random as _random

            out[p.name] = tune.sample_from(
                lambda spec, p=p: p.sample(_random.Random(str(spec.config))) if p.active(spec.config) else None
            )
        else:
            out[p.name] = domain
    return out


def make_search_alg(
    strategy: str,
    space: Space,
    metric: str,
    mode: str,
    trials: int,
    seed: int,
    concurrency: int | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] = (),
    max_epochs: int | None = None,
):
    """The Ray Tune search algorithm for a strategy. ``points_to_evaluate`` run first (warm start).

    OptunaSearch gets metric and mode here: given its own space, it ignores TuneConfig's. With
    ``max_epochs`` (what sweeps pass), TPE is told a trial stopped before it as pruned
    (``hpsearch.tpe``); without, it is Ray's ``OptunaSearch`` as is (the simulator measures both).
    """
    strategy = Strategy.parse(strategy)
    warm = [space.validate_config(p) for p in points_to_evaluate]
    if strategy == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from hpsearch.tpe import PrunedAwareOptunaSearch

        cls, extra = (OptunaSearch, {}) if max_epochs is None else (PrunedAwareOptunaSearch, {"max_epochs": max_epochs})
        alg = cls(
            space=define_by_run(space), metric=metric, mode=mode, **extra,
            sampler=optuna.samplers.TPESampler(seed=seed),
            points_to_evaluate=[{k: v for k, v in p.items() if not isinstance(space[k], (Fixed, Derived))} for p in warm] or None,
        )
    else:
        from ray.tune.search import BasicVariantGenerator

        points = warm + initial_points(space, strategy, trials, seed)
        return BasicVariantGenerator(points_to_evaluate=points[:trials], max_concurrent=concurrency or 0)
    if concurrency:
        from ray.tune.search import ConcurrencyLimiter

        return ConcurrencyLimiter(alg, max_concurrent=concurrency)
    return alg
