"""Reference models trained as a group (`reference_group_stage`, `train_many`) equal each trained alone
(`reference_stage`, `fit`), so the runner stores each under its own key and reuses it either way; the runner
sends the missing references of one group to one worker as one call."""

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
    s = run_grid(_spec(4), store, workers=2)
    assert (s.cells_ok, s.stages_run["reference"]) == (1, 4), s.failures
    first = store.artifact_keys()
    refs4 = {k for k in first if json.loads(store.artifact_metadata(k)["qmu"]).get("kind") == "reference"}
    assert set(_groups(store, refs4).values()) == {4}  # one call trained all four
    s = run_grid(_spec(6), store, workers=2)  # two more: only those train, together, the four are reused
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
