"""Unit tests for hpsearch.space: parameter kinds, grids, conditionals, derived values, JSON."""

import json

import pytest

from hpsearch.space import Choice, Derived, Fixed, Float, Int, PowerOfTwo, Space
from hpsearch.space.modules import load_space_module, resolve_space_path

# -- each parameter kind -------------------------------------------------------------------------

def test_float_linear_grid_is_exact_and_unit_mapping_round_trips():
    p = Float("dropout", 0.0, 0.5, grid=6)
    assert p.grid_values() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    for v in (0.0, 0.25, 0.5):
        assert p.from_unit(p.to_unit(v)) == pytest.approx(v)


def test_float_log_grid_is_log_spaced():
    assert Float("lr", 1e-5, 1e-1, log=True, grid=5).grid_values() == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert Float("wd", 1e-5, 1e-3, log=True, grid=3).grid_values() == [1e-5, 1e-4, 1e-3]
    # A log parameter's midpoint is the geometric mean, not the arithmetic one.
    assert Float("lr", 1e-4, 1e-2, log=True).from_unit(0.5) == pytest.approx(1e-3)


def test_float_grid_of_one_point_is_the_middle():
    assert Float("x", 0.0, 1.0, grid=1).grid_values() == [0.5]


def test_int_linear_and_log_grids():
    assert Int("depth", 1, 4).grid_values() == [1, 2, 3, 4]
    assert Int("units", 0, 100).grid_values() == [0, 25, 50, 75, 100]
    assert Int("units", 1, 1000, log=True, grid=4).grid_values() == [1, 10, 100, 1000]
    assert Int("depth", 1, 4, grid=2).grid_values() == [1, 4]


def test_int_sampling_covers_both_ends_evenly():
    import random
    rng = random.Random(0)
    counts = {v: 0 for v in range(1, 5)}
    for _ in range(4000):
        counts[Int("depth", 1, 4).sample(rng)] += 1
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_power_of_two():
    p = PowerOfTwo("batch_size", 16, 4096)
    assert p.grid_values() == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert p.from_unit(0.0) == 16 and p.from_unit(0.999) == 4096
    assert p.to_unit(4096) == 1.0 and p.contains(64) and not p.contains(48)


def test_choice_and_fixed():
    c = Choice("optimizer", ["adamw", "sgd"])
    assert c.grid_values() == ["adamw", "sgd"] and c.from_unit(0.0) == "adamw" and c.from_unit(0.99) == "sgd"
    f = Fixed("model", "mlp")
    assert f.grid_values() == ["mlp"] and f.from_unit(0.7) == "mlp"


def test_parameters_are_frozen():
    p = Float("lr", 1e-5, 1e-1, log=True)
    with pytest.raises(AttributeError):
        p.low = 0.0  # type: ignore[misc]


# -- the space as a whole --------------------------------------------------------------------------

def _space():
    return Space(
        Fixed("model", "mlp"),
        Float("base_lr", 1e-3, 1e-1, log=True, grid=3),
        PowerOfTwo("batch_size", 128, 256),
        Derived("lr", "base_lr * batch_size / 256"),
        Choice("optimizer", ["adamw", "sgd"]),
        Float("momentum", 0.8, 0.9, when={"optimizer": "sgd"}, grid=2),
    )


def test_grid_expands_conditionals_only_where_active():
    grid = _space().grid()
    # 3 lr x 2 batch x (adamw + sgd x 2 momentum) = 3 x 2 x 3
    assert len(grid) == 18
    adamw = [c for c in grid if c["optimizer"] == "adamw"]
    sgd = [c for c in grid if c["optimizer"] == "sgd"]
    assert len(adamw) == 6 and all("momentum" not in c for c in adamw)
    assert len(sgd) == 12 and {c["momentum"] for c in sgd} == {0.8, 0.9}
    assert len({json.dumps(c, sort_keys=True) for c in grid}) == 18  # no duplicates


def test_grid_order_is_deterministic_and_indexable():
    a, b = _space().grid(), _space().grid()
    assert list(a) == list(b)
    assert a[0] == {"base_lr": 0.001, "batch_size": 128, "lr": 0.0005, "model": "mlp", "optimizer": "adamw"}
    assert a[-1] == a[len(a) - 1] and a[1:3] == [a[1], a[2]]
    with pytest.raises(IndexError, match="out of range for a grid of 18"):
        a[18]


def test_derived_values_follow_the_linear_scaling_rule():
    for config in list(_space().grid()) + _space().sample(20, seed=3):
        assert config["lr"] == pytest.approx(config["base_lr"] * config["batch_size"] / 256)


