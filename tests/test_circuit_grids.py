"""Circuit models in grids: the example grids run end to end (torch and aer), a Ray run builds the model on its
workers and records the circuit's provenance, `qmu hw estimate` prices an example on a fake device, stage keys
follow the circuit, and mistakes in a `models:` entry exit 2 through `qmu run` with one line, writing nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.grid_spec import load_grid
from harness.identity import stage_keys

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
B = "tests.support.circuit_builders"


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: torch's intra-op threads cost more than they save on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _scaled(example: str, tmp: Path, **top) -> Path:
    """The example grid, scaled down for the test suite (fewer samples and epochs), in `tmp`."""
    doc = yaml.safe_load((EXAMPLES / example).read_text())
    doc.update(n_train=60, n_test=40, **top)
    model = doc["grid"]["model"][0]
    doc["params"] = {**doc.get("params", {}), model: {"epochs": 2},
                     "attack": {"n_members": 30, "n_nonmembers": 30, "epochs": 200, "n_seeds": 2}}
    path = tmp / example
    path.write_text(yaml.safe_dump(doc))
    return path


def _run_in_process(grid: Path, store_at: Path | None = None) -> list[dict]:
    """Every cell of the grid through the workload's stages in this process, the original model and the
    attack shared as the runner shares them; with `store_at`, the cells are also written to a store there."""
    from harness.store import ResultStore

    from workloads import stages as wc

    cells = load_grid(grid).cells()
    train = wc.train_stage(cells[0])
    attack = wc.attack_stage(cells[0].stage_config("attack"), train.state)
    rows = []
    for cfg in cells:
        un = wc.unlearn_stage(cfg, train.state)
        row, examples = wc.evaluate_stage(cfg, train.state, un.state, attack.state,
                                          costs={"train": train.cost, "unlearn": un.cost, "attack": attack.cost})
        assert len(examples) > 0
        rows.append({**row, "method": cfg.method})
        if store_at is not None:
            axes = {"model": cfg.model, "forget": cfg.forget, "method": cfg.method, "train_shots": cfg.train_shots,
                    "unlearn_shots": cfg.unlearn_shots, "eval_shots": cfg.eval_shots, "seed": cfg.seed,
                    "backend": cfg.backend}
            ResultStore(str(store_at)).write_cell("ex", f"ex-{cfg.method}", {**axes, **row, "status": "ok",
                                                                            "code_version": "test", "host": "h"}, examples)
    return rows


@pytest.mark.parametrize("example", ["hardware_efficient.yaml", "reuploading.yaml",
                                     pytest.param("hardware_efficient_aer.yaml", marks=pytest.mark.slow),
                                     pytest.param("reuploading_aer.yaml", marks=pytest.mark.slow)])
def test_example_grid_runs_end_to_end(example: str, tmp_path: Path) -> None:
    """Train, unlearn with none, ga and ssd, attack and evaluate, on torch (exact) or aer (1024 shots)."""
    aer = example.endswith("_aer.yaml")
    store = None if aer else tmp_path / "store"
    rows = _run_in_process(_scaled(example, tmp_path, **({"n_eval": 10} if aer else {})), store)  # aer: fewer samples
    assert [r["method"] for r in rows] == ["none", "ga", "ssd"]
    module = example.removesuffix(".yaml").removesuffix("_aer")
    from workloads.quantum.circuit_model import provenance

    expected = provenance(__import__(f"examples.{module}", fromlist=["build"]).build())
    for r in rows:
        assert {k: r[k] for k in expected} == expected
        assert 0.0 <= r["acc_test_retain"] <= 1.0 and 0.0 <= r["mia_auc"] <= 1.0
        if aer:
            assert r["transpiled_depth"] > 0 and r["shots_total"] > 0 and r["job_ids"]
    assert rows[1]["unlearn_steps"] >= 0 and not math.isnan(rows[2]["ssd_dampened_fraction"])
    if store is not None:  # the report names the model with its circuit's hash
        from reports.build import build_report

        md = build_report(str(store), str(tmp_path / "report"), grid="ex").parent.joinpath("report.md").read_text()
        label = f"{load_grid(tmp_path / example).cells()[0].model} ({expected['circuit_hash'][:8]})"
        assert "Circuit models" in md and expected["circuit_hash"] in md
        assert f"| {label} | ga |" in md, label


def test_circuit_model_on_aer_matches_the_torch_executor() -> None:
    """The fast aer check: the user's circuit as given, measured and transpiled, within shot error of exact."""
    import numpy as np

    from workloads.models import build_model, use_circuit_models
    from workloads.models.circuit import plan
    from workloads.quantum import backends as wb

    use_circuit_models({"reupload": plan("reupload", {"circuit": "examples.reuploading:build"}, ["aer"])})
    model = build_model("reupload", 0)
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * math.pi
    with torch.no_grad():
        exact = model.quantum(x).numpy()
    shots = 4096
    res = wb.run_query(wb.make_query(model, x, shots, "aer", 7))
    sigma = np.sqrt(np.clip(1 - exact**2, 1e-4, None) / shots)
    assert (np.abs(res.z - exact) / sigma).max() < 5.0, "aer deviates by more than 5 standard errors"
    assert res.cost["circuits"] == 6 and res.cost["two_qubit_gates"] >= 24
    use_circuit_models({})


