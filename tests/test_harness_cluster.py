"""A grid on a real multi-node Ray cluster (head + 2 nodes in one machine): stages spread over nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from harness.runner import run_grid
from harness.store import ResultStore, connect_duckdb
from tests.conftest import make_spec


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20})
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.mark.timeout(240)
def test_grid_runs_on_more_than_one_node(cluster: object, tmp_path: Path) -> None:
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    spec = make_spec("multi", methods=("none", "ga", "ssd"), eval_shots=(None, 16), seeds=(0, 1),
                     params={"trivial": {"sleep": 0.2}})
    store = ResultStore(str(tmp_path))
    s = run_grid(spec, store, impl="tests.support.trivial")  # default pool: one actor per CPU of the cluster
    assert (s.cells_ok, s.cells_failed) == (12, 0)
    assert len(s.hosts) > 1, s.hosts  # stages ran on more than one node
    df = connect_duckdb(store).execute("select * from cells").df()
    nodes = set(df.train_node) | set(df.unlearn_node) | set(df.attack_node) | set(df.evaluate_node)
    assert len(nodes) > 1 and nodes <= {n["NodeID"] for n in ray.nodes()}
    assert len(df) == 12 and df.cell_id.is_unique


def test_cluster_yaml_is_a_valid_ray_up_config() -> None:
    """cluster.yaml passes the Ray cluster launcher's own schema and installs the project on every node."""
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "cluster.yaml").read_text())
    cfg = prepare_config(raw)
    validate_config(cfg)
    assert cfg["available_node_types"]["cpu_worker"]["min_workers"] >= 2
    assert any("pip install" in c and "-e ." in c for c in cfg["setup_commands"])
    assert "~/qmu-bench" in cfg["file_mounts"]
