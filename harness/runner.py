"""Ray execution of a grid: a pool of stage-worker actors fed by a dependency-driven driver loop.

The driver is the only process that touches the result store. Workers get their inputs as safetensors
bytes through Ray's object store and return bytes, so no worker needs a shared filesystem. A stage runs
once its inputs exist (train -> unlearn and attack -> evaluate); stored artifacts are reused by key.
A dead actor is replaced and its stage retried up to `max_retries` times; an exception raised by the
workload is deterministic (same inputs, same error), so it fails its cells at once, with the error text.
"""

from __future__ import annotations

import heapq
import importlib
import json
import os
import socket
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from .estimate import stage_estimate
from .grid_spec import GridSpec
from .identity import DEPS, Plan, StageNode, build_plan, config_dict
from .progress import NullProgress, Progress
from .store import ResultStore, header_metadata

DEFAULT_IMPL = "workloads.cell"


def connect(address: str | None = None, workers: int | None = None) -> None:
    """Join `address` (a cluster, or 'auto'), reuse an initialised Ray, or start a local one."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        # A local Ray sized to the pool: the actors each take one CPU, and nothing else runs here.
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)


@ray.remote(num_cpus=1, max_restarts=0)
class StageWorker:
    """Runs stages of one workload module; keeps it imported (and its data caches warm) between stages."""

    def __init__(self, impl: str) -> None:
        import torch

        # One actor per CPU: intra-op threads would only fight each other for the same cores.
        torch.set_num_threads(1)
        self.impl = importlib.import_module(impl)
        from workloads.serialize import dumps, loads

        self.dumps, self.loads = dumps, loads
        self.info_ = {"pid": os.getpid(), "host": socket.gethostname(),
                      "node": ray.get_runtime_context().get_node_id()}

    def info(self) -> dict[str, Any]:
        return self.info_

    def run(self, kind: str, cfg: Any, costs: dict[str, dict], *blobs: bytes) -> tuple[Any, dict[str, Any]]:
        """(payload, meta): payload is safetensors bytes, or (row, examples) for `evaluate`."""
        t0 = time.time()
        deps = [self.loads(b)[0] for b in blobs]
        meta = {**self.info_, "kind": kind, "started": t0}
        if kind == "evaluate":
            payload = self.impl.evaluate_stage(cfg, *deps, costs)
        else:
            fn = getattr(self.impl, f"{kind}_stage")
            res = fn(cfg, *deps)
            meta["cost"] = {k: float(v) for k, v in res.cost.items() if v is not None}
            meta["wall"] = time.time() - t0
            payload = self.dumps(res.state, {"qmu": json.dumps(meta, sort_keys=True)})
        meta["wall"] = time.time() - t0
        return payload, meta


@dataclass
class RunSummary:
    grid: str
    cells_total: int = 0
    cells_skipped: int = 0  # already ok in the store
    cells_ok: int = 0
    cells_failed: int = 0
    stages_run: Counter = field(default_factory=Counter)
    stages_reused: Counter = field(default_factory=Counter)
    retries: int = 0
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0  # planning, Ray and actor start until the first stage was dispatched
    failures: list[tuple[str, str]] = field(default_factory=list)  # (cell_id, error)
    hosts: Counter = field(default_factory=Counter)  # node id -> stages run there


class _Pool:
    """The actor pool. Actors join when they are up (an autoscaling cluster may take minutes to add nodes);
    a slot whose actor died gets a fresh actor, which joins the same way."""

    def __init__(self, n: int, impl: str, start_timeout: float = 600.0) -> None:
        self.impl, self.start_timeout = impl, start_timeout
        self.actors: list[Any] = [None] * n
        self.infos: list[dict[str, Any] | None] = [None] * n
        self.starting: dict[ray.ObjectRef, tuple[int, float]] = {}  # info ref -> (slot, start time)
        for slot in range(n):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self.actors[slot], self.infos[slot] = StageWorker.remote(self.impl), None
        self.starting[self.actors[slot].info.remote()] = (slot, time.time())

    def replace(self, slot: int) -> None:
        ray.kill(self.actors[slot], no_restart=True)
        self._spawn(slot)

    def joined(self, ready: list[ray.ObjectRef]) -> tuple[list[int], list[str]]:
        """(slots now up, errors of slots that failed or timed out starting) among the starting actors."""
        up, errors = [], []
        for ref in ready:
            slot, _ = self.starting.pop(ref)
            try:
                self.infos[slot] = ray.get(ref)
                up.append(slot)
            except RayError as e:  # e.g. the workload module does not import on that node
                errors.append(f"worker failed to start: {_short_error(e)}")
                ray.kill(self.actors[slot], no_restart=True)
        for ref, (slot, t0) in list(self.starting.items()):
            if time.time() - t0 > self.start_timeout:
                del self.starting[ref]
                errors.append(f"worker did not start within {self.start_timeout:.0f} s")
                ray.kill(self.actors[slot], no_restart=True)
        return up, errors

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)


def _short_error(e: BaseException) -> str:
    """Error text for the row: the workload's own exception and traceback, not Ray's wrapping."""
    cause = getattr(e, "cause", None) if isinstance(e, RayTaskError) else None
    if cause is not None:
        tb = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        text = f"{type(cause).__name__}: {cause}\n{tb}"
    else:
        text = f"{type(e).__name__}: {e}"
    return text[:8000]


def _system_failure(e: BaseException) -> bool:
    """A dead actor, node or lost object (retry) rather than an exception from the workload (fail)."""
    if isinstance(e, RayTaskError):
        return isinstance(getattr(e, "cause", None), RayError)
    return isinstance(e, RayError)


class _Driver:
    """Dispatches a plan's stages over the pool as their dependencies finish; writes every result."""

    def __init__(self, spec: GridSpec, plan: Plan, store: ResultStore, code_version: str,
                 progress: Progress, max_retries: int, summary: RunSummary) -> None:
        self.spec, self.plan, self.store, self.code_version = spec, plan, store, code_version
        self.progress, self.max_retries, self.summary = progress, max_retries, summary
        self.run_id = uuid.uuid4().hex[:12]
        self.dependents = plan.dependents()
        self.done: dict[str, dict[str, Any]] = {}  # key -> meta of finished stage
        self.failed: dict[str, str] = {}  # key -> error text
        self.refs: dict[str, ray.ObjectRef] = {}  # key -> artifact bytes in the object store
        self.remaining = {k: len(v) for k, v in self.dependents.items()}
        self.attempts: Counter = Counter()
        self.ready: list[tuple[float, int, str]] = []
        self.seq = 0
        self.rank = self._upward_rank()
        self.cells = {c.cell_id: c for c in plan.cells}
        self.start_errors: list[str] = []
        self.t_start = time.time()

    # planning -------------------------------------------------------------------------------------
    def _upward_rank(self) -> dict[str, float]:
        """Estimated seconds from a stage's start to the end of its longest chain of dependents; the
        ready stage with the longest chain goes first, which keeps long trains off the critical path."""
        rank: dict[str, float] = {}
        order = sorted(self.plan.stages.values(), key=lambda s: -list(DEPS).index(s.kind))
        for s in order:  # evaluate, attack, unlearn, train: dependents come first
            tail = max((rank[d] for d in self.dependents[s.key]), default=0.0)
            rank[s.key] = stage_estimate(s.kind, s.cfg).seconds + tail
        return rank

    def _push(self, key: str) -> None:
        self.seq += 1
        heapq.heappush(self.ready, (-self.rank[key], self.seq, key))

    def _reuse_stored(self) -> None:
        """Stages whose artifacts already exist are done; only their bytes get loaded, when needed."""
        for s in self.plan.stages.values():
            if s.kind != "evaluate" and self.store.has_artifact(s.key):
                self.done[s.key] = json.loads(self.store.artifact_metadata(s.key).get("qmu", "{}"))
                self.summary.stages_reused[s.kind] += 1
                self.progress.stage_finished(s, "reused")
        for s in self.plan.stages.values():
            if s.key not in self.done and all(d in self.done for d in s.deps):
                self._push(s.key)

    def _dep_ref(self, key: str) -> ray.ObjectRef:
        if key not in self.refs:
            self.refs[key] = ray.put(self.store.read_artifact(key))
        return self.refs[key]

    def _release(self, key: str) -> None:
        """Drop a dependency's bytes from the object store once every dependent has consumed it."""
        self.remaining[key] -= 1
        if self.remaining[key] <= 0:
            self.refs.pop(key, None)

    # running --------------------------------------------------------------------------------------
    def run(self, pool: _Pool) -> None:
        self._reuse_stored()
        free: list[int] = []
        inflight: dict[ray.ObjectRef, tuple[str, int, ray.ObjectRef]] = {}  # meta ref -> (key, slot, payload)
        while self.ready or inflight:
            while self.ready and free:
                _, _, key = heapq.heappop(self.ready)
                slot = free.pop(0)
                node = self.plan.stages[key]
                costs = {k: self.done[d].get("cost", {}) for k, d in zip(DEPS[node.kind], node.deps)}
                args = [self._dep_ref(d) for d in node.deps]
                payload, meta = pool.actors[slot].run.options(num_returns=2).remote(node.kind, node.cfg, costs, *args)
                inflight[meta] = (key, slot, payload)
                self.progress.stage_started(node, pool.infos[slot])
                if not self.summary.startup_seconds:
                    self.summary.startup_seconds = time.time() - self.t_start
            if not inflight and not pool.starting:
                self._fail_all_pending(f"no worker available: {'; '.join(self.start_errors[-3:]) or 'none started'}")
                break
            ready, _ = ray.wait([*inflight, *pool.starting], num_returns=1, timeout=1.0)
            self.progress.tick()
            up, errors = pool.joined([r for r in ready if r in pool.starting])
            free += up
            self.start_errors += errors
            for ref in ready:
                if ref in inflight:
                    self._collect(pool, free, ref, *inflight.pop(ref))

    def _collect(self, pool: _Pool, free: list[int], ref: ray.ObjectRef, key: str, slot: int,
                 payload: ray.ObjectRef) -> None:
        """Handle one finished stage: store it, or retry it on a fresh actor, or fail it."""
        node = self.plan.stages[key]
        try:
            meta = ray.get(ref)
            data = ray.get(payload)
        except Exception as e:  # noqa: BLE001 -- every failure is classified below
            if not _system_failure(e):
                free.append(slot)
                self._fail(node, f"{node.kind} stage raised {_short_error(e)}")
                return
            self.attempts[key] += 1
            self.summary.retries += 1
            for d in node.deps:  # inputs lost with a node are re-put from the store on retry
                self.refs.pop(d, None)
            pool.replace(slot)  # the slot is free again once the new actor is up
            if self.attempts[key] > self.max_retries:
                self._fail(node, f"{node.kind} stage failed after {self.attempts[key]} attempts; "
                                 f"last error: {_short_error(e)}")
            else:
                self._push(key)
            return
        free.append(slot)
        self._finish(node, meta, data, payload)

    def _finish(self, node: StageNode, meta: dict[str, Any], data: Any, payload_ref: ray.ObjectRef) -> None:
        self.summary.stages_run[node.kind] += 1
        self.summary.hosts[meta["node"]] += 1
        if node.kind != "evaluate":
            self.store.write_artifact(node.key, data)
            meta = _artifact_meta(data)
            self.refs[node.key] = payload_ref  # dependents read the bytes already in the object store
        self.done[node.key] = meta
        for d in node.deps:
            self._release(d)
        self.progress.stage_finished(node, "done")
        if node.kind == "evaluate":
            row, examples = data
            for cid in node.cells:
                self._write_ok(cid, node, meta, row, examples)
        for k in self.dependents[node.key]:
            s = self.plan.stages[k]
            if all(d in self.done for d in s.deps):
                self._push(k)

    def _fail(self, node: StageNode, error: str) -> None:
        """Fail a stage and, transitively, every stage and cell that needs it."""
        stack = [(node.key, error)]
        while stack:
            key, err = stack.pop()
            if key in self.failed:
                continue
            self.failed[key] = err
            s = self.plan.stages[key]
            self.progress.stage_finished(s, "failed")
            if s.kind == "evaluate":
                for cid in s.cells:
                    self._write_failed(cid, err)
            for k in self.dependents[key]:
                stack.append((k, err if s.kind == "evaluate" else f"needs failed {s.kind} stage {key}: {err}"))
        self.ready = [r for r in self.ready if r[2] not in self.failed]
        heapq.heapify(self.ready)

    def _fail_all_pending(self, error: str) -> None:
        for s in self.plan.stages.values():
            if s.kind == "evaluate" and s.key not in self.done and s.key not in self.failed:
                self._fail(s, error)
        self.ready.clear()

    # rows -----------------------------------------------------------------------------------------
    def _base_row(self, cid: str) -> dict[str, Any]:
        cell = self.cells[cid]
        c = config_dict(cell.cfg)
        row = {k: c[k] for k in ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots",
                                 "seed", "backend")}
        row.update(dataset=c["dataset"], n_train=c["n_train"], n_test=c["n_test"],
                   params=json.dumps(c["params"], sort_keys=True), code_version=self.code_version,
                   run_id=self.run_id, ray_job_id=ray.get_runtime_context().get_job_id(),
                   finished_at=datetime.now(timezone.utc))
        for kind, key in cell.keys.items():
            row[f"{kind}_key"] = key
            meta = self.done.get(key)
            if meta:
                row[f"{kind}_host"], row[f"{kind}_node"] = meta.get("host"), meta.get("node")
        return row

    def _write_ok(self, cid: str, node: StageNode, meta: dict[str, Any], row: dict[str, Any], examples) -> None:
        out = {**row, **self._base_row(cid), "status": "ok", "error": None, "host": meta["host"],
               "evaluate_host": meta["host"], "evaluate_node": meta["node"]}
        self.store.write_cell(self.spec.name, cid, out, examples)
        self.summary.cells_ok += 1
        self.progress.cell_finished(cid, "ok")

    def _write_failed(self, cid: str, error: str) -> None:
        out = {**self._base_row(cid), "status": "failed", "error": error}
        self.store.write_cell(self.spec.name, cid, out, None)
        self.summary.cells_failed += 1
        self.summary.failures.append((cid, error))
        self.progress.cell_finished(cid, "failed")


