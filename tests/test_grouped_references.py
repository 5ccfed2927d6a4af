"""Reference models trained as a group (`reference_group_stage`, `train_many`) equal each trained alone
(`reference_stage`, `fit`), so the runner stores each under its own key and reuses it either way; the runner
sends the missing references of one group to one worker as one call (split over idle workers, see
tests/test_grouped_seeds.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.grid_spec import GridSpec
from harness.runner import run_grid
from harness.store import ResultStore
from workloads.stages import CellConfig, reference_config, reference_group_stage, reference_stage, stage_specs

TOLERANCE = 1e-10
BASE = CellConfig("qnn-angle-l2", "class:4", "none", None, None, None, 0, dataset="digits", n_train=200, n_test=100)


def _cfg(mode: str, k: int = 4) -> CellConfig:
    return BASE.with_params({"qnn-angle-l2": {"epochs": 2}, "references": {"k": k, "mode": mode}})


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_references_trained_as_a_group_equal_references_trained_alone(mode: str) -> None:
    rcs = [reference_config(_cfg(mode), i) for i in range(2)]
    together = reference_group_stage(rcs)
    alone = [reference_stage(rc) for rc in rcs]
    for t, a in zip(together, alone):
        assert set(t.state) == set(a.state)
        weights = [k for k in t.state if not k.startswith("members")]
        assert max((t.state[k] - a.state[k]).abs().max().item() for k in weights) < TOLERANCE
        assert all(torch.equal(t.state[k], a.state[k]) for k in t.state if k.startswith("members"))
    fresh = reference_stage(reference_config(_cfg(mode).with_params({"qnn-angle-l2": {"epochs": 1},
                                                                     "references": {"k": 4, "mode": mode}}), 0))
    assert (together[0].state["quantum.weight"] - fresh.state["quantum.weight"]).abs().max() > 1e-3  # it trained


def test_a_group_is_one_stage_key_per_model() -> None:
    rcs = [reference_config(_cfg("offline"), i) for i in range(4)]
    assert len({rc.group_id() for rc in rcs}) == 1  # differ only in their index: one group
    specs4, specs2 = stage_specs(_cfg("offline")), stage_specs(_cfg("offline", k=2))
    assert specs4["reference.1"] == specs2["reference.1"]  # K is no part of a reference's key
    assert "mode" not in specs4["reference.0"]  # offline references keep the keys they were stored under
    assert stage_specs(_cfg("online"))["reference.0"]["mode"] == "online"
    with pytest.raises(ValueError, match="differ in more than their index"):
        reference_group_stage([rcs[0], reference_config(_cfg("online"), 1)])


def _spec(k: int) -> GridSpec:
    axes = {"model": ("qnn-angle-l2",), "forget": ("class:4",), "method": ("none",), "train_shots": (None,),
            "unlearn_shots": (None,), "eval_shots": (None,), "seed": (0,), "backend": ("torch",)}
    params = {"qnn-angle-l2": {"epochs": 2}, "attack": {"epochs": 20}, "references": {"k": k}}
    return GridSpec(name=f"g{k}", path="<g>", dataset="digits", n_train=200, n_test=100, axes=axes, params=params)


def _groups(store: ResultStore, keys: set[str]) -> dict[str, int | None]:
    return {k: json.loads(store.artifact_metadata(k)["qmu"]).get("group") for k in keys}


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_local")
def test_runner_trains_missing_references_as_one_group_and_reuses_stored_ones(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "r"))
    # One worker: with two, the group would be split over them once the train stage left nothing else ready
    # (tests/test_grouped_seeds.py).
    s = run_grid(_spec(4), store, workers=1)
    assert (s.cells_ok, s.stages_run["reference"]) == (1, 4), s.failures
    first = store.artifact_keys()
    refs4 = {k for k in first if json.loads(store.artifact_metadata(k)["qmu"]).get("kind") == "reference"}
    assert set(_groups(store, refs4).values()) == {4}  # one call trained all four
    s = run_grid(_spec(6), store, workers=1)  # two more: only those train, together, the four are reused
    assert (s.cells_ok, s.stages_run["reference"], s.stages_reused["reference"]) == (1, 2, 4), s.failures
    new = {k for k in store.artifact_keys() - first if json.loads(store.artifact_metadata(k)["qmu"]).get("kind") == "reference"}
    assert set(_groups(store, new).values()) == {2}


def test_the_cost_model_prices_a_group_as_measured() -> None:
    from dataclasses import replace

    from harness.estimate import GROUP_SPEEDUP, stage_estimate

    rc = reference_config(_cfg("offline", k=16), 0)
    alone, grouped = (stage_estimate("reference", replace(rc, group_size=g)).seconds for g in (1, 16))
    assert grouped / alone == pytest.approx(1 / dict(GROUP_SPEEDUP["qnn"])[16])  # qnn-angle-l2: the qnn family
    online = stage_estimate("reference", replace(rc, group_size=1, mode="online")).seconds
    assert online / alone == pytest.approx((200 + 748) // 2 / (748 // 2), rel=0.01)  # its pool: train and P_eval


def _retrain(replicas: int, ulira: int = 0) -> CellConfig:
    from dataclasses import replace

    return replace(BASE, method="retrain").with_params(
        {"qnn-angle-l2": {"epochs": 2}, "retrain": {"replicas": replicas}, "ulira": {"k": ulira}})


def test_replicas_trained_as_a_group_equal_replicas_trained_alone() -> None:
    from workloads.stages import replica_config, replica_group_stage, replica_stage

    rcs = [replica_config(_retrain(4), i) for i in range(3)]
    assert len({rc.group_id() for rc in rcs}) == 1 and {rc.group_size for rc in rcs} == {3}
    together, alone = replica_group_stage(rcs), [replica_stage(rc) for rc in rcs]
    for t, a in zip(together, alone):
        assert set(t.state) == set(a.state)
        assert max((t.state[k] - a.state[k]).abs().max().item() for k in t.state if k != "replica.index") < TOLERANCE
        assert torch.equal(t.state["replica.index"], a.state["replica.index"])
    assert (together[0].state["quantum.weight"] - together[1].state["quantum.weight"]).abs().max() > 1e-3
    specs = stage_specs(_retrain(4))
    assert [n for n in specs if n.startswith("replica.")] == ["replica.0", "replica.1", "replica.2"]
    assert specs["replica.1"] == stage_specs(_retrain(3))["replica.1"]  # the cell's replicas are no part of a key
    with pytest.raises(ValueError, match="differ in more than their index"):
        replica_group_stage([rcs[0], replica_config(_retrain(4).with_params({"qnn-angle-l2": {"epochs": 1},
                                                                             "retrain": {"replicas": 4}}), 1)])


def test_the_cost_model_prices_replicas_as_a_group() -> None:
    from harness.estimate import GROUP_SPEEDUP, stage_estimate
    from workloads.stages import replica_config

    alone = stage_estimate("replica", replica_config(_retrain(2), 0)).seconds  # one replica: a group of one
    grouped = stage_estimate("replica", replica_config(_retrain(5), 0)).seconds  # four replicas
    assert grouped / alone == pytest.approx(1 / dict(GROUP_SPEEDUP["qnn"])[4])
    assert replica_config(_retrain(1, ulira=4), 0).group_size == 1  # no floor: U-LiRA's one retrained replica


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_local")
def test_runner_trains_a_cells_replicas_as_one_group(tmp_path: Path) -> None:
    from dataclasses import replace

    spec = _spec(2)
    spec = replace(spec, axes={**spec.axes, "method": ("retrain",)},
                   params={**spec.params, "retrain": {"replicas": 3}})
    store = ResultStore(str(tmp_path / "r"))
    s = run_grid(spec, store, workers=1)
    assert (s.cells_ok, s.stages_run["replica"]) == (1, 2), s.failures
    replicas = {k for k in store.artifact_keys() if json.loads(store.artifact_metadata(k)["qmu"]).get("kind") == "replica"}
    assert set(_groups(store, replicas).values()) == {2}


def test_the_cost_model_prices_a_shadows_ascent_by_its_measured_steps() -> None:
    """U-LiRA's shadows stop sooner than the cell's model (benchmarks/calibrate_cost.py): a ulira stage of an
    ascent method is priced by the method's SHADOW_STEPS where it has them, the unlearn stage by its STEPS."""
    from workloads.hparams import resolve_params
    from workloads.unlearning import METHODS, Workload
    from workloads.unlearning.ascent import ascent_passes

    def gap(name: str) -> tuple[float, Workload]:
        mp = resolve_params("hqnn-l1", name, {})[1]
        cell, shadow = Workload("hqnn", 1000, 100, {}, mp), Workload("hqnn", 1000, 100, {}, mp, shadow=True)
        return METHODS[name].passes(cell) - METHODS[name].passes(shadow), cell

    for name, retain in (("ga", 0), ("rga", 0), ("graddiff", 1)):
        fewer, cell = gap(name)
        steps = METHODS[name].STEPS["hqnn"] - METHODS[name].SHADOW_STEPS["hqnn"]
        assert fewer == pytest.approx(ascent_passes(cell, {"hqnn": steps}, retain)) and fewer > 0
    assert gap("neggrad_plus")[0] == 0  # no shadow measurement: its STEPS


def test_groups_can_be_switched_off_for_the_grouping_benchmark(monkeypatch) -> None:
    from harness.identity import GROUPS_ENV, group_of

    rc = reference_config(_cfg("offline"), 0)
    assert group_of(rc) is not None and group_of(rc) == group_of(reference_config(_cfg("offline"), 1))
    monkeypatch.setenv(GROUPS_ENV, "off")
    assert group_of(rc) is None
