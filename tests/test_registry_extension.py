"""A method, an attack and a backend are each one module plus one registry line: with nothing else edited, a
grid can name them, the dry run prices them, a run stores their columns and the report shows them.

The test copies the `workloads` package, adds the two modules and their registry lines to the copy, and runs
`qmu` with the copy first on PYTHONPATH (Ray's local workers inherit it), so the checkout is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import workloads

ROOT = Path(__file__).resolve().parent.parent

METHOD = '''"""`noise_head`: Gaussian noise on the classical head (a method added by a test)."""

import torch

from ..models.training import Cost
from ..params import Param
from .base import Outcome, Workload

NAME = "noise_head"
LABEL = "noisy head"
ORDER = 50
SUMMARY = "Gaussian noise on the head's weights"
TOUCHES = ("head",)
PARAMS = {"sigma": Param(0.5, 0.0, 10.0)}


def passes(w: Workload) -> float:
    return 0.0


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(params["sigma"] * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return Outcome(model, Cost(0.0, 0, 0))
'''

ATTACK = '''"""`confidence`: the top-class probability as membership score (an attack added by a test)."""

import numpy as np

from .. import metrics
from .base import roc_report_columns

NAME = "confidence"
LABEL = "confidence attack"
ORDER = 9
COLUMNS = roc_report_columns("conf", "confidence-attack")
ROC_PREFIX = "conf"
SCORE_COLUMN = "conf_score"
NEEDS_REFERENCES = False
PER_FORGET_SET = False


def queries(know):
    return {}


reference_queries = target_rows = queries


def fit(view):
    return {}, {}


def score(state, target, params):
    return {role: target.logits[role].softmax(1).max(1).values.numpy() for role in target.rows}


def columns(members, nonmembers, params, state):
    return metrics.roc_columns("conf", members, nonmembers)
'''

BACKEND = '''"""`aer-mps`: qiskit-aer's matrix-product-state sampler (a backend added by a test)."""

from .qiskit_run import backend_logits as logits  # noqa: F401

NAME = "aer-mps"
LABEL = "qiskit-aer, matrix product state"
SUMMARY = "qiskit-aer's MPS simulator; shots only"
NAMED = False
EXACT = False
QISKIT = True
DEVICE = False
HARDWARE = False


def validate(device):
    pass


def qiskit_backend(device):
    from qiskit_aer import AerSimulator

    return AerSimulator(method="matrix_product_state")


def sampler(backend, shots, seed, t, mode=None):
    from qiskit_aer.primitives import SamplerV2

    return SamplerV2(default_shots=shots, seed=seed, options={"backend_options": {"method": "matrix_product_state"}})


def simulation(backend, t, shots):
    return "aer matrix product state"