def _artifact_meta(blob: bytes) -> dict[str, Any]:
    """The stage meta (cost, host, node) that the worker embedded in the safetensors header."""
    return json.loads(header_metadata(blob).get("qmu", "{}"))


def load_impl(impl: str) -> Any:
    return importlib.import_module(impl)


def impl_code_version(mod: Any) -> str:
    """The workload's code version: its own attribute, else its top-level package's."""
    cv = getattr(mod, "code_version", None)
    if cv is None:
        cv = getattr(importlib.import_module(mod.__name__.split(".")[0]), "code_version")
    return cv() if callable(cv) else str(cv)


def plan_grid(spec: GridSpec, store: ResultStore | None, impl: str = DEFAULT_IMPL) -> tuple[Plan, list[str], str]:
    """(plan of the cells not yet ok in `store`, ids of all the grid's cells, code version)."""
    mod = load_impl(impl)
    cv = impl_code_version(mod)
    full = build_plan(spec.name, spec.cells(mod.CellConfig), mod.stage_specs, cv)
    statuses = store.cell_statuses(spec.name) if store is not None else {}
    todo = [c.cfg for c in full.cells if statuses.get(c.cell_id) != "ok"]
    return build_plan(spec.name, todo, mod.stage_specs, cv), [c.cell_id for c in full.cells], cv


