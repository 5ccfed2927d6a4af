"""Ray execution of a grid: a pool of stage-worker actors fed by a dependency-driven driver loop.

The driver is the only process that touches the result store. Workers get their inputs as safetensors
bytes through Ray and return bytes, so no worker needs a shared filesystem. A stage runs once its inputs
exist (train -> unlearn and attack -> evaluate); stored artifacts are reused by key.

Throughput: short stages go to an actor in batches (sized from the measured stage times, so a batch holds
about `BATCH_SECONDS` of work and long stages still go one by one), each actor has up to `DEPTH` batches
queued so it never waits for the driver, and finished cells and artifacts are committed in group writes
(one file per batch, one filesystem sync) at most `FLUSH_SECONDS` after they finish. A cell counts as
finished once committed, so a killed driver loses no finished cell, and a re-run skips exactly those.

A dead actor is replaced and its stages retried (a stage that shared a batch with the crash is retried
alone, without counting an attempt) up to `max_retries` times; an exception raised by the workload is
deterministic (same inputs, same error), so it fails its cells at once, with the error text.
"""

from __future__ import annotations

import heapq
import importlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from .estimate import stage_estimate
from .grid_spec import GridSpec
from .identity import DEPS, Plan, PlannedCell, StageNode, build_plan, config_dict, group_of, source_commit
from .progress import NullProgress, Progress
from .store import ResultStore, examples_arrow

DEFAULT_IMPL = "workloads.stages"
BATCH_SECONDS = 0.2  # work per actor call once stage times are known: round trips stay a small fraction
MAX_BATCH = 256
DEPTH = 2  # batches queued per actor: it starts the next while the driver handles the last
FLUSH_SECONDS = 0.5  # a finished cell is committed at most this long after it finished
FLUSH_CELLS = 4096
INLINE_BYTES = 64 * 1024  # smaller inputs travel inside the call; larger ones once through the object store
COMPACT_MIN_FILES = 64  # pending files of a grid after a run that make compacting it worth it


class _SecureDefaultNotice(logging.Filter):
    """Drops Ray's notice that a new local cluster has token authentication on, its secure default, printed on
    every `qmu run`; Ray's warning for a cluster without authentication still passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


# On every Ray logger that `import ray` created (the notice's module is one of them), so that no module path
# of Ray's is named here.
for _name in [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]:
    logging.getLogger(_name).addFilter(_SecureDefaultNotice())


def connect(address: str | None = None, workers: int | None = None) -> None:
    """Join `address` (a cluster, or 'auto'), reuse an initialised Ray, or start a local one, whose processes
    end with this driver (harness/reaper.py)."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        # A local Ray sized to the pool: the actors each take one CPU, and nothing else runs here.
        # address "local": always a new instance, never a cluster another process started on this machine
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        _REAPERS.append(subprocess.Popen([sys.executable, "-m", "harness.reaper", str(os.getpid())],
                                         stdin=subprocess.PIPE, start_new_session=True))


# The reapers' pipes: held open for the life of this process, since their end of file is what ends Ray.
_REAPERS: list[subprocess.Popen] = []


class ClusterMismatch(RuntimeError):
    """The joined cluster's workers cannot run this checkout's code: the import fails, or the code differs."""


@ray.remote(num_cpus=0, max_retries=0)
def _code_on_node(impl: str) -> str:
    return impl_code_version(importlib.import_module(impl))


