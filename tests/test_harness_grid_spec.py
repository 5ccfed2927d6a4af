"""Grid specs: the shipped grids validate and expand; malformed grids exit 2, name file+key, write nothing."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.grid_spec import GridError, load_grid

GRIDS = Path(__file__).resolve().parent.parent / "grids"

GOOD = """\
name: tiny
dataset: digits
n_train: 200
n_test: 100
backend: torch
grid:
  model: [qnn-angle-l2]
  forget: ["class:4"]
  method: [none, ga]
  train_shots: [exact]
  unlearn_shots: [exact]
  eval_shots: [exact, 16]
  seed: [0]
params:
  ga: {max_epochs: 2}
"""

# (name, text replacing part of GOOD or a whole file, expected key in the message, expected problem words)
MALFORMED = [
    ("unknown_top_key", GOOD + "colour: blue\n", "colour", "unknown key"),
    ("unknown_axis", GOOD.replace("  seed: [0]", "  seed: [0]\n  temperature: [1]"), "grid.temperature",
     "unknown key"),
    ("empty_axis", GOOD.replace("method: [none, ga]", "method: []"), "grid.method", "empty"),
    ("wrong_type_scalar", GOOD.replace("n_train: 200", "n_train: many"), "n_train", "integer"),
    ("wrong_type_axis", GOOD.replace("model: [qnn-angle-l2]", "model: qnn-angle-l2"), "grid.model", "list"),
    ("bad_shots", GOOD.replace("eval_shots: [exact, 16]", "eval_shots: [exact, lots]"), "grid.eval_shots[1]",
     "'exact' or a positive integer"),
    ("zero_shots", GOOD.replace("eval_shots: [exact, 16]", "eval_shots: [0]"), "grid.eval_shots[0]",
     "positive integer"),
    ("bool_seed", GOOD.replace("seed: [0]", "seed: [yes]"), "grid.seed[0]", "integer"),
    ("unknown_model", GOOD.replace("model: [qnn-angle-l2]", "model: [qnn-l99]"), "grid.model[0]",
     "unknown model"),
    ("unknown_method", GOOD.replace("method: [none, ga]", "method: [none, forgetify]"), "grid.method[1]",
     "unknown method"),
    ("unknown_backend", GOOD.replace("backend: torch", "backend: quantum-magic"), "backend", "unknown backend"),
    ("bad_forget_kind", GOOD.replace('forget: ["class:4"]', 'forget: ["digit:4"]'), "grid.forget[0]",
     "bad forget spec"),
    ("forget_class_range", GOOD.replace('forget: ["class:4"]', 'forget: ["class:12"]'), "grid.forget[0]",
     "class must be in"),
    ("forget_too_many", GOOD.replace('forget: ["class:4"]', 'forget: ["random:500"]'), "grid.forget[0]",
     "below n_train"),
    ("bad_params_key", GOOD.replace("ga: {max_epochs: 2}", "ga: {lrr: 2}"), "params.ga", "unknown key 'lrr'"),
    ("bad_params_type", GOOD.replace("ga: {max_epochs: 2}", "ga: {lr: fast}"), "params.ga.lr", "expected float"),
    ("bad_params_section", GOOD.replace("ga: {max_epochs: 2}", "gaa: {lr: 0.1}"), "params",
     "unknown params section"),
    # a rule checked per cell, not per (model, method): named by its params key like the others, not "grid"
    ("odd_ulira_k", GOOD.replace("ga: {max_epochs: 2}", "ulira: {k: 3}"), "params.ulira.k", "even number"),
    ("missing_name", GOOD.replace("name: tiny\n", ""), "name", "required"),
    ("bad_name", GOOD.replace("name: tiny", "name: Tiny Grid"), "name", "must match"),
    ("unknown_dataset", GOOD.replace("dataset: digits", "dataset: cifar"), "dataset", "unknown dataset"),
    ("too_many_samples", GOOD.replace("n_train: 200", "n_train: 1790"), "n_train", "exceeds"),
    ("duplicate_value", GOOD.replace("seed: [0]", "seed: [0, 1, 0]"), "grid.seed[2]", "duplicate"),
    ("backend_twice", GOOD.replace("  seed: [0]", "  seed: [0]\n  backend: [torch, aer]"), "grid.backend",
     "both"),
    ("exact_on_sampler", GOOD.replace("backend: torch", "backend: aer"), "grid.eval_shots", "exact"),
    ("not_yaml", "name: [unclosed\n", "grid file", "not valid YAML"),
    ("misspelt_top_key", GOOD.replace("n_train: 200", "n_trian: 200"), "n_trian", "did you mean 'n_train'"),
    ("not_mapping", "- just\n- a list\n", "(top level)", "mapping"),
]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "grid.yaml"
    p.write_text(text)
    return p


def test_good_grid_expands(tmp_path: Path) -> None:
    spec = load_grid(_write(tmp_path, GOOD))
    assert spec.n_cells == 4
    cells = spec.cells()
    assert {(c.method, c.eval_shots) for c in cells} == {("none", None), ("none", 16), ("ga", None), ("ga", 16)}
    assert all(c.dataset == "digits" and c.n_train == 200 and c.params_dict() == {"ga": {"max_epochs": 2}}
               for c in cells)


def test_backend_as_axis(tmp_path: Path) -> None:
    text = GOOD.replace("backend: torch\n", "").replace("eval_shots: [exact, 16]", "eval_shots: [16]")
    text = text.replace("  seed: [0]", "  seed: [0]\n  backend: [torch, aer]")
    spec = load_grid(_write(tmp_path, text))
    assert spec.axes["backend"] == ("torch", "aer") and spec.n_cells == 4


@pytest.mark.parametrize("name", ["smoke", "paper", "shots"])
def test_shipped_grids(name: str) -> None:
    spec = load_grid(GRIDS / f"{name}.yaml")
    expected = {"smoke": 18, "paper": 2 * 3 * 7 * 5 * 5, "shots": 5 * 2 * 4 * 3 * 3}[name]
    assert spec.name == name and spec.n_cells == expected


def test_shipped_grid_contents() -> None:
    smoke = load_grid(GRIDS / "smoke.yaml")
    assert smoke.axes["method"] == ("none", "retrain", "finetune", "ga", "ssd", "rga")
    assert smoke.axes["eval_shots"] == (None, 1024, 16)
    paper = load_grid(GRIDS / "paper.yaml")
    assert paper.axes["train_shots"] == (None,) and paper.axes["unlearn_shots"] == (None,)
    assert paper.axes["forget"] == ("class:4", "random:50", "random:200")
    shots = load_grid(GRIDS / "shots.yaml")
    assert "retrain" not in shots.axes["method"] and shots.axes["unlearn_shots"] == (None, 8192, 1024, 128)


@pytest.mark.parametrize("name,text,key,problem", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_grid_error_names_file_key_problem(tmp_path: Path, name: str, text: str, key: str,
                                                     problem: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(GridError) as ei:
        load_grid(path)
    e = ei.value
    assert e.path == str(path) and e.key == key, str(e)
    assert problem.lower() in e.problem.lower(), str(e)
    assert str(e).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize("name,text,key,problem", MALFORMED[:12], ids=[m[0] for m in MALFORMED[:12]])
def test_malformed_grid_cli_exit_2_writes_nothing(tmp_path: Path, name: str, text: str, key: str,
                                                  problem: str) -> None:
    path = _write(tmp_path, text)
    results = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", str(path), "--results", str(results)])
    assert res.exit_code == 2, res.output
    assert str(path) in res.output and key in res.output
    assert not results.exists()
    assert sorted(os.listdir(tmp_path)) == ["grid.yaml"]


def test_missing_file_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml"), "--results", str(tmp_path / "r")])
    assert res.exit_code == 2 and "nope.yaml" in res.output and "cannot read" in res.output
    assert not (tmp_path / "r").exists()


def test_dry_run_prints_counts_and_writes_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", str(GRIDS / "smoke.yaml"), "--results", str(results), "--dry-run"])
    assert res.exit_code == 0, res.output
    out = textwrap.dedent(res.output)
    assert "smoke: 18 cells, 0 already done" in out
    # one original model, four reference models, six unlearned models, one shared attack stage per eval-shot
    # count (the held-out attack is fit in evaluate, on the evaluated model), one evaluation per cell
    for kind, n in (("train", 1), ("reference", 4), ("unlearn", 6), ("attack", 3), ("evaluate", 18)):
        assert any(line.split("│")[1:3] == [f" {kind:<9} ", f" {n:>6} "] for line in out.splitlines()
                   if line.startswith("│")), out
    assert "circuit executions" in out and "CPU-hours" in out
    assert not results.exists()


def test_n_eval_reaches_cells_and_keeps_other_ids(tmp_path):
    from harness.grid_spec import load_grid
    from harness.identity import cell_id

    base = "name: g\ndataset: digits\nn_train: 200\nn_test: 100\ngrid:\n  model: [hqnn-l1]\n  method: [none]\n  forget: ['class:4']\n"
    (tmp_path / "a.yaml").write_text(base)
    (tmp_path / "b.yaml").write_text(base + "n_eval: 20\n")
    a, b = load_grid(tmp_path / "a.yaml").cells()[0], load_grid(tmp_path / "b.yaml").cells()[0]
    assert a.n_eval is None and b.n_eval == 20
    assert cell_id("g", a) != cell_id("g", b)
    from harness.identity import config_dict

    assert "n_eval" not in config_dict(a)  # unset optional fields leave existing cell ids unchanged
    (tmp_path / "c.yaml").write_text(base + "n_eval: 3\n")
    with pytest.raises(Exception, match="n_eval"):
        load_grid(tmp_path / "c.yaml")


def test_cost_model_orders_unlearning_methods_as_the_paper_grid_measured() -> None:
    """The estimate ranks stages for the scheduler and the dry run. Measured on grids/paper.yaml (means over
    3 seeds and 3 forget sets): hqnn-l1 ssd 0.7 s < ga 3.4 s < rga 6.0 s < graddiff 19 s; qnn-l10 ga and
    graddiff 0.05-0.1 s < ssd 0.15 s < rga 0.7 s < retrain 50 s. GA's old constant (3 epochs) ranked hqnn-l1's
    GA below SSD, and one GradDiff step count for both families put qnn-l10's at 13 s."""
    from harness.estimate import stage_estimate
    from workloads.stages import CellConfig

    def sec(model: str, method: str) -> float:
        return stage_estimate("unlearn", CellConfig(model, "class:4", method, None, None, None, 0)).seconds

    assert sec("hqnn-l1", "ssd") < sec("hqnn-l1", "ga") < sec("hqnn-l1", "rga") < sec("hqnn-l1", "graddiff")
    assert max(sec("qnn-l10", "ga"), sec("qnn-l10", "graddiff")) < sec("qnn-l10", "ssd") < sec("qnn-l10", "rga") \
        < sec("qnn-l10", "retrain")
