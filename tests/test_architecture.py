"""The shape of the package, checked from its source: layers by package, imports one way, Ray and
MLflow internals only in their compat modules, heavy libraries out of the pure layers and out of
``import hpsearch``, and the README's map the same as the table below.

A unit is a sub-package (``space``, ``trial``, ``ray``...) or a top-level module (``engine``,
``cli``...). The two compat modules are units of their own, at the bottom: every layer may call
them (the trial side included), and they import nothing of hpsearch.
"""

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hpsearch"

# Layers, lowest first, with what each unit holds: the README's "How it is built" map is generated
# from this table (test_the_readme_map_is_this_table says how). A module may import (at module
# level or inside a function) only units of its own layer or lower ones; the graph of modules must
# still be acyclic.
LAYERS = [
    {"vocab": "the words every module shares: statuses, stop reasons, choices, MLflow tag names, small checks",
     "text": "values shown to people: numbers, durations, an error's first line; secrets masked",
     "environment": "the environment variables hpsearch reads, checked like options; default storage",
     "runtime_env": "Ray runtime environments: read from a file, local paths resolved, shape checked",
     "budget": "what --budget means: a wall-clock, epochs or worker-hours, parsed and counted",
     "storage": "where results live: a local folder or a bucket URI, opened through pyarrow's filesystems as Ray's are",
     "ray.compat": "every Ray internal hpsearch relies on, one named function each (canary tests)",
     "tracking.compat": "every MLflow internal hpsearch relies on, one named function each (canary tests)"},
    {"settings": "SweepSettings and Resources: every option of a sweep, validated once"},
    {"space": "what to tune: parameters, Space, search-space modules (pure)"},
    {"search": "strategies' points and Optuna distributions, schedulers' rung and bracket arithmetic (pure)"},
    {"trial": "what runs in a trial's actor and DDP workers: report, ddp, data, the reference trainable, "
              "TrialSpec, the entry point and replays, worker groups"},
    {"record": "PreparedSweep and SweepRecord: a checked sweep as plain data, and its record on disk",
     "results": "SweepResult and TrialRecord: a Ray trial as a row of the trials table",
     "winner": "the best trial's model, rebuilt from its checkpoint",
     "progress": "the live progress bar",
     "console": "what the command prints of a result: the trials table, the best trial, where MLflow holds it"},
    {"tracking": "MLflow from the driver: the store, the one writer, parent and child runs, reconcile, "
                 "the sweep's end, report tables and plots"},
    {"ray": "everything that talks to Ray: cluster checks, the Tune run, searchers, schedulers and their "
            "saved state, callbacks, stopper, checkpoints, the driver through ray://"},
    {"simulate": "recorded curves replayed through Ray's own schedulers on a virtual clock; what plan and "
                 "simulate print"},
    {"engine": "the driver: prepare, run, resume a sweep; the public sweep() and resume_sweep()"},
    {"nightly": "scheduled tuning: config, ledger, verdict, one start of hpsearch nightly"},
    {"cli": "the hpsearch command"},
    {"__init__": "the public API",
     "__main__": "python -m hpsearch"},
]
UNITS = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}
TRIAL_SIDE = {"trial"}
DRIVER_SIDE = {"record", "results", "winner", "progress", "console", "tracking", "ray", "simulate", "engine", "nightly", "cli"}
PURE = {"vocab", "text", "budget", "environment", "runtime_env", "storage", "ray.compat", "tracking.compat", "settings", "space", "search"}
HEAVY = ("ray", "mlflow", "torch", "optuna", "matplotlib", "sklearn", "mnist1d", "sqlalchemy", "pandas",
         "requests", "git", "tomllib", "tomli", "pyarrow", "grpc", "fsspec")  # tomllib: only on the 3.11+ branch of a version check
COMPAT = {"ray.compat": "ray", "tracking.compat": "mlflow"}


def _name(path: Path) -> str:
    """hpsearch/ray/cluster.py -> ray.cluster; hpsearch/space/__init__.py -> space; __init__ for the top."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def _unit(module: str) -> str:
    """The unit of a module: the longest unit name it is, or lies under."""
    for candidate in sorted(UNITS, key=len, reverse=True):
        if module == candidate or module.startswith(candidate + "."):
            return candidate
    raise AssertionError(f"hpsearch.{module} has no layer in LAYERS")


@functools.cache  # every check reads the same source: parse it once (the trees are only read)
def _modules() -> dict[str, ast.Module]:
    return {_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.Module, top_level_only: bool = False):
    """(imported module, names, node) for every absolute import, at module level or anywhere."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node