def check_cluster(impl: str, code_version: str, timeout: float = 120.0) -> str:
    """Each alive node imports the workload and reports its code version (a zero-CPU task pinned to it, so
    busy workers do not delay it); 'Ray cluster at ADDRESS (N nodes, C CPUs)', or ClusterMismatch."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    where = f"the Ray cluster at {ray.get_runtime_context().gcs_address}"
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {n["NodeManagerAddress"]: _code_on_node.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(impl) for n in nodes}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    for host, ref in refs.items():
        if ref not in ready:
            raise ClusterMismatch(f"{where}: node {host} did not answer within {timeout:.0f} s")
        try:
            theirs = ray.get(ref)
        except RayError as e:
            raise ClusterMismatch(f"{where}: workers on {host} cannot import {impl} "
                                  f"({_short_error(e).splitlines()[0]})") from None
        if theirs != code_version:
            raise ClusterMismatch(f"{where}: workers on {host} run code {theirs}, this checkout is {code_version}")
    return f"{where} ({len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs)"


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
            payload = self.impl.evaluate_stage(cfg, *deps, costs=costs)
        else:
            fn = getattr(self.impl, f"{kind}_stage")
            res = fn(cfg, *deps)
            meta["cost"] = {k: float(v) for k, v in res.cost.items() if v is not None}
            meta["wall"] = time.time() - t0
            payload = self.dumps(res.state, {"qmu": json.dumps(meta, sort_keys=True)})
        meta["wall"] = time.time() - t0
        return payload, meta

    def run_group(self, kind: str, cfgs: list[Any]) -> list[tuple[bytes, dict[str, Any]]]:
        """Stages of one group (see `group_of`) trained together by the workload's `<kind>_group_stage`; each
        result is stored under its own key, and each is charged its share of the group's wall time."""
        t0 = time.time()
        results = getattr(self.impl, f"{kind}_group_stage")(cfgs)
        wall = (time.time() - t0) / len(cfgs)
        out = []
        for res in results:
            meta = {**self.info_, "kind": kind, "started": t0, "wall": wall, "group": len(cfgs),
                    "cost": {k: float(v) for k, v in res.cost.items() if v is not None}}
            out.append((self.dumps(res.state, {"qmu": json.dumps(meta, sort_keys=True)}), meta))
        return out

    def run_batch(self, items: list[tuple[str, Any, dict, tuple[str, ...]]], inline: dict[str, bytes],
                  big_keys: list[str], *big: bytes) -> list[tuple[str, Any, dict[str, Any]]]:
        """Run stages one after another; each gives ("ok", payload, meta) or ("error", text, meta), so one
        failing stage does not fail the others. Evaluate examples come back as Arrow tables. A batch that
        is one group (several stages of one `group_of`) runs as one group call."""
        kinds = {kind for kind, *_ in items}
        if len(items) > 1 and len(kinds) == 1 and group_of(items[0][1]) is not None:
            kind = items[0][0]
            try:
                return [("ok", payload, meta) for payload, meta in self.run_group(kind, [it[1] for it in items])]
            except Exception as e:  # noqa: BLE001 -- the workload's error becomes each stage's error text
                return [("error", _short_error(e), {**self.info_, "kind": kind})] * len(items)
        blobs = {**inline, **dict(zip(big_keys, big))}
        out = []
        for kind, cfg, costs, deps in items:
            try:
                payload, meta = self.run(kind, cfg, costs, *(blobs[d] for d in deps))
                if kind == "evaluate":
                    payload = (payload[0], examples_arrow(payload[1]))
                out.append(("ok", payload, meta))
            except Exception as e:  # noqa: BLE001 -- the workload's error becomes the row's error text
                out.append(("error", _short_error(e), {**self.info_, "kind": kind}))
        return out


ADDITIVE_COSTS = ("seconds", "circuits", "shots", "circuits_device", "qpu_seconds")


def stage_costs(deps: Any) -> dict[str, dict[str, float]]:
    """Costs of a stage's dependencies by kind, from (kind, cost) pairs: two stages of one kind (a cell's
    `attack` and `attack.forget`) add their seconds, circuits and shots; other entries are kept as given."""
    out: dict[str, dict[str, float]] = {}
    for kind, cost in deps:
        merged = out.setdefault(kind, {})
        for k, v in cost.items():
            merged[k] = merged.get(k, 0.0) + v if k in ADDITIVE_COSTS else merged.get(k, v)
    return out


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
    run_seconds: float = 0.0  # wall time before compaction
    compacted: int = 0  # pending files folded into the compacted store after the run


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
    err = cause if cause is not None else e
    text = f"{type(err).__name__}: {err}"
    if cause is not None or not isinstance(e, RayError):
        text += "\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return text[:8000]