@pytest.mark.timeout(600)
def test_ray_run_builds_the_circuit_on_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local) -> None:
    """`qmu run` on a circuit-model grid: Ray workers build the model from the cell configs' ref, rows carry the
    circuit's provenance, and a second run reuses every cell."""
    grid = _scaled("hardware_efficient.yaml", tmp_path)
    monkeypatch.chdir(ROOT)  # the builder is imported as examples.hardware_efficient, as the docs run it
    results = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", str(grid), "--results", str(results)], prog_name="qmu")
    assert res.exit_code == 0, res.output
    from harness.store import ResultStore

    store = ResultStore(str(results))
    df = store.read_cells().to_pandas()
    assert sorted(df["method"]) == ["ga", "none", "ssd"] and (df["status"] == "ok").all()
    assert df["circuit_qubits"].tolist() == [8] * 3 and df["circuit_two_qubit_gates"].tolist() == [21] * 3
    assert df["circuit_hash"].nunique() == 1
    again = CliRunner().invoke(app, ["run", str(grid), "--results", str(results)], prog_name="qmu")
    assert again.exit_code == 0, again.output
    assert len(store.read_cells()) == 3, "a re-run of a finished circuit-model grid duplicated rows"


def test_hw_estimate_prices_an_example_on_a_fake_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(app, ["hw", "estimate", str(EXAMPLES / "hardware_efficient_fake.yaml"),
                                   "--results", str(tmp_path / "r")], prog_name="qmu")
    assert res.exit_code == 0, res.output
    assert "fake:FakeTorino" in res.output and "hea" in res.output and "estimated" in res.output


def test_stage_keys_follow_the_circuit_not_the_builder(tmp_path: Path) -> None:
    """The same circuit from a QPY file keeps the stage keys; another circuit under the same name changes them."""
    from qiskit import qpy

    from examples import hardware_efficient
    from workloads import code_version
    from workloads import stages as wc

    with open(tmp_path / "hea.qpy", "wb") as f:
        qpy.dump(hardware_efficient.build(), f)
    keys = {}
    for label, builder in (("module", "examples.hardware_efficient:build"), ("file", str(tmp_path / "hea.qpy")),
                           ("other", "examples.reuploading:build")):
        doc = yaml.safe_load((EXAMPLES / "hardware_efficient.yaml").read_text())
        doc["models"]["hea"]["circuit"] = builder
        (tmp_path / f"{label}.yaml").write_text(yaml.safe_dump(doc))
        cfg = load_grid(tmp_path / f"{label}.yaml").cells()[1]
        keys[label] = stage_keys(wc.stage_specs(cfg), code_version())
    assert keys["module"] == keys["file"]
    assert keys["module"]["train"] != keys["other"]["train"]
    assert keys["module"]["evaluate"] != keys["other"]["evaluate"]


def test_every_stage_config_carries_the_circuit(tmp_path: Path) -> None:
    """A worker gets only a stage's own config: references, shadows and replicas carry the ref as cells do."""
    doc = yaml.safe_load((EXAMPLES / "hardware_efficient.yaml").read_text())
    doc["params"].update(references={"k": 2}, ulira={"k": 2})
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_grid(tmp_path / "g.yaml").cells()[1]
    from workloads import stages as wc

    names = wc.stage_specs(cfg)
    assert {"reference.1", "shadow", "replica.0"} <= set(names)
    assert all(cfg.stage_config(n).circuit == cfg.circuit for n in names)
    assert all(wc.stage_specs(cfg)[n]["circuit"]["hash"] == json.loads(cfg.circuit)["identity"]["hash"]
               for n in ("train", "reference.0", "shadow", "replica.0"))


