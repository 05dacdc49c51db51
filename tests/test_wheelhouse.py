"""scripts/wheelhouse, the wheels of hpsearch and its dependencies for a machine without network: its
usage, its mistakes, and the pip commands it would run (--dry-run) for a target Python and platform,
which must ask for every dependency pyproject.toml names for that target. Nothing is downloaded."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "wheelhouse"
CUDA_INDEX = "https://download.pytorch.org/whl/cu126"


def _wheelhouse(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}  # a Python with pip, whatever python3 is here
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _expected(python: str, extras: tuple[str, ...] = ()) -> set[str]:
    """The names pyproject.toml asks for on Linux x86_64 with ``python``: build requirements,
    dependencies and the extras, where their markers hold."""
    doc = _pyproject()
    wanted = doc["build-system"]["requires"] + doc["project"]["dependencies"]
    for extra in extras:
        wanted += doc["project"]["optional-dependencies"][extra]
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}
    reqs = [Requirement(text) for text in wanted]
    return {canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate(env)}


def _commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _requirements(command: list[str]) -> set[str]:
    """The requirement names a `pip download` command asks for (its arguments that are not options)."""
    takes_value = {"--python-version", "--platform", "-d", "--index-url", "--find-links"}
    names, skip = set(), False
    for arg in command[command.index("download") + 1:]:
        if skip or arg.startswith("-"):
            skip = arg in takes_value
            continue
        names.add(canonicalize_name(re.match(r"[A-Za-z0-9._-]+", arg).group()))  # a dry run's torch==VERSION too
    return names


def test_the_script_is_executable_and_says_how_to_use_it():
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} is not executable"
    out = _wheelhouse("-h")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: scripts/wheelhouse"), out.stdout[:200]
    for option in ("--python", "--platform", "--torch-index", "--dry-run", "DEST"):
        assert option in out.stdout, f"the usage does not mention {option}"


@pytest.mark.parametrize("args, message", [
    (["--bogus", "/tmp/x"], "unknown option --bogus"),
    (["--dry-run"], "DEST (the folder for the wheels) is missing"),
    (["--dry-run", "--python", "twelve", "/tmp/x"], "--python: give a version such as 3.12, got twelve"),
    (["--dry-run", "--extra", "nope", "/tmp/x"], "no extra 'nope' in pyproject.toml (known: "),
    (["--dry-run", "/no/such/folder/wh"], "DEST's parent folder does not exist"),
])
def test_a_mistake_is_one_line_and_exit_2(args, message):
    out = _wheelhouse(*args)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize("python", ["3.10", "3.12"])
def test_a_dry_run_asks_for_every_dependency_of_the_target_and_downloads_nothing(tmp_path, python):
    dest = tmp_path / "wheels"
    out = _wheelhouse("--dry-run", "--python", python, "--platform", "manylinux_2_28_x86_64", "--extra", "team", str(dest))
    assert out.returncode == 0, out.stderr
    assert not dest.exists(), "a dry run wrote DEST"
    commands = _commands(out.stdout)
    build, download = commands[0], commands[1]
    assert build[1:] == ["-m", "pip", "wheel", "--no-deps", "-w", str(dest), str(dest / "hpsearch-src")], build
    assert download[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in download, download
    assert download[download.index("--python-version") + 1] == python
    assert download[download.index("-d") + 1] == str(dest)
    # Every dependency of hpsearch for this Python (tomli only below 3.11), nothing else.
    assert _requirements(download) == _expected(python, ("team",)), out.stdout
    # A glibc 2.28 machine takes the older manylinux wheels too, as most are tagged manylinux_2_17/2014.
    platforms = {download[i + 1] for i, a in enumerate(download) if a == "--platform"}
    assert {"manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"} <= platforms, platforms
    assert not any(p.startswith("manylinux_2_29") for p in platforms), platforms
    assert f"pip install --no-index --find-links {dest} 'hpsearch[team]'" in out.stdout, out.stdout
    assert f"cd {dest}/hpsearch-src && " in out.stdout and "scripts/gpu-check" in out.stdout, out.stdout
    assert (REPO / "scripts" / "gpu-check").is_file() and (REPO / "scripts" / "_bootstrap.sh").is_file()


def test_torch_comes_from_the_index_given_and_the_rest_keeps_that_torch(tmp_path):
    dest = tmp_path / "wheels"
    out = _wheelhouse("--dry-run", "--python", "3.12", "--torch-index", CUDA_INDEX, str(dest))
    assert out.returncode == 0, out.stderr
    downloads = [c for c in _commands(out.stdout) if "download" in c]
    assert len(downloads) == 2, out.stdout
    torch, rest = downloads
    assert torch[torch.index("--index-url") + 1] == CUDA_INDEX and _requirements(torch) == {"torch"}, torch
    torch_spec = next(r for r in _pyproject()["project"]["dependencies"] if Requirement(r).name == "torch")
    assert str(Requirement(torch_spec)) in torch, f"torch is not asked for as pyproject.toml says: {torch}"
    assert "--index-url" not in rest and rest[rest.index("--find-links") + 1] == str(dest), rest
    assert _requirements(rest) == _expected("3.12"), rest
    assert [a for a in rest if a.startswith("torch")] == ["torch==VERSION-DOWNLOADED-ABOVE"], rest