def _system_failure(e: BaseException) -> bool:
    """A dead actor, node or lost object (retry) rather than an exception from the workload (fail)."""
    if isinstance(e, RayTaskError):
        return isinstance(getattr(e, "cause", None), RayError)
    return isinstance(e, RayError)


@dataclass
class _Batch:
    keys: list[str]
    slot: int
    actor: Any
    seq: int


class _Driver:
    """Dispatches a plan's stages over the pool as their dependencies finish; commits every result."""

    def __init__(self, spec: GridSpec, plan: Plan, store: ResultStore, code_version: str,
                 progress: Progress, max_retries: int, summary: RunSummary) -> None:
        self.spec, self.plan, self.store, self.code_version = spec, plan, store, code_version
        self.progress, self.max_retries, self.summary = progress, max_retries, summary
        self.run_id = uuid.uuid4().hex[:12]
        self.job_id = ray.get_runtime_context().get_job_id()
        self.dependents = plan.dependents()
        self.done: dict[str, dict[str, Any] | None] = {}  # key -> meta of finished stage (None: read lazily)
        self.failed: dict[str, str] = {}  # key -> error text
        self.blobs: dict[str, bytes] = {}  # key -> artifact bytes made this run, until every dependent has run
        self.refs: dict[str, ray.ObjectRef] = {}  # key -> large artifact bytes in the object store
        self.remaining = {k: len(v) for k, v in self.dependents.items()}
        self.attempts: Counter = Counter()
        self.solo: set[str] = set()  # stages retried alone after a batch they were in died
        self.secs: dict[str, float] = {}  # kind -> running mean of measured seconds per stage
        self.ready: list[tuple[float, int, str]] = []
        self.seq = 0
        self.workers = 1  # the pool's size, set by run()
        self.chunks: dict[str, int] = {}  # group -> stages per batch (_chunk)
        self.rank = self._upward_rank()
        self.cells = {c.cell_id: c for c in plan.cells}
        self.start_errors: list[str] = []
        self.t_start = time.time()
        # the commit buffer: artifacts, then cell rows with their examples; flushed together
        self.buf_artifacts: list[tuple[str, bytes]] = []
        self.buf_rows: list[dict[str, Any]] = []
        self.buf_examples: list[Any] = []
        self.buf_since: float | None = None

    # planning -------------------------------------------------------------------------------------
    def _upward_rank(self) -> dict[str, float]:
        """Estimated seconds from a stage's start to the end of its longest chain of dependents; the
        ready stage with the longest chain goes first, which keeps long trains off the critical path."""
        rank: dict[str, float] = {}
        est: dict[tuple[str, Any], float] = {}
        order = sorted(self.plan.stages.values(), key=lambda s: -list(DEPS).index(s.kind))
        for s in order:  # evaluate, attack, unlearn, train: dependents come first
            tail = max((rank[d] for d in self.dependents[s.key]), default=0.0)
            k = (s.kind, s.cfg)
            if k not in est:
                est[k] = stage_estimate(s.kind, s.cfg).seconds
            rank[s.key] = est[k] + tail
        return rank

    def _push(self, key: str) -> None:
        self.seq += 1
        heapq.heappush(self.ready, (-self.rank[key], self.seq, key))

    def _reuse_stored(self) -> None:
        """Stages whose artifacts already exist are done (one listing of the store); their bytes and cost
        metadata are read only when a dependent needs them."""
        stored = self.store.artifact_keys()
        for s in self.plan.stages.values():
            if s.kind != "evaluate" and s.key in stored:
                self.done[s.key] = None
                self.summary.stages_reused[s.kind] += 1
                self.progress.stage_finished(s, "reused")
        for s in self.plan.stages.values():
            if s.key not in self.done and all(d in self.done for d in s.deps):
                self._push(s.key)

    def _meta(self, key: str) -> dict[str, Any]:
        if self.done.get(key) is None:
            self.done[key] = json.loads(self.store.artifact_metadata(key).get("qmu", "{}"))
        return self.done[key]

    def _blob(self, key: str) -> bytes:
        if key not in self.blobs:
            self.blobs[key] = self.store.read_artifact(key)
        return self.blobs[key]

    def _release(self, key: str) -> None:
        """Drop a dependency's bytes once every dependent has consumed it."""
        self.remaining[key] -= 1
        if self.remaining[key] <= 0:
            self.refs.pop(key, None)
            self.blobs.pop(key, None)

    # running --------------------------------------------------------------------------------------
    def _take_batch(self, n_slots: int) -> list[str]:
        """Ready stages for one call: about BATCH_SECONDS of measured work, never more than a fair share of
        the ready queue; a stage of a kind not yet measured, or one retried alone, goes by itself."""
        share = max(1, math.ceil(len(self.ready) / max(1, n_slots)))
        keys: list[str] = []
        budget = BATCH_SECONDS
        while self.ready and len(keys) < min(share, MAX_BATCH):
            key = self.ready[0][2]
            node = self.plan.stages[key]
            group = None if key in self.solo else node.group
            if group is not None:  # a group (or its share of the workers, see _chunk) goes as one batch of its own
                if keys:
                    break
                heapq.heappop(self.ready)
                return [key, *self._take_group(group)]
            sec = self.secs.get(node.kind)
            alone = sec is None or key in self.solo
            if keys and (alone or sec > budget):
                break
            heapq.heappop(self.ready)
            keys.append(key)
            if alone:
                break
            budget -= sec
        return keys

    def _take_group(self, group: str) -> list[str]:
        """Take the other ready stages of `group` (not retried alone) off the ready queue, up to its chunk."""
        members = sorted(e for e in self.ready if e[2] not in self.solo and self.plan.stages[e[2]].group == group)
        taken = members[: self._chunk(group, len(members) + 1) - 1]
        if taken:
            self.ready = [e for e in self.ready if e not in taken]
            heapq.heapify(self.ready)
        return [e[2] for e in taken]

    def _chunk(self, group: str, ready: int) -> int:
        """Stages of `group` per batch, fixed when the group is first taken: all of them, unless the rest of the
        ready queue leaves workers idle; then an equal share per worker, so that 5 seeds on 2 workers train as 3
        and 2 in parallel rather than 5 on one worker while the other waits (grouping gains 1.1-1.5x, a worker 2x)."""
        if group not in self.chunks:
            idle = self.workers - 1 - (len(self.ready) - ready + 1)
            self.chunks[group] = ready if idle <= 0 else math.ceil(ready / min(self.workers, ready))
        return self.chunks[group]

    def _dispatch(self, pool: _Pool, slot: int, keys: list[str]) -> ray.ObjectRef:
        items, inline, big = [], {}, {}
        for key in keys:
            node = self.plan.stages[key]
            costs = stage_costs((self.plan.stages[d].kind, self._meta(d).get("cost", {})) for d in node.deps)
            items.append((node.kind, node.cfg, costs, node.deps))
            for d in node.deps:
                if d in self.refs:
                    big[d] = self.refs[d]
                elif d not in inline:
                    b = self._blob(d)
                    if len(b) <= INLINE_BYTES:
                        inline[d] = b
                    else:
                        big[d] = self.refs[d] = ray.put(b)
            self.progress.stage_started(node, pool.infos[slot])
        ref = pool.actors[slot].run_batch.remote(items, inline, list(big), *big.values())
        if not self.summary.startup_seconds:
            self.summary.startup_seconds = time.time() - self.t_start
        return ref

    def run(self, pool: _Pool) -> None:
        self._reuse_stored()
        self.workers = len(pool.actors)
        free: list[int] = []  # one entry per batch an actor can take now (DEPTH per actor)
        inflight: dict[ray.ObjectRef, _Batch] = {}
        try:
            while self.ready or inflight:
                while self.ready and free:
                    slot = free.pop(0)
                    keys = self._take_batch(len(free) + 1)
                    self.seq += 1
                    inflight[self._dispatch(pool, slot, keys)] = _Batch(keys, slot, pool.actors[slot], self.seq)
                if not inflight and not pool.starting:
                    self._fail_all_pending(f"no worker available: {'; '.join(self.start_errors[-3:]) or 'none started'}")
                    break
                wait = 1.0 if self.buf_since is None else max(0.0, self.buf_since + FLUSH_SECONDS - time.time())
                ready, _ = ray.wait([*inflight, *pool.starting], num_returns=1, timeout=min(1.0, wait))
                if ready:  # take everything else that is done too, in one round
                    more, _ = ray.wait([r for r in [*inflight, *pool.starting] if r not in ready],
                                       num_returns=len(inflight) + len(pool.starting) - len(ready), timeout=0)
                    ready += more
                self.progress.tick()
                up, errors = pool.joined([r for r in ready if r in pool.starting])
                free += [s for s in up for _ in range(DEPTH)]
                self.start_errors += errors
                for ref in ready:
                    if ref in inflight:
                        self._collect(pool, free, ref, inflight.pop(ref), inflight)
                self._maybe_flush()
        finally:
            self.flush()

    def _collect(self, pool: _Pool, free: list[int], ref: ray.ObjectRef, batch: _Batch,
                 inflight: dict[ray.ObjectRef, _Batch]) -> None:
        """Handle one finished batch: commit each stage, or retry the batch on a fresh actor, or fail."""
        alive = pool.actors[batch.slot] is batch.actor  # not yet replaced after a crash
        try:
            results = ray.get(ref)
        except Exception as e:  # noqa: BLE001 -- every failure is classified below
            if not _system_failure(e):  # the call itself raised, not a stage: fail its stages with the text
                free += [batch.slot] if alive else []
                for key in batch.keys:
                    node = self.plan.stages[key]
                    self._fail(node, f"{node.kind} stage raised {_short_error(e)}")
                return
            # The actor ran its calls in order: the earliest one still out is the one it died in; the
            # calls queued behind it never started, so they go back to the queue without an attempt.
            group = [batch]
            for r, b in list(inflight.items()):
                if b.actor is batch.actor:
                    group.append(inflight.pop(r))
            group.sort(key=lambda b: b.seq)
            self._retry(group[0], e)
            for b in group[1:]:
                for key in b.keys:
                    self._push(key)
            if alive:  # the slot is free again once its new actor is up
                free[:] = [s for s in free if s != batch.slot]
                pool.replace(batch.slot)
            return
        free += [batch.slot] if alive else []
        for key, (state, payload, meta) in zip(batch.keys, results):
            node = self.plan.stages[key]
            if state == "error":
                self._fail(node, f"{node.kind} stage raised {payload}")
            else:
                self._finish(node, meta, payload)

    def _retry(self, batch: _Batch, e: Exception) -> None:
        self.summary.retries += 1
        for key in batch.keys:
            node = self.plan.stages[key]
            for d in node.deps:
                self.refs.pop(d, None)  # inputs lost with a node are put again
            if len(batch.keys) > 1:
                self.solo.add(key)  # which stage killed the actor is unknown: retry each alone, uncounted
                self._push(key)
                continue
            self.attempts[key] += 1
            if self.attempts[key] > self.max_retries:
                self._fail(node, f"{node.kind} stage failed after {self.attempts[key]} attempts; "
                                 f"last error: {_short_error(e)}")
            else:
                self._push(key)

    def _finish(self, node: StageNode, meta: dict[str, Any], data: Any) -> None:
        self.summary.stages_run[node.kind] += 1
        self.summary.hosts[meta["node"]] += 1
        wall = meta.get("wall")
        if wall is not None:
            prev = self.secs.get(node.kind)
            self.secs[node.kind] = wall if prev is None else 0.8 * prev + 0.2 * wall
        if node.kind != "evaluate":
            self._buffer(artifact=(node.key, data))
            if self.remaining[node.key] > 0:
                self.blobs[node.key] = data  # dependents get these bytes from here, not from the store
        self.done[node.key] = meta
        for d in node.deps:
            self._release(d)
        self.progress.stage_finished(node, "done", meta)
        if node.kind == "evaluate":
            row, examples = data
            for cid in node.cells:
                self._buffer(row=self._ok_row(cid, meta, row), examples=examples)
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
                    self._buffer(row={**self._base_row(cid), "status": "failed", "error": err})
            for k in self.dependents[key]:
                stack.append((k, err if s.kind == "evaluate" else f"needs failed {s.kind} stage {key}: {err}"))
        self.ready = [r for r in self.ready if r[2] not in self.failed]
        heapq.heapify(self.ready)

    def _fail_all_pending(self, error: str) -> None:
        for s in self.plan.stages.values():
            if s.kind == "evaluate" and s.key not in self.done and s.key not in self.failed:
                self._fail(s, error)
        self.ready.clear()

    # commits --------------------------------------------------------------------------------------
    def _buffer(self, artifact: tuple[str, bytes] | None = None, row: dict[str, Any] | None = None,
                examples: Any = None) -> None:
        if artifact is not None:
            self.buf_artifacts.append(artifact)
        if row is not None:
            self.buf_rows.append(row)
            self.buf_examples.append(examples)
        if self.buf_since is None:
            self.buf_since = time.time()

    def _maybe_flush(self) -> None:
        if self.buf_since is not None and (time.time() - self.buf_since >= FLUSH_SECONDS
                                           or len(self.buf_rows) >= FLUSH_CELLS):
            self.flush()

    def flush(self) -> None:
        """Commit the buffered artifacts and cells in one group write; only then do cells count as finished."""
        if self.buf_since is None:
            return
        rows, examples, artifacts = self.buf_rows, self.buf_examples, self.buf_artifacts
        self.buf_rows, self.buf_examples, self.buf_artifacts, self.buf_since = [], [], [], None
        if rows:
            _write_cells(self.store, self.spec.name, rows, examples, artifacts,
                         committed=self.summary.cells_ok + self.summary.cells_failed)
        else:
            self.store.write_artifacts(artifacts)
        for r in rows:
            if r["status"] == "ok":
                self.summary.cells_ok += 1
            else:
                self.summary.cells_failed += 1
                self.summary.failures.append((r["cell_id"], r["error"]))
            self.progress.cell_finished(r["cell_id"], r["status"], r)

    # rows -----------------------------------------------------------------------------------------
    def _base_row(self, cid: str) -> dict[str, Any]:
        cell = self.cells[cid]
        c = config_dict(cell.cfg)
        row = {k: c[k] for k in ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots",
                                 "seed", "backend")}
        row.update(cell_id=cid, dataset=c["dataset"], n_train=c["n_train"], n_test=c["n_test"],
                   params=json.dumps(c["params"], sort_keys=True), code_version=self.code_version,
                   run_id=self.run_id, ray_job_id=self.job_id, finished_at=datetime.now(timezone.utc))
        for kind, key in cell.keys.items():
            row[f"{kind}_key"] = key
            meta = self.done.get(key)
            if meta:
                row[f"{kind}_host"], row[f"{kind}_node"] = meta.get("host"), meta.get("node")
        return row

    def _ok_row(self, cid: str, meta: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        return {**row, **self._base_row(cid), "status": "ok", "error": None, "host": meta["host"],
                "evaluate_host": meta["host"], "evaluate_node": meta["node"]}


KILL_AFTER_ENV = "QMU_TEST_KILL_AFTER_CELLS"


def _write_cells(store: ResultStore, grid: str, rows: list[dict[str, Any]], examples: list[Any],
                 artifacts: list[tuple[str, bytes]], committed: int) -> None:
    """One group write of cells. With QMU_TEST_KILL_AFTER_CELLS=N (for the kill-and-resume test) the driver
    SIGKILLs itself right after its Nth cell is committed; a group that would pass N is cut there, so the kill
    point does not depend on how the cells happened to be batched."""
    left = int(os.environ.get(KILL_AFTER_ENV) or 0) - committed
    if not 0 < left <= len(rows):
        store.write_batch(grid, rows, examples, artifacts)
        return
    store.write_batch(grid, rows[:left], examples[:left], artifacts)
    os.kill(os.getpid(), signal.SIGKILL)


def load_impl(impl: str) -> Any:
    return importlib.import_module(impl)


def impl_catalog(impl: str) -> dict[str, Any] | None:
    """What the workload's registries say of its methods and attacks (labels, order, columns), for the
    manifest: reports read their vocabulary from the store, never from the workload."""
    fn = getattr(load_impl(impl), "catalog", None)
    return fn() if fn else None


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
    todo = {c.cell_id for c in full.cells if statuses.get(c.cell_id) != "ok"}
    return _subset(full, todo), [c.cell_id for c in full.cells], cv


def _subset(plan: Plan, keep: set[str]) -> Plan:
    """The part of `plan` that cells `keep` need (the same stages and keys, without hashing again)."""
    if len(keep) == len(plan.cells):
        return plan
    cells: list[PlannedCell] = [c for c in plan.cells if c.cell_id in keep]
    needed = {k for c in cells for k in c.keys.values()}
    stages = {k: replace(n, cells=[c for c in n.cells if c in keep]) for k, n in plan.stages.items() if k in needed}
    return Plan(cells, stages)


def run_grid(spec: GridSpec, store: ResultStore, *, workers: int | None = None, impl: str = DEFAULT_IMPL,
             progress: Progress | None = None, max_retries: int = 2, address: str | None = None,
             compact: bool | None = None) -> RunSummary:
    """Run (or resume) every cell of `spec` not yet ok in `store`; then compact the grid's files (by default
    when it has at least COMPACT_MIN_FILES pending files).

    Ray is joined (see `connect`) only when there is work, so a finished grid re-runs in about a second.
    """
    t0 = time.time()
    progress = progress or NullProgress()
    plan, all_ids, cv = plan_grid(spec, store, impl)
    if plan.cells:  # before anything is written: a cluster that cannot run the code is bad input
        connect(address, workers)
        if address:
            print(f"joined {check_cluster(impl, cv)}", flush=True)
    store.clean_temp()
    store.write_manifest(spec.name, {"grid": spec.name, "path": spec.path, "cells": all_ids,
                                     "code_version": cv, "written_at": datetime.now(timezone.utc).isoformat(),
                                     "fingerprint": spec.fingerprint, "catalog": impl_catalog(impl),
                                     "verdicts": spec.verdicts, "source_commit": source_commit()})
    summary = RunSummary(grid=spec.name, cells_total=len(all_ids), cells_skipped=len(all_ids) - len(plan.cells))
    progress.start(spec.name, len(all_ids), summary.cells_skipped, plan)
    if plan.cells:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        pool = _Pool(min(n, len(plan.stages)), impl)
        driver = _Driver(spec, plan, store, cv, progress, max_retries, summary)
        driver.t_start = t0
        try:
            driver.run(pool)
        finally:
            pool.shutdown()
    summary.run_seconds = time.time() - t0
    if compact or (compact is None and len(store.grid_files(spec.name).pending_cells) >= COMPACT_MIN_FILES):
        summary.compacted = store.compact(spec.name)["absorbed"]
    summary.wall_seconds = time.time() - t0
    progress.close(summary)
    return summary