def _internal(module: str, names: list[str], known: set[str]) -> list[str]:
    """The hpsearch modules an import statement reaches (``from hpsearch.ray import compat`` reaches
    ray.compat, not the ray package's own code only)."""
    if module == "hpsearch":  # runs the package's __init__ (which imports the engine) first
        return ["__init__"] + [n for n in names if n in known]
    if not module.startswith("hpsearch."):
        return []
    base = module[len("hpsearch."):]
    subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
    return subs or [base]


@functools.cache
def _graph() -> dict[str, dict[str, int]]:
    trees = _modules()
    known = set(trees)
    return {name: {target: node.lineno for module, names, node in _imports(tree)
                   for target in _internal(module, names, known) if target != name}
            for name, tree in trees.items()}


def test_every_module_has_a_layer_and_every_unit_exists():
    for module in _modules():
        _unit(module)
    present = {_unit(m) for m in _modules()}
    assert set(UNITS) == present, f"units without a module: {set(UNITS) - present}"


def test_imports_run_one_way_without_cycles():
    graph = _graph()
    upward = [f"hpsearch/{a.replace('.', '/')}.py:{line} imports {b} (layer {UNITS[_unit(b)]} above {UNITS[_unit(a)]})"
              for a, targets in graph.items() for b, line in targets.items() if UNITS[_unit(b)] > UNITS[_unit(a)]]
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
    bad = [f"{a} imports {b}" for a in graph if _unit(a) in TRIAL_SIDE for b in graph[a] if _unit(b) in DRIVER_SIDE]
    assert not bad, bad


@pytest.mark.parametrize("unit", sorted(PURE))
def test_pure_units_import_no_heavy_library_at_module_level(unit):
    heavy = [f"{name}:{node.lineno} imports {module}" for name, tree in _modules().items() if _unit(name) == unit
             for module, _, node in _imports(tree, top_level_only=True) if module.split(".")[0] in HEAVY]
    assert not heavy, heavy


def test_names_used_across_modules_are_public():
    trees = _modules()
    private = [f"{name}:{node.lineno} takes {n} from {module}" for name, tree in trees.items()
               for module, names, node in _imports(tree) if _internal(module, names, set(trees)) for n in names
               if n.startswith("_") and n != "__version__"]
    assert not private, private


