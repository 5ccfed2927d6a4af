"""Shared fixtures. Ray fixtures start a real local Ray and always shut it down, so test modules that need a
different topology (a multi-node cluster) can follow."""

from __future__ import annotations

import gc
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter's teardown, once every report is written.

    One CI run segfaulted (exit 139) in interpreter teardown after all 231 tests had passed: this process
    hosts Ray clients, moto's server threads, pyarrow's S3 client, DuckDB, qiskit-aer and torch thread pools
    at once, and their native finalisers run in no order we control. The tests' verdict is the exit status
    pytest computed; release what we can explicitly, then exit with it."""
    status = config.stash.get(_EXIT, None)
    if status is None:
        return
    _release_native_resources()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _release_native_resources() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    gc.collect()
    fs = sys.modules.get("pyarrow.fs")
    if fs is not None and hasattr(fs, "finalize_s3"):
        fs.finalize_s3()


_EXIT = pytest.StashKey[int]()


class NetworkBlocked(OSError):
    """A test tried to reach a non-local address; raised by the `no_network` fixture (tests/conftest.py)."""


_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _own_addresses() -> set[str]:
    """The addresses of this machine's interfaces: a local Ray may bind its node to one of them."""
    import psutil

    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)}


def _is_local(host: Any, own: set[str]) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host.lower() in _LOCAL_NAMES or host == socket.gethostname()
    return ip.is_loopback or ip.is_unspecified or str(ip) in own


@pytest.fixture(scope="session", autouse=True)
def no_network() -> Iterator[None]:
    """Every test runs offline: a connect, a datagram or a name lookup for anything but loopback, this machine's
    own addresses and unix sockets raises NetworkBlocked (an OSError, so code that handles "offline" still does).

    It guards this pytest process only. Ray's workers and agents, and the `qmu` subprocesses some tests start,
    are separate processes it cannot patch; Ray's usage-stats report is switched off for them through the
    environment they inherit, and pyarrow's native S3 client is only pointed at the local moto server."""
    own = _own_addresses()

    def check(family: int, address: Any) -> None:
        if family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0], own):
            raise NetworkBlocked(f"the no_network fixture (tests/conftest.py) blocked a connection to {address!r}: "
                                 "tests reach only this machine")

    connect, connect_ex, sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> None:
        check(self.family, address)
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        check(self.family, address)
        return connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
        check(self.family, args[-1])
        return sendto(self, data, *args)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_local(host, own):
            try:
                ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
            except ValueError:  # a name: resolving it would ask a DNS server
                raise NetworkBlocked(f"the no_network fixture (tests/conftest.py) blocked a lookup of {host!r}: "
                                     "tests reach only this machine") from None
        return getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        mp.setattr(socket.socket, "sendto", guarded_sendto)
        mp.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A real local Ray with 2 CPUs for the tests of one module."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def trivial_workload(monkeypatch: pytest.MonkeyPatch) -> str:
    """`qmu run` in this test runs the trivial workload (tests.support.trivial) instead of workloads.stages."""
    import harness.cli

    monkeypatch.setattr(harness.cli, "WORKLOAD", "tests.support.trivial")
    return "tests.support.trivial"


def make_spec(name: str = "t", *, methods: tuple[str, ...] = ("none", "ga", "ssd"),
              eval_shots: tuple[Any, ...] = (None, 16), seeds: tuple[int, ...] = (0,),
              models: tuple[str, ...] = ("qnn-angle-l2",), forget: tuple[str, ...] = ("class:4",),
              params: dict[str, dict[str, Any]] | None = None, dataset: str = "digits",
              n_train: int = 200, n_test: int = 100):
    """A GridSpec built in code (for the trivial workload, whose knobs are not real params)."""
    from harness.grid_spec import GridSpec

    axes = {"model": models, "forget": forget, "method": methods, "train_shots": (None,),
            "unlearn_shots": (None,), "eval_shots": eval_shots, "seed": seeds, "backend": ("torch",)}
    return GridSpec(name=name, path=f"<{name}>", dataset=dataset, n_train=n_train, n_test=n_test, axes=axes,
                    params=params or {})


# Small real cells: the angle model on sklearn digits with few epochs (each cell well under a second).
REAL_GRID = """\
name: {name}
dataset: digits
n_train: 200
n_test: 100
grid:
  model: [qnn-angle-l2]
  forget: ["class:4"]
  method: [{methods}]
  eval_shots: [{eval_shots}]
  seed: [{seeds}]
params:
  qnn-angle-l2: {{epochs: 3}}
  finetune: {{epochs: 1}}
  ga: {{max_epochs: 2}}
  rga: {{max_epochs: 2}}
  attack: {{epochs: 60}}
"""


def write_real_grid(path: Path, name: str = "real", methods: str = "none, retrain, ga",
                    eval_shots: str = "exact, 16", seeds: str = "0") -> Path:
    path.write_text(REAL_GRID.format(name=name, methods=methods, eval_shots=eval_shots, seeds=seeds))
    return path


def method_rows(base: Any, methods: tuple[str, ...], train: Any = None, attack: Any = None) -> dict[str, Any]:
    """The evaluated (row, examples) of `base` (a CellConfig) under each method, sharing one train and one
    attack stage (run here unless given)."""
    from dataclasses import replace

    from workloads.stages import attack_stage, evaluate_stage, train_stage, unlearn_stage

    train = train or train_stage(base)
    attack = attack or attack_stage(base, train.state)
    rows = {}
    for method in methods:
        cfg = replace(base, method=method)
        un = unlearn_stage(cfg, train.state)
        rows[method] = evaluate_stage(cfg, train.state, un.state, attack.state,
                                      costs={"train": train.cost, "unlearn": un.cost, "attack": attack.cost})
    return rows
