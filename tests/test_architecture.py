"""The shape of the package, checked from its source: imports run one way, heavy libraries stay
out of the pure modules, and names used across modules are public."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hpsearch"

# Layers, lowest first. A module may import (at module level or inside a function) only modules
# of its own layer or lower ones; within a layer the graph must still be acyclic. The engine
# drives a sweep and opens its tracker, so it sits above tracking; the trial side (what Ray runs in
# a trial's actor) sits low and never reaches the driver side.
LAYERS = [
    {"vocab"},
    {"params", "data", "session", "ddp"},
    {"space"},
    {"modules", "strategies", "schedulers", "train", "tpe"},
    {"settings"},  # pure options; the trial side reads them too
    {"trial", "workers"},  # workers: a trial's group of DDP workers on Ray Train
    {"results", "callbacks", "stopper", "store", "writer", "cluster", "persist", "winner"},
    {"progress", "analysis", "curves"},
    {"simulate", "forecast"},  # replay recorded curves through the schedulers; what plan and simulate print
    {"tracking"},
    {"engine"},
    {"ledger", "verdict"},
    {"nightly"},
    {"cli"},
    {"__init__"},
]
TRIAL_SIDE = {"session", "ddp", "train", "data", "trial", "workers"}
DRIVER_SIDE = {"cluster", "winner", "results", "callbacks", "persist", "stopper", "store", "writer", "progress", "analysis", "tracking",
               "engine", "ledger", "verdict", "nightly", "cli", "tpe", "curves", "simulate", "forecast"}
PURE = {"vocab", "params", "space", "modules", "strategies", "schedulers", "settings"}  # no Ray, MLflow or torch at module level
HEAVY = ("ray", "mlflow", "torch")


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def _imports(tree: ast.Module, top_level_only: bool = False):
    """(imported module, names, line) for every import, at module level or anywhere."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node.lineno


def _internal(module: str, names: list[str]) -> list[str]:
    """The hpsearch modules an import statement reaches."""
    if module == "hpsearch":  # runs the package's __init__ (which imports the engine) first
        return ["__init__"] + [n for n in names if (PACKAGE / f"{n}.py").exists()]
    if module.startswith("hpsearch."):
        return [module.split(".")[1]]
    return []


def _graph() -> dict[str, dict[str, int]]:
    return {name: {target: line for module, names, line in _imports(tree) for target in _internal(module, names)
                   if target != name}
            for name, tree in _modules().items()}


def test_every_module_has_a_layer():
    layered = set().union(*LAYERS)
    assert set(_modules()) == layered, f"unplaced: {set(_modules()) - layered}, gone: {layered - set(_modules())}"


def test_imports_run_one_way_without_cycles():
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    graph = _graph()
    upward = [f"{a}.py:{line} imports {b} (layer {rank[b]} above {rank[a]})"
              for a, targets in graph.items() for b, line in targets.items() if rank[b] > rank[a]]
    assert not upward, "\n".join(upward)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_trial_side_never_imports_the_driver_side():
    graph = _graph()
    bad = [f"{a} imports {b}" for a in TRIAL_SIDE for b in graph[a] if b in DRIVER_SIDE]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_modules_import_no_ray_mlflow_or_torch_at_module_level(name):
    tree = _modules()[name]
    heavy = [f"{name}.py:{line} imports {module}" for module, _, line in _imports(tree, top_level_only=True)
             if module.split(".")[0] in HEAVY]
    assert not heavy, heavy


def test_names_used_across_modules_are_public():
    private = [f"{name}.py:{line} takes {n} from {module}" for name, tree in _modules().items()
               for module, names, line in _imports(tree) if _internal(module, names) for n in names
               if n.startswith("_") and n != "__version__"]
    assert not private, private


def test_the_checks_see_what_they_claim(tmp_path):
    # The graph is built from real import statements: lazy imports inside functions count too.
    graph = _graph()
    assert "tracking" in graph["engine"]  # imported inside a function
    assert "vocab" in graph["space"] or "vocab" in graph["strategies"]


def test_importing_the_package_starts_no_heavy_import():
    # `import hpsearch` (a CLI error, `plan`, a notebook) must not pay for Ray Tune (~2 s here),
    # MLflow, torch or the report's libraries; a sweep imports them while Ray starts.
    code = ("import sys, hpsearch; print(' '.join(m for m in ('ray', 'ray.tune', 'mlflow', 'torch', 'optuna', "
            "'pandas', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