def test_derived_functions():
    d = Derived("steps", "int(max(1, log2(batch_size)) * 2)")
    assert d.compute({"batch_size": 256}) == 16
    assert set(d.references()) == {"batch_size"}


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    s = _space()
    assert s.sample(10, seed=7) == s.sample(10, seed=7)
    assert s.sample(10, seed=7) != s.sample(10, seed=8)
    for c in s.sample(50, seed=1):
        assert 1e-3 <= c["base_lr"] <= 1e-1 and c["batch_size"] in (128, 256)
        assert ("momentum" in c) == (c["optimizer"] == "sgd")


def test_log_sampling_is_uniform_in_log_space():
    s = Space(Float("lr", 1e-5, 1e-1, log=True))
    below = sum(c["lr"] < 1e-3 for c in s.sample(2000, seed=0))
    assert 900 < below < 1100  # half the decades lie below 1e-3


def test_json_round_trip_keeps_everything():
    s = _space()
    again = Space.from_json(s.to_json())
    assert again == s
    assert list(again.grid()) == list(s.grid())
    assert again.sample(5, seed=2) == s.sample(5, seed=2)
    assert again["momentum"].conditions == (("optimizer", ("sgd",)),)


def test_config_hash_ignores_float_noise_and_key_order():
    s = _space()
    c = s.grid()[0]
    noisy = dict(reversed(list(c.items())), base_lr=c["base_lr"] * (1 + 1e-15))
    assert s.config_hash(noisy) == s.config_hash(c)
    assert s.config_hash(s.grid()[1]) != s.config_hash(c)


def test_validate_config_accepts_grid_points_and_rejects_strangers():
    s = _space()
    assert s.validate_config({"model": "mlp", "base_lr": 0.01, "batch_size": 128, "optimizer": "adamw"})["lr"] == 0.005
    with pytest.raises(ValueError, match="batch_size: value 100 is outside the space"):
        s.validate_config({"model": "mlp", "base_lr": 0.01, "batch_size": 100, "optimizer": "adamw"})
    with pytest.raises(ValueError, match="momentum: missing"):
        s.validate_config({"model": "mlp", "base_lr": 0.01, "batch_size": 128, "optimizer": "sgd"})


# -- invalid definitions: each with its own message naming the parameter, rule and value ---------

BAD_DEFINITIONS = [
    (lambda: Float("lr", 0.0, 0.1, log=True), "lr: log scale needs low > 0, got low=0.0"),
    (lambda: Float("lr", 0.1, 0.01), "lr: needs low <= high, got low=0.1, high=0.01"),
    (lambda: Float("lr", float("nan"), 0.1), "lr: low and high must be finite"),
    (lambda: Float("lr", "small", 0.1), "lr: low and high must be numbers, got low='small'"),
    (lambda: Float("lr", 1e-5, 1e-1, grid=0), "lr: grid must be a whole number of points >= 1, got grid=0"),
    (lambda: Float("my lr", 1e-5, 1e-1), "Float: the name must be a Python identifier, got name='my lr'"),
    (lambda: Int("depth", 1.5, 4), "depth: low must be a whole number, got low=1.5"),
    (lambda: Int("width", 0, 64, log=True), "width: log scale needs low > 0, got low=0"),
    (lambda: PowerOfTwo("batch_size", 16, 1000), "batch_size: high must be a power of two (1, 2, 4, ...), got high=1000"),
    (lambda: PowerOfTwo("batch_size", 512, 16), "batch_size: needs low <= high, got low=512, high=16"),
    (lambda: Choice("optimizer", []), "optimizer: needs at least one option, got options=[]"),
    (lambda: Choice("optimizer", ["sgd", "sgd"]), "optimizer: options must be distinct"),
    (lambda: Choice("optimizer", "sgd"), "optimizer: options must be a list, got options='sgd'"),
    (lambda: Choice("act", [object()]), "act: options must be str, int, float, bool or None"),
    (lambda: Derived("lr", "base_lr *"), "lr: expression is not valid arithmetic"),
    (lambda: Derived("lr", "__import__('os').system('x')"), "lr: expression may call only"),
    (lambda: Derived("lr", "base_lr if batch_size else 1"), "lr: expression may use only numbers, parameter names"),
    (lambda: Space(), "space: needs at least one parameter, got none"),
    (lambda: Space(Float("lr", 1e-5, 1e-1), Float("lr", 1e-4, 1e-2)), "lr: parameter names must be unique, got 2 definitions"),
    (lambda: Space(Derived("lr", "base_lr * 2")), "lr: refers to 'base_lr', which is not a parameter of this space"),
    (lambda: Space(Float("momentum", 0.8, 0.9, when={"optimizer": "sgd"})), "momentum: refers to 'optimizer', which is not a parameter"),
    (lambda: Space(Derived("a", "b + 1"), Derived("b", "a + 1")), "a: dependencies form a cycle among a -> b"),
    (lambda: Space(Derived("a", "a + 1")), "a: cannot depend on itself"),
    (lambda: Space(Choice("optimizer", ["adamw", "sgd"]), Float("momentum", 0.8, 0.9, when={"optimizer": "adam"})),
     "momentum: condition optimizer == 'adam' can never hold (optimizer takes ['adamw', 'sgd'])"),
    (lambda: Space(Choice("opt", ["adamw", "sgd"]), Float("m", 0.8, 0.9, when={"opt": "sgd"}), Derived("x", "m * 2")),
     "x: a derived value cannot use the conditional parameter 'm'"),
    (lambda: Float("m", 0.8, 0.9, when={}), "m: when must be a non-empty mapping"),
    (lambda: Space(Float("lr", 1e-5, 1e-1), "dropout"), "space: every entry must be a parameter"),
    (lambda: Space.from_dict({"params": []}), "space: not a recorded hpsearch space"),
    (lambda: Space.from_dict({"hpsearch_space": 1, "params": [{"kind": "gauss", "name": "lr"}]}), "lr: unknown parameter kind 'gauss'"),
]