'''

GRID = """name: ext
dataset: digits
n_train: 200
n_test: 100
grid:
  model: [qnn-l5]
  forget: ["class:3"]
  method: [noise_head]
  train_shots: [exact]
  unlearn_shots: [exact]
  eval_shots: [exact]
  seed: [0]
params:
  qnn-l5: {epochs: 2}
  attack: {epochs: 20}
  noise_head: {sigma: 0.2}
"""


def _add_line(path: Path, anchor: str, line: str) -> None:
    text = path.read_text()
    assert anchor in text, f"{path}: registry anchor {anchor!r} moved; update this test"
    path.write_text(text.replace(anchor, line, 1))


@pytest.fixture
def extended(tmp_path: Path) -> Path:
    """A copy of `workloads` with the new method and attack, each one file plus one registry line."""
    pkg = tmp_path / "site" / "workloads"
    shutil.copytree(Path(workloads.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "unlearning" / "noise_head.py").write_text(METHOD)
    (pkg / "attacks" / "confidence.py").write_text(ATTACK)
    _add_line(pkg / "unlearning" / "__init__.py", "from . import (cf_k,", "from . import noise_head\nfrom . import (cf_k,")
    _add_line(pkg / "unlearning" / "__init__.py", "cf_k, eu_k)", "cf_k, eu_k, noise_head)")
    _add_line(pkg / "attacks" / "__init__.py", "from . import heldout,", "from . import confidence\nfrom . import heldout,")
    _add_line(pkg / "attacks" / "__init__.py", "rmia, lira, ulira)", "rmia, lira, ulira, confidence)")
    (pkg / "quantum" / "backends" / "aer_mps.py").write_text(BACKEND)
    _add_line(pkg / "quantum" / "backends" / "__init__.py", "from . import aer,", "from . import aer_mps\nfrom . import aer,")
    _add_line(pkg / "quantum" / "backends" / "__init__.py", "aer_noise, fake, ibm)", "aer_noise, fake, ibm, aer_mps)")
    return pkg.parent


def _qmu(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    paths = [str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]  # the test run's offline guard stays
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "NO_COLOR": "1"}
    code = "import sys; from harness.cli import main; sys.argv = ['qmu', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.timeout(600)
def test_new_method_and_attack_need_no_other_edit(extended: Path, tmp_path: Path) -> None:
    grid = tmp_path / "ext.yaml"
    grid.write_text(GRID)
    root = tmp_path / "results"
    dry = _qmu(extended, tmp_path, "run", str(grid), "--results", str(root), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "unlearn" in dry.stdout and not root.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRID.replace("sigma: 0.2", "sigma: -1"))
    out = _qmu(extended, tmp_path, "run", str(bad), "--results", str(root))
    assert out.returncode == 2 and "params.noise_head.sigma" in out.stderr and "[0, 10]" in out.stderr, out.stderr

    run = _qmu(extended, tmp_path, "run", str(grid), "--results", str(root), "--workers", "1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cells = duckdb.sql(f"SELECT * FROM read_parquet('{root}/cells/**/*.parquet', union_by_name=true)").df()
    assert list(cells["method"]) == ["noise_head"] and list(cells["status"]) == ["ok"]
    assert 0.0 <= float(cells["conf_auc"].iloc[0]) <= 1.0  # the new attack's column, computed
    manifest = json.loads((root / "manifests" / "grid=ext.json").read_text())
    assert manifest["catalog"]["attacks"]["confidence"]["label"] == "confidence attack"

    report = _qmu(extended, tmp_path, "report", "--results", str(root), "--grid", "ext", "--out", str(tmp_path / "rep"))
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "noise_head" in md and "confidence-attack AUC" in md


@pytest.mark.slow  # kept out of the default suite to hold it near 10 min on 2 cores (2026-12-02 durations)
@pytest.mark.timeout(600)
def test_new_backend_needs_no_other_edit(extended: Path, tmp_path: Path) -> None:
    grid = tmp_path / "mps.yaml"
    grid.write_text(GRID.replace("name: ext", "name: mps").replace("[noise_head]", "[none]")
                    .replace("eval_shots: [exact]", "eval_shots: [64]") + "backend: aer-mps\n")
    root = tmp_path / "results"
    bad = tmp_path / "bad.yaml"
    bad.write_text(grid.read_text().replace("backend: aer-mps", "backend: aer-mps:x"))
    out = _qmu(extended, tmp_path, "run", str(bad), "--results", str(root))
    assert out.returncode == 2 and "aer-mps" in out.stderr and "choose torch, aer, aer-noise" in out.stderr, out.stderr
    est = _qmu(extended, tmp_path, "hw", "estimate", str(grid), "--results", str(root))
    assert est.returncode == 0 and "aer-mps" in est.stdout, est.stdout + est.stderr
    run = _qmu(extended, tmp_path, "run", str(grid), "--results", str(root), "--workers", "1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cells = duckdb.sql(f"SELECT * FROM read_parquet('{root}/cells/**/*.parquet', union_by_name=true)").df()
    assert list(cells["backend"]) == ["aer-mps"] and list(cells["status"]) == ["ok"]
    assert int(cells["eval_circuits"].iloc[0]) > 0 and 0.0 <= float(cells["acc_test_retain"].iloc[0]) <= 1.0