def test_a_worker_with_another_builder_is_refused() -> None:
    from workloads.models.circuit import built, plan
    from workloads.quantum.compiled import CircuitError

    ref = json.loads(plan("hea", {"circuit": "examples.hardware_efficient:build"}, ["torch"]))
    ref["identity"]["hash"] = "0" * 16  # as planned on a host whose builder differs
    with pytest.raises(CircuitError, match=r"models\.hea\.circuit: this process builds circuit"):
        built("hea", json.dumps(ref))


GOOD = """\
name: g
dataset: digits
n_train: 100
n_test: 50
models:
  bad: ENTRY
grid:
  model: [bad]
  forget: ["class:4"]
  method: [none]
  eval_shots: [EVAL]
"""
HEA = "examples.hardware_efficient:build"
# (id, entry, backend, text the one error line must contain)
MISTAKES = [
    ("missing module", {"circuit": "no_such_pkg.ansatz:build"}, None, "models.bad.circuit: cannot import module"),
    ("missing function", {"circuit": "examples.hardware_efficient:nope"}, None, "has no function 'nope'"),
    ("wrong input vector", {"circuit": HEA, "inputs": "theta"}, None,
     "models.bad.inputs: inputs: the circuit has no parameter vector named 'theta'"),
    ("wrong weight vector", {"circuit": HEA, "weights": "phi"}, None, "models.bad.weights:"),
    ("measurement inside", {"circuit": f"{B}:measured"}, None, "measurements are added by the executor"),
    ("mid-circuit reset", {"circuit": f"{B}:reset"}, None, "mid-circuit resets are not supported"),
    ("more qubits than the backend", {"circuit": HEA}, "fake:FakeManilaV2",
     "models.bad.circuit: 8 qubits, more than the 5 of backend fake:FakeManilaV2"),
    ("unsupported gate", {"circuit": f"{B}:toffoli"}, None, "(ccx on qubits 0, 1, 2): unsupported instruction"),
    ("bad encoding", {"circuit": HEA, "encoding": "basis"}, None, "models.bad.encoding: 'basis' is not one of"),
    ("bad observable", {"circuit": HEA, "observables": ["ZZ"]}, None, "models.bad.observables: observable 'ZZ'"),
    ("observable the backend cannot measure", {"circuit": HEA, "observables": ["XIIIIIII"]}, "aer",
     "models.bad.observables: 'XIIIIIII' needs a basis change"),
    ("non-linear angle", {"circuit": f"{B}:nonlinear"}, None, "is not linear in the parameters"),
    ("builder returns no circuit", {"circuit": f"{B}:not_a_circuit"}, None, "returned str, not a QuantumCircuit"),
    ("inputs of the wrong width", {"circuit": f"{B}:good"}, None, "the data gives 8 features"),
    ("unknown key", {"circuit": HEA, "colour": "red"}, None, "models.bad.colour: unknown key"),
    ("missing circuit file", {"circuit": "nope.qpy"}, None, "models.bad.circuit: file nope.qpy not found"),
    ("amplitude encoding on 4 qubits", {"circuit": f"{B}:good", "encoding": "amplitude", "inputs": None}, None,
     "models.bad.encoding: amplitude encoding needs 8 qubits"),
    ("a built-in model's name", "BUILTIN", None, "models.qnn-l5: 'qnn-l5' is a built-in model"),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_at_least_ten_mistakes() -> None:
    assert len(MISTAKES) >= 10 and len({m[0] for m in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("name,entry,backend,expect", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_model_entry_mistake_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                                   entry, backend: str | None, expect: str) -> None:
    monkeypatch.chdir(tmp_path)
    text = GOOD.replace("EVAL", "1024" if backend else "exact")
    if entry == "BUILTIN":
        text = text.replace("  bad: ENTRY", f"  qnn-l5: {json.dumps({'circuit': HEA})}").replace("[bad]", "[qnn-l5]")
    else:
        text = text.replace("ENTRY", json.dumps(entry))
    (tmp_path / "g.yaml").write_text(text + (f"backend: {backend}\n" if backend else ""))
    before = _tree(tmp_path)
    res = CliRunner().invoke(app, ["run", "g.yaml", "--results", "r"], prog_name="qmu")
    out = res.output
    assert res.exit_code == 2, f"{name}: exit {res.exit_code}\n{out}\n{res.exception!r}"
    assert "Traceback" not in out and expect in out, out
    assert out.strip().splitlines() == [ln for ln in out.splitlines() if ln.startswith("error:")], out
    assert len(out.strip().splitlines()) == 1 and "g.yaml: models." in out, out
    assert _tree(tmp_path) == before and not (tmp_path / "r").exists(), "a mistake wrote a file"