def _foreign_private_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """Private names of other libraries: imports from a ``_`` module or of a ``_`` name, and
    ``obj._attr`` on anything but ``self``, ``cls`` and ``other`` (an instance of the same class)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            names = [] if isinstance(node, ast.Import) else [a.name for a in node.names]
            for module in modules:
                if module.startswith("hpsearch"):
                    continue
                if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")) or any(
                        n.startswith("_") and not n.startswith("__") for n in names):
                    out.append((node.lineno, f"import of {module} {names}"))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls", "other"):
                continue
            out.append((node.lineno, f"{ast.unparse(node)}"))
    return out


def test_foreign_internals_are_used_only_in_the_compat_modules():
    found = [f"hpsearch/{name.replace('.', '/')}.py:{line}: {what}" for name, tree in _modules().items()
             if name not in COMPAT for line, what in _foreign_private_uses(tree)]
    assert not found, "use hpsearch.ray.compat / hpsearch.tracking.compat:\n" + "\n".join(found)


def test_the_private_name_check_sees_what_it_claims():
    tree = ast.parse("import ray\nfrom ray._private.state import actors\nx = tuner._local_tuner\nself._mine = 1\n"
                     "from ray.tune.trainable.trainable_fn_utils import _in_tune_session\n")
    assert sorted(line for line, _ in _foreign_private_uses(tree)) == [2, 3, 5]
    compat = _modules()["ray.compat"]
    assert len(_foreign_private_uses(compat)) >= 10  # the compat module is where they are


def _heavy_module_names() -> set[str]:
    """hpsearch modules whose import loads a heavy library: one in HEAVY at module level, or a module
    of ours that does (followed through module-level imports; a package's __init__ runs first)."""
    trees = _modules()
    known = set(trees)
    direct: dict[str, set[str]] = {}
    heavy: set[str] = set()
    for name, tree in trees.items():
        direct[name] = set()
        for module, names, _ in _imports(tree, top_level_only=True):
            if module.split(".")[0] in HEAVY:
                heavy.add(name)
            for target in _internal(module, names, known):
                parts = target.split(".")
                direct[name] |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    changed = True
    while changed:
        changed = False
        for name, targets in direct.items():
            if name not in heavy and targets & heavy:
                heavy.add(name)
                changed = True
    return heavy


def test_imports_inside_functions_are_heavy_ones_and_say_why():
    # A module's dependencies show at its top; an import stays inside a function only when it
    # loads something heavy (a library in HEAVY, or a module of ours that imports one), with a
    # one-line reason on it (or on the first import of its block).
    heavy_ours = _heavy_module_names()
    trees = _modules()
    bad = []
    for name, tree in trees.items():
        path = PACKAGE / (name.replace(".", "/") + ("/__init__.py" if (PACKAGE / name.replace(".", "/")).is_dir() else ".py"))
        lines = path.read_text().splitlines()
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for fn in functions:
            previous = None
            for stmt in ast.walk(fn):
                if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    continue
                module = stmt.names[0].name if isinstance(stmt, ast.Import) else (stmt.module or "")
                names = [] if isinstance(stmt, ast.Import) else [a.name for a in stmt.names]
                ours = _internal(module, names, set(trees)) if module.startswith("hpsearch") else []
                heavy = module.split(".")[0] in HEAVY or any(t in heavy_ours for t in ours)
                where = f"{path.relative_to(ROOT)}:{stmt.lineno}"
                if not heavy:
                    bad.append(f"{where}: {module} is cheap to import: import it at the top")
                    continue
                block = previous is not None and previous.end_lineno is not None and \
                    all(not lines[i].strip() or lines[i].lstrip().startswith(("import ", "from "))
                        for i in range(previous.end_lineno, stmt.lineno - 1))
                said = "#" in lines[stmt.lineno - 1] or lines[stmt.lineno - 2].strip().startswith("#")
                if not said and not block:
                    bad.append(f"{where}: {module} imported in a function without a one-line reason")
                previous = stmt
    assert not bad, "\n".join(bad)


def test_the_checks_see_what_they_claim():
    graph = _graph()
    assert "ray.tuner" in graph["engine"]  # imported inside a function
    assert "ray.compat" in graph["trial.session"]  # from hpsearch.ray import compat reaches the module
    assert _unit("ray.compat") == "ray.compat" and _unit("ray.tuner") == "ray" and _unit("__init__") == "__init__"


def test_every_package_is_in_the_wheel():
    # pyproject.toml lists the packages (the example spaces are mapped in, so they cannot be
    # found): a new sub-package left out of the list would be missing from `pip install .`.
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"hpsearch"} | {"hpsearch." + p.parent.relative_to(PACKAGE).as_posix().replace("/", ".")
                              for p in PACKAGE.glob("*/**/__init__.py")}
    assert listed == on_disk | {"hpsearch.spaces"}


def test_importing_the_package_starts_no_heavy_import():
    # `import hpsearch` (a CLI error, `plan`, a notebook) must not pay for Ray Tune (~2 s here),
    # MLflow, torch or the report's libraries; a sweep imports them while Ray starts.
    code = ("import sys, hpsearch; print(' '.join(m for m in ('ray', 'ray.tune', 'mlflow', 'torch', 'optuna', "
            "'pandas', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def readme_map() -> str:
    """The README's module map, from LAYERS: each unit with what it holds, top layer first."""
    rows = ["| layer | unit | holds |", "|---|---|---|"]
    for rank, layer in reversed(list(enumerate(LAYERS))):
        for unit, holds in layer.items():
            where = "hpsearch/__init__.py" if unit == "__init__" else (
                f"hpsearch/{unit.replace('.', '/')}/" if (PACKAGE / unit.replace(".", "/")).is_dir()
                else f"hpsearch/{unit.replace('.', '/')}.py")
            rows.append(f"| {rank} | `{where}` | {holds} |")
    return "\n".join(rows)


def test_the_readme_map_is_this_table():
    # README.md holds the map between two markers; regenerate it with:
    #   python -c "import sys; sys.path.insert(0, 'tests'); import test_architecture as t; print(t.readme_map())"
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- module map: generated from tests/test_architecture.py -->\n(.*?)\n<!-- end of module map -->",
                      text, re.S)
    assert found, "README.md lacks the module map markers"
    assert found.group(1).strip() == readme_map(), "README.md's module map differs from LAYERS: regenerate it"


def test_no_unused_or_undefined_names_and_imports_sorted():
    # Pyflakes and isort through ruff (configured in pyproject.toml): what moving code between
    # modules breaks without any test noticing.
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "hpsearch", "tests", "scripts", "spaces"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
