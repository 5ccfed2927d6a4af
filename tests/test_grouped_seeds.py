"""The seeds of one train spec trained as a group (`train_group_stage`, `train_many`) equal each trained alone
(`train_stage`, `fit`); the plan tells each train stage how many seeds train with it (which prices it), and the
runner sends a group's missing seeds together, split over the workers when nothing else would keep them busy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.grid_spec import GridSpec
from harness.identity import build_plan, group_of
from harness.runner import run_grid
from harness.store import ResultStore
from workloads.stages import CellConfig, stage_specs, train_group_stage, train_stage

TOLERANCE = 1e-10
BASE = CellConfig("qnn-angle-l2", "class:4", "none", None, None, None, 0, dataset="digits", n_train=200,
                  n_test=100).with_params({"qnn-angle-l2": {"epochs": 2}})


def _train_cfgs(base: CellConfig, seeds: range) -> list[CellConfig]:
    return [replace(base, seed=s).stage_config("train") for s in seeds]


@pytest.mark.parametrize("model", ["qnn-angle-l2", "hqnn-l1"])
def test_seeds_trained_as_a_group_equal_seeds_trained_alone(model: str) -> None:
    base = replace(BASE, model=model).with_params({model: {"epochs": 1}})
    cfgs = _train_cfgs(base, range(3))
    together, alone = train_group_stage(cfgs), [train_stage(c) for c in cfgs]
    for t, a in zip(together, alone):
        assert set(t.state) == set(a.state)
        assert max((t.state[k] - a.state[k]).abs().max().item() for k in t.state) < TOLERANCE
    w = next(k for k in together[0].state if k.endswith("weight"))
    assert (together[0].state[w] - together[1].state[w]).abs().max() > 1e-3  # seeds differ: data, order, init


def test_only_a_train_stage_is_grouped_and_only_with_its_other_seeds() -> None:
    cfgs = _train_cfgs(BASE, range(3))
    assert len({group_of(c) for c in cfgs}) == 1 and group_of(cfgs[0]) is not None
    assert group_of(BASE) is None  # the cell's own config: its unlearn and evaluate stages go alone
    assert group_of(BASE.stage_config("attack")) is None
    other = _train_cfgs(BASE.with_params({"qnn-angle-l2": {"epochs": 1}}), range(1))[0]
    assert group_of(other) != group_of(cfgs[0])  # another recipe is another group
    assert group_of(_train_cfgs(replace(BASE, method="ga"), range(1))[0]) == group_of(cfgs[0])  # same original
    with pytest.raises(ValueError, match="differ in more than their seed"):
        train_group_stage([cfgs[0], other])
    with pytest.raises(ValueError, match="differ in more than their seed"):
        train_group_stage([BASE, replace(BASE, seed=1)])  # not train stage configs


def test_the_plan_sizes_a_seed_group_and_the_cost_model_prices_it(monkeypatch) -> None:
    from harness.estimate import GROUP_SPEEDUP, stage_estimate
    from harness.identity import GROUPS_ENV

    cells = [replace(BASE, seed=s, method=m) for s in range(4) for m in ("none", "ga")]
    plan = build_plan("g", cells, stage_specs, "v")
    trains = [n for n in plan.stages.values() if n.kind == "train"]
    assert len(trains) == 4 and {n.cfg.group_size for n in trains} == {4}
    assert all(getattr(n.cfg, "group_size", None) is None for n in plan.stages.values() if n.kind != "train")
    alone = stage_estimate("train", BASE).seconds
    grouped = stage_estimate("train", trains[0].cfg)
    assert grouped.seconds / alone == pytest.approx(1 / dict(GROUP_SPEEDUP["qnn"])[4])
    assert grouped.circuits == stage_estimate("train", BASE).circuits  # a group runs as many circuits, faster
    monkeypatch.setenv(GROUPS_ENV, "off")  # every model alone: priced alone
    plan = build_plan("g", cells, stage_specs, "v")
    assert {n.cfg.group_size for n in plan.stages.values() if n.kind == "train"} == {1}


def _spec(seeds: tuple[int, ...], method: str = "none") -> GridSpec:
    axes = {"model": ("qnn-angle-l2",), "forget": ("class:4",), "method": (method,), "train_shots": (None,),
            "unlearn_shots": (None,), "eval_shots": (None,), "seed": seeds, "backend": ("torch",)}
    params = {"qnn-angle-l2": {"epochs": 2}, "attack": {"epochs": 20}}
    return GridSpec(name="seeds", path="<g>", dataset="digits", n_train=200, n_test=100, axes=axes, params=params)


def _train_groups(store: ResultStore, keys: set[str]) -> list[int | None]:
    metas = [json.loads(store.artifact_metadata(k)["qmu"]) for k in keys]
    return sorted(m.get("group") or 1 for m in metas if m.get("kind") == "train")


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_local")
def test_runner_splits_a_seed_group_over_idle_workers_and_reuses_stored_seeds(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "r"))
    s = run_grid(_spec((0, 1, 2, 3)), store, workers=2)
    assert (s.cells_ok, s.stages_run["train"]) == (4, 4), s.failures
    first = store.artifact_keys()
    assert _train_groups(store, first) == [2, 2, 2, 2]  # nothing else was ready: 2 + 2 on two workers, not 4 on one
    s = run_grid(_spec((0, 1, 2, 3, 4, 5, 6), "ga"), store, workers=1)  # three more seeds: only those train, together
    assert (s.cells_ok, s.stages_run["train"], s.stages_reused["train"]) == (7, 3, 4), s.failures
    second = store.artifact_keys()
    assert _train_groups(store, second - first) == [3, 3, 3]
    s = run_grid(_spec((0, 1, 2, 3, 4, 5, 6, 7, 8)), store, workers=1)  # a resumed run: only the new cells planned
    assert (s.cells_ok, s.stages_run["train"]) == (5, 2), s.failures
    assert _train_groups(store, store.artifact_keys() - second) == [2, 2]