def run_grid(spec: GridSpec, store: ResultStore, *, workers: int | None = None, impl: str = DEFAULT_IMPL,
             progress: Progress | None = None, max_retries: int = 2, address: str | None = None) -> RunSummary:
    """Run (or resume) every cell of `spec` not yet ok in `store`.

    Ray is joined (see `connect`) only when there is work, so a finished grid re-runs in about a second.
    """
    t0 = time.time()
    progress = progress or NullProgress()
    plan, all_ids, cv = plan_grid(spec, store, impl)
    store.clean_temp()
    store.write_manifest(spec.name, {"grid": spec.name, "path": spec.path, "cells": all_ids,
                                     "code_version": cv, "written_at": datetime.now(timezone.utc).isoformat()})
    summary = RunSummary(grid=spec.name, cells_total=len(all_ids), cells_skipped=len(all_ids) - len(plan.cells))
    progress.start(spec.name, len(all_ids), summary.cells_skipped, plan)
    if plan.cells:
        connect(address, workers)
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        pool = _Pool(min(n, len(plan.stages)), impl)
        driver = _Driver(spec, plan, store, cv, progress, max_retries, summary)
        driver.t_start = t0
        try:
            driver.run(pool)
        finally:
            pool.shutdown()
    summary.wall_seconds = time.time() - t0
    progress.close(summary)
    return summary