@pytest.mark.parametrize("build, message", BAD_DEFINITIONS, ids=[m[:40] for _, m in BAD_DEFINITIONS])
def test_invalid_definitions_fail_with_one_clear_line(build, message):
    with pytest.raises(ValueError) as info:
        build()
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_invalid_definition_messages_open_with_the_parameter_and_are_distinct():
    # The product's own messages, not this table's: each opens with the name of what is being
    # defined (so an error in a long space points at its line), and no two rules share a message.
    texts = []
    for build, message in BAD_DEFINITIONS:
        with pytest.raises(ValueError) as info:
            build()
        subject = message.split(":")[0]
        assert str(info.value).startswith(f"{subject}: "), (subject, str(info.value))
        texts.append(str(info.value))
    assert len(set(texts)) == len(texts)


def test_derived_evaluation_error_names_the_parameter():
    s = Space(Int("n", 0, 2), Derived("inv", "1 / n"))
    with pytest.raises(ValueError, match=r"inv: cannot compute '1 / n'"):
        s.complete({"n": 0})


# -- space modules ---------------------------------------------------------------------------------

def test_shipped_space_modules_load_by_name_and_path(tmp_path, monkeypatch):
    mlp = load_space_module("mlp")
    assert mlp.metric == "val_acc" and mlp.mode == "max" and mlp.max_epochs >= 1
    assert mlp.space["lr"] == Float("lr", 1e-5, 1e-1, log=True, grid=3)
    assert mlp.space["weight_decay"].log and mlp.space["momentum"].conditions == (("optimizer", ("sgd",)),)
    cnn = load_space_module(str(resolve_space_path("cnn1d")))
    assert isinstance(cnn.space["lr"], Derived)
    monkeypatch.chdir(tmp_path)  # short names resolve from the installed repo too
    assert load_space_module("mlp").space == mlp.space


BAD_MODULES = [
    ("raise RuntimeError('boom')\n", "importing .* failed: RuntimeError: boom"),
    ("X = 1\n", "SPACE: .* must define SPACE = Space"),
    ("from hpsearch.space import *\nSPACE = Space(Float('lr', 1e-3, 1e-1))\nMODE = 'max'\nMAX_EPOCHS = 3\n", "METRIC: .* must name the metric"),
    ("from hpsearch.space import *\nSPACE = Space(Float('lr', 1e-3, 1e-1))\nMETRIC = 'acc'\nMODE = 'up'\nMAX_EPOCHS = 3\n", "MODE: must be 'max' or 'min', got 'up'"),
    ("from hpsearch.space import *\nSPACE = Space(Float('lr', 1e-3, 1e-1))\nMETRIC = 'acc'\nMODE = 'max'\nMAX_EPOCHS = 0\n", "MAX_EPOCHS: must be a whole number >= 1, got 0"),
    ("from hpsearch.space import *\nSPACE = Space(Float('lr', 0, 1e-1, log=True))\n", "importing .* failed: ValueError: lr: log scale needs low > 0"),
]


@pytest.mark.parametrize("source, message", BAD_MODULES)
def test_bad_space_modules(tmp_path, source, message):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(ValueError, match=message):
        load_space_module(str(path))


def test_unknown_space_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"space: no space module named 'resnet' \(known: .*mlp"):
        load_space_module("resnet")
    with pytest.raises(ValueError, match="space: no such file 'nope/x.py'"):
        load_space_module("nope/x.py")


def test_public_functions_are_not_shadowed_by_submodules():
    import importlib
    import pkgutil

    import hpsearch

    for info in pkgutil.iter_modules(hpsearch.__path__):
        importlib.import_module(f"hpsearch.{info.name}")
    assert callable(hpsearch.report) and callable(hpsearch.sweep)
