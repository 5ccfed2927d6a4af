"""Honest floors: `pyproject.toml` states the lowest version of each dependency the code needs, and the slow test
here installs exactly those versions into a fresh virtual environment and runs the fast tests with them.

The floors live in one place, pyproject's `>=` (torch's `==`) specifiers, runtime and `test` extra alike; this
module derives the `==` pins from them. Run it with `python -m pytest -q -m slow tests/test_floors.py` (it needs
the package index: the floor versions are downloaded unless pip's cache holds them)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import Specifier
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "workloads", "reports")  # what `pip install` ships (pyproject's packages.find)


def declared(test: bool = True) -> list[Requirement]:
    """pyproject's runtime dependencies and (unless `test` is false) its `test` extra, in order."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["test"] if test else []
    return [Requirement(s) for s in (*project["dependencies"], *extra)]


def floor(req: Requirement) -> str:
    """The one version a requirement names: its `>=` floor (or its `==` pin)."""
    (spec,) = req.specifier
    assert spec.operator in (">=", "=="), f"{req}: state a floor with >= (or pin with ==)"
    return spec.version


def floor_pins() -> list[str]:
    """`name[extras]==floor` for every declared requirement: the lowest versions pyproject allows."""
    out = []
    for r in declared():
        extras = f"[{','.join(sorted(r.extras))}]" if r.extras else ""
        out.append(f"{r.name}{extras}=={floor(r)}")
    return out


def test_every_requirement_states_one_floor_in_full() -> None:
    for r in declared():
        assert len(r.specifier) == 1, f"{r}: give exactly one specifier, the floor"
        v = floor(r)
        assert v.count(".") >= 1, f"{r}: give the floor as a release (x.y or x.y.z), not a major version alone"
        assert r.marker is None, f"{r}: a floor with a marker is not installed on every machine"
    assert "torch==2.13.0" in floor_pins(), "torch stays pinned exactly (the CPU build the README installs)"


def _imported_top_levels() -> set[str]:
    """Every top-level module imported anywhere in the shipped packages (lazy imports in functions included)."""
    names: set[str] = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """A package the code imports but pyproject does not declare gets no floor (scipy was one)."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    runtime = {canonicalize_name(r.name) for r in declared(test=False)}
    missing = {}
    for mod in sorted(_imported_top_levels()):
        owners = {canonicalize_name(d) for d in dists.get(mod, [])}
        if not owners & runtime:
            missing[mod] = sorted(owners) or "not installed"
    assert not missing, f"imported by the package but not in pyproject's dependencies: {missing}"


def _run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> str:
    p = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    shown = "\n".join(line for line in out.splitlines() if not line.startswith("WARNING: Location"))
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{shown[-8000:]}"
    return out


def _clean_env(env_dir: Path) -> dict[str, str]:
    """This environment with the venv first on PATH, and without what the test session added: the offline
    guard's PYTHONPATH and switch (pip must reach the index; the inner test run installs its own guard) and
    pytest's variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "QMU_TEST_OFFLINE", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("PYTEST_")}
    env["PATH"] = os.pathsep.join((str(env_dir / "bin"), env.get("PATH", "")))
    env["VIRTUAL_ENV"] = str(env_dir)
    return env


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_the_fast_suite_passes_on_the_lowest_declared_versions(tmp_path: Path) -> None:
    env_dir = tmp_path / "floors-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = _clean_env(env_dir)
    pins = tmp_path / "floors.txt"
    pins.write_text("\n".join(floor_pins()) + "\n")

    _run([py, "-m", "pip", "install", "-q", "--only-binary=:all:", "-r", pins], env, timeout=3600)
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT], env, timeout=600)

    names = [canonicalize_name(r.name) for r in declared()]
    got = json.loads(_run([py, "-c", "import importlib.metadata as m, json, sys; "
                                     "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))", *names],
                          env, timeout=120).strip().splitlines()[-1])
    wrong = {r.name: got[canonicalize_name(r.name)] for r in declared()
             if not Specifier(f"=={floor(r)}").contains(got[canonicalize_name(r.name)], prereleases=True)}
    assert not wrong, f"installed versions differ from the floors: {wrong}"

    # imports no fast test reaches: the IBM hardware path (needs an account)
    _run([py, "-c", "from qiskit_ibm_runtime.executor_sampler import Sampler; from qiskit_ibm_runtime import Batch"],
         env, timeout=300)

    p = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=3 * 3600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"the fast tests failed on the floors ({' '.join(floor_pins())}):\n{out[-12000:]}"
