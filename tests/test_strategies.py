"""Strategies and the conversions of a space to Optuna and Ray Tune."""

import optuna
import pytest

from hpsearch.ray.searchers import make_search_alg
from hpsearch.search.strategies import define_by_run, initial_points, planned_trials, to_optuna_distributions
from hpsearch.space import Choice, Derived, Fixed, Float, Int, PowerOfTwo, Space

SPACE = Space(
    Fixed("model", "mlp"),
    Float("base_lr", 1e-4, 1e-1, log=True),
    Int("depth", 1, 4),
    Int("units", 8, 512, log=True),
    PowerOfTwo("batch_size", 32, 256),
    Derived("lr", "base_lr * batch_size / 256"),
    Choice("optimizer", ["adamw", "sgd"]),
    Float("momentum", 0.8, 0.99, when={"optimizer": "sgd"}),
)


def test_optuna_distributions():
    d = to_optuna_distributions(SPACE)
    assert set(d) == {"base_lr", "depth", "units", "batch_size", "optimizer", "momentum"}
    assert d["base_lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert d["units"] == optuna.distributions.IntDistribution(8, 512, log=True)
    assert d["batch_size"].choices == (32, 64, 128, 256)


def test_define_by_run_suggests_conditionals_only_where_active():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    seen = set()
    for _ in range(30):
        trial = study.ask()
        constants = define_by_run(SPACE)(trial)
        config = {**trial.params, **constants}
        assert ("momentum" in trial.params) == (config["optimizer"] == "sgd")
        assert constants["lr"] == pytest.approx(config["base_lr"] * config["batch_size"] / 256)
        assert constants["model"] == "mlp"
        assert SPACE.validate_config({k: v for k, v in config.items() if k != "lr"})
        seen.add(config["optimizer"])
        study.tell(trial, config["base_lr"])
    assert seen == {"adamw", "sgd"}


def test_points_and_counts():
    assert planned_trials(SPACE, "random", None) == 20
    small = Space(Float("lr", 1e-3, 1e-1, log=True, grid=3), Choice("opt", ["a", "b"]))
    assert planned_trials(small, "grid", None) == 6 and planned_trials(small, "grid", 4) == 4
    assert initial_points(small, "grid", 6, seed=0) == list(small.grid())
    assert initial_points(small, "random", 5, seed=3) == small.sample(5, seed=3)
    with pytest.raises(ValueError, match="strategy: must be one of grid, random, tpe, got 'bayes'"):
        planned_trials(small, "bayes", 3)
    with pytest.raises(ValueError, match="trials: must be a whole number >= 1, got -2"):
        planned_trials(small, "random", -2)


def test_search_algorithms():
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    assert isinstance(make_search_alg("grid", SPACE, "acc", "max", 4, seed=0), BasicVariantGenerator)
    assert isinstance(make_search_alg("tpe", SPACE, "acc", "max", 4, seed=0), OptunaSearch)
    with pytest.raises(ValueError, match="batch_size: value 100 is outside the space"):
        make_search_alg("random", SPACE, "acc", "max", 4, seed=0, points_to_evaluate=[
            {"model": "mlp", "base_lr": 0.01, "depth": 2, "units": 64, "batch_size": 100, "optimizer": "adamw"}])
