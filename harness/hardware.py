"""Hardware evaluation through a job ledger (`qmu hw ...`, and `qmu run` on ibm: backends).

Training and unlearning always run on the simulator (torch, the same stages and artifacts as `qmu run`).
What goes to the device is evaluation: the attack's queries of the original model and the evaluation
outputs of the unlearned model. `submit` runs the simulator stages, captures the backend queries that the
attack and evaluate stages make (`workloads.quantum.backends.query_hook`), submits them as sampler jobs in Batch
mode and records every job id in the ledger *before* waiting. Cells are admitted in grid order while their
estimated QPU seconds fit the budget; the rest are stored as `budget_skipped` rows (the estimate in `error`)
and are submitted by a later call with a larger budget. `collect` (any later process, any day)
fetches finished jobs, replays the attack and evaluate stages on the measured bits and stores the cell
rows through the result store.

Ledger layout under the results root (JSON and npz, written atomically through the store):

    hw/jobs/<job_id>.json                 job: backend, stage, cells, shots, circuits, tags, status, reason, usage
    hw/results/<job_id>.npz               measured bits per PUB: the service's retained result (for local
                                          fake/aer jobs, written when the job finishes inside `submit`)
    hw/cells/grid=<name>/<cell_id>.json   cell: config, stage keys, its attack and evaluate job ids, state
    hw/stages/<attack_key>.json           the job that serves a shared attack stage

The token never reaches the ledger: only names, ids, counts and scrubbed error texts are written.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pyarrow.fs as pafs

from .grid_spec import GridSpec
from .identity import cell_id, config_dict, source_commit, stage_keys
from .store import ResultStore

ROOT = "hw"
DEFAULT_MAX_QPU_SECONDS = 60.0
PENDING, DONE, FAILED = "pending", "done", "failed"


def _say(line: str) -> None:
    """Print a progress line now, also when stdout is a file or a pipe."""
    print(line, flush=True)


class LedgerError(ValueError):
    """A ledger file that cannot be read back; str() names the file (the CLI exits 2)."""


def _catalog() -> dict[str, Any]:
    from workloads.stages import catalog

    return catalog()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """JSON records and result arrays under `<results>/hw`, through the store's filesystem."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def _p(self, *parts: str) -> str:
        return self.store._p(ROOT, *parts)

    def _write_json(self, path: str, obj: dict[str, Any]) -> None:
        self.store._write(path, json.dumps(obj, sort_keys=True, indent=1, default=str).encode())

    def _read_json(self, path: str) -> dict[str, Any] | None:
        if not self.store.exists(path):
            return None
        with self.store.fs.open_input_stream(path) as f:
            data = f.read()
        try:
            rec = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LedgerError(f"{path}: corrupt ledger record ({e}); restore it from a backup, or delete it "
                              "and resubmit the cells it belonged to") from None
        if not isinstance(rec, dict):
            raise LedgerError(f"{path}: corrupt ledger record (expected a JSON object)")
        return rec

    def exists(self) -> bool:
        """Whether any job was ever recorded here."""
        return bool(self._list("jobs"))

    def _list(self, *parts: str, suffix: str = ".json") -> list[str]:
        sel = pafs.FileSelector(self._p(*parts), allow_not_found=True, recursive=True)
        return sorted(i.path for i in self.store.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
                      and not i.base_name.startswith(".tmp-"))

    # jobs ----------------------------------------------------------------------------------------
    def put_job(self, rec: dict[str, Any]) -> None:
        self._write_json(self._p("jobs", f"{rec['job_id']}.json"), rec)

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self._read_json(self._p("jobs", f"{job_id}.json"))

    def jobs(self) -> list[dict[str, Any]]:
        out = [self._read_json(p) for p in self._list("jobs")]
        return sorted((r for r in out if r is not None), key=lambda r: r.get("submitted_at", ""))

    def put_result(self, job_id: str, pubs: list[tuple[np.ndarray, int]]) -> None:
        buf = io.BytesIO()
        arrays = {f"bits_{i}": a for i, (a, _) in enumerate(pubs)}
        np.savez_compressed(buf, num_bits=np.array([nb for _, nb in pubs], dtype=np.int64), **arrays)
        self.store._write(self._p("results", f"{job_id}.npz"), buf.getvalue())

    def has_result(self, job_id: str) -> bool:
        return self.store.exists(self._p("results", f"{job_id}.npz"))

    def result(self, job_id: str) -> list[tuple[np.ndarray, int]]:
        with self.store.fs.open_input_stream(self._p("results", f"{job_id}.npz")) as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
            nbits = data["num_bits"]
            return [(data[f"bits_{i}"], int(nb)) for i, nb in enumerate(nbits)]

    # cells and shared stages ---------------------------------------------------------------------
    def put_cell(self, rec: dict[str, Any]) -> None:
        self._write_json(self._p("cells", f"grid={rec['grid']}", f"{rec['cell_id']}.json"), rec)

    def cell(self, grid: str, cid: str) -> dict[str, Any] | None:
        return self._read_json(self._p("cells", f"grid={grid}", f"{cid}.json"))

    def cells(self, grid: str | None = None) -> list[dict[str, Any]]:
        parts = ("cells", f"grid={grid}") if grid else ("cells",)
        return [r for r in (self._read_json(p) for p in self._list(*parts)) if r is not None]

    def put_stage(self, key: str, rec: dict[str, Any]) -> None:
        self._write_json(self._p("stages", f"{key}.json"), rec)

    def stage(self, key: str) -> dict[str, Any] | None:
        return self._read_json(self._p("stages", f"{key}.json"))


# ------------------------------------------------------------------------------------------------------
# planning and estimates


def _workload():
    import workloads
    from workloads import stages as wc

    return wc, workloads.code_version()


@dataclass
class CellPlan:
    cell_id: str
    cfg: Any
    keys: dict[str, str]
    state: str  # "ok" (stored), "pending" (jobs in flight), "submit" (to submit), "resubmit" (failed before)
    reason: str | None = None


def plan_cells(spec: GridSpec, store: ResultStore, ledger: Ledger) -> list[CellPlan]:
    """Every cell of the grid with what submit would do with it."""
    wc, cv = _workload()
    statuses = store.cell_statuses(spec.name)
    out = []
    for cfg in spec.cells(wc.CellConfig):
        cid = cell_id(spec.name, cfg)
        keys = stage_keys(wc.stage_specs(cfg), cv)
        if statuses.get(cid) == "ok":
            out.append(CellPlan(cid, cfg, keys, "ok"))
            continue
        rec = ledger.cell(spec.name, cid)
        if rec is None:
            out.append(CellPlan(cid, cfg, keys, "submit"))
        elif rec["state"] == FAILED:
            out.append(CellPlan(cid, cfg, keys, "resubmit", rec.get("reason")))
        elif rec["state"] == DONE:  # collected but the row is gone (store cleared): submit again
            out.append(CellPlan(cid, cfg, keys, "submit"))
        else:
            out.append(CellPlan(cid, cfg, keys, "pending"))
    return out


def attack_circuits(cfg: Any) -> int:
    """Samples the attack stage queries on the device (the workload knows which)."""
    from workloads.stages import query_counts

    return query_counts(cfg)["attack"]


def evaluate_circuits(cfg: Any) -> int:
    """Samples one evaluation queries: train, test and the scored P_eval non-members (each up to n_eval)."""
    from workloads.stages import query_counts

    return query_counts(cfg)["evaluate"]


@dataclass
class CellEstimate:
    cell_id: str
    cfg: Any
    circuits: int
    shots: int
    jobs: int
    qpu_seconds: float
    two_qubit_gates: int
    depth: int


def estimate(plans: list[CellPlan], level: int | None = None, seen: set[str] | None = None) -> list[CellEstimate]:
    """Circuits, shots and estimated QPU seconds per cell; a shared attack stage is counted once, on the
    first cell that needs it (attack keys in `seen` are already paid for)."""
    from workloads.quantum import backends as wb
    from workloads.models import measured_circuit

    seen_attacks: set[str] = set(seen or ())
    out = []
    for p in plans:
        cfg = p.cfg
        t = wb.transpile_measured(measured_circuit(cfg.model), estimate_target(cfg.backend), level)
        n, jobs = evaluate_circuits(cfg), 1
        if p.keys["attack"] not in seen_attacks:
            seen_attacks.add(p.keys["attack"])
            n, jobs = n + attack_circuits(cfg), 2
        shots = int(cfg.eval_shots or 0)
        qpu = wb.qpu_seconds_estimate(estimate_target(cfg.backend), n, shots, jobs, t)
        out.append(CellEstimate(p.cell_id, cfg, n, n * shots, jobs, qpu, t.two_qubit_gates, t.depth))
    return out


def estimate_target(backend: str) -> str:
    """The backend to transpile against for an estimate (a hardware backend may name a stand-in)."""
    from workloads.quantum import backends as wb

    stand_in = getattr(wb.kind(backend), "stand_in", None)
    return stand_in(backend) if stand_in is not None else backend


# ------------------------------------------------------------------------------------------------------
# simulator stages (train, unlearn) with artifacts shared with `qmu run`


def _stage_state(store: ResultStore, key: str, run: Callable[[], Any], kind: str) -> tuple[dict, dict]:
    """(state, cost) of a simulator stage: the stored artifact, else run it and store it like the runner."""
    from workloads.serialize import dumps, loads

    if store.has_artifact(key):
        state, meta = loads(store.read_artifact(key))
        return state, json.loads(meta.get("qmu", "{}")).get("cost", {})
    t0 = time.time()
    res = run()
    cost = {k: float(v) for k, v in res.cost.items() if v is not None}
    meta = {"kind": kind, "cost": cost, "host": socket.gethostname(), "pid": os.getpid(), "node": "hw-driver",
            "started": t0, "wall": time.time() - t0}
    store.write_artifact(key, dumps(res.state, {"qmu": json.dumps(meta, sort_keys=True)}))
    return res.state, cost


# ------------------------------------------------------------------------------------------------------
# submit


@dataclass
class _Captured:
    queries: list[Any] = field(default_factory=list)

    def __call__(self, q: Any) -> Any:
        from workloads.quantum.backends import QueryResult

        self.queries.append(q)
        n = len(q.values)
        return QueryResult(np.zeros((n, len(q.circuit.observables))), {"circuits": float(n), "shots": float(n * q.shots)})


@dataclass
class SubmitSummary:
    submitted_jobs: list[str] = field(default_factory=list)
    cells_submitted: int = 0
    cells_skipped_ok: int = 0
    cells_pending: int = 0
    cells_budget_skipped: int = 0
    qpu_seconds_est: float = 0.0


class BudgetExceeded(ValueError):
    """Not one cell fits the QPU budget (the CLI exits 2; nothing is submitted or stored)."""


def fit_budget(plans: list[CellPlan], level: int | None, budget: float
               ) -> tuple[list[CellPlan], list[tuple[CellPlan, float]]]:
    """(cells admitted in grid order while their estimates fit `budget`, [(cell, estimate) left out])."""
    paid: set[str] = set()  # attack stages already carried by an admitted cell
    fit, skipped, used = [], [], 0.0
    for p in plans:
        e = estimate([p], level, seen=paid)[0].qpu_seconds
        if used + e <= budget:
            fit.append(p)
            used += e
            paid.add(p.keys["attack"])
        else:
            skipped.append((p, e))
    return fit, skipped


def _store_budget_skipped(store: ResultStore, grid: str, p: CellPlan, cv: str, est: float, budget: float) -> None:
    """A `budget_skipped` row: the cell was not submitted; a later submit with a larger budget runs it."""
    c = config_dict(p.cfg)
    row = {k: c.get(k) for k in ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots",
                                 "seed", "backend", "dataset", "n_train", "n_test", "n_eval")}
    row.update(params=json.dumps(c.get("params") or {}, sort_keys=True), code_version=cv, status="budget_skipped",
               error=f"estimated {est:.1f} QPU seconds does not fit what is left of --max-qpu-seconds {budget:g}; "
                     "submit again with a larger budget", qpu_seconds_est=float(est), host=socket.gethostname(),
               **{f"{k}_key": v for k, v in p.keys.items()})
    store.write_cell(grid, p.cell_id, row, None)


def submit(spec: GridSpec, store: ResultStore, *, max_qpu_seconds: float = DEFAULT_MAX_QPU_SECONDS,
           level: int | None = None, tags: tuple[str, ...] = (), echo: Callable[[str], None] = _say) -> SubmitSummary:
    """Submit the grid's cells that are neither stored nor in flight; returns after recording every job."""
    from workloads.quantum import backends as wb
    from workloads.models import measured_circuit

    wc, cv = _workload()
    ledger = Ledger(store)
    plans = plan_cells(spec, store, ledger)
    summary = SubmitSummary(cells_skipped_ok=sum(p.state == "ok" for p in plans),
                            cells_pending=sum(p.state == "pending" for p in plans))
    todo = [p for p in plans if p.state in ("submit", "resubmit")]
    if not todo:
        echo(f"{spec.name}: nothing to submit ({summary.cells_skipped_ok} stored, {summary.cells_pending} in flight)")
        return summary
    for b in sorted({p.cfg.backend for p in todo}):
        if wb.kind(b).HARDWARE:
            wb.require_credentials(b)  # before any work
    todo, skipped = fit_budget(todo, level, max_qpu_seconds)
    if not todo:
        cheapest = min(e for _, e in skipped)
        raise BudgetExceeded(f"the cheapest cell needs an estimated {cheapest:.0f} QPU seconds, more than "
                             f"--max-qpu-seconds {max_qpu_seconds:g}; raise the limit to submit (nothing was "
                             "submitted; `qmu hw estimate GRID` lists every cell's estimate)")
    # 1. simulator stages and captured queries, for every cell, before anything is submitted
    work = []  # (plan, attack queries to submit with this cell or None, evaluate queries)
    attacks: dict[str, Any] = {}  # attack key -> captured attack stage (its state lets evaluate run)
    echo(f"{spec.name}: preparing {len(todo)} cells on the simulator (train, unlearn, attack queries)")
    t_prep = time.time()
    for i, p in enumerate(todo, 1):
        cfg = p.cfg
        original, c_train = _stage_state(store, p.keys["train"], lambda: wc.train_stage(cfg), "train")
        unlearned, c_unl = _stage_state(store, p.keys["unlearn"], lambda: wc.unlearn_stage(cfg, original), "unlearn")
        akey = p.keys["attack"]
        aq = None
        if akey not in attacks:
            cap = _Captured()
            with wb.query_hook(cap):
                attacks[akey] = wc.attack_stage(cfg, original)
            prev = ledger.stage(akey)
            prev_job = ledger.job(prev["job_id"]) if prev else None
            if prev_job is None or _job_state(ledger, prev_job) == FAILED:
                aq = cap.queries  # the first cell that needs this attack carries its job
        att = attacks[akey]
        cap_e = _Captured()
        with wb.query_hook(cap_e):
            wc.evaluate_stage(cfg, original, unlearned, att.state,
                              costs={"train": c_train, "unlearn": c_unl, "attack": att.cost})
        work.append((p, aq, cap_e.queries))
        echo(f"prepared {i}/{len(todo)} {p.cell_id} ({cfg.model} {cfg.method} shots={cfg.eval_shots}) "
             f"[{time.time() - t_prep:.0f} s]")
    # the exact estimate from the captured queries: cells past the budget (from the end) are skipped too
    costs = []
    for p, aq, eq in work:
        t = wb.transpile_measured(measured_circuit(p.cfg.model), p.cfg.backend, level)
        costs.append(sum(wb.qpu_seconds_estimate(p.cfg.backend, sum(len(q.values) for q in qs), qs[0].shots, 1, t)
                         for qs in (aq, eq) if qs))
    while work and sum(costs) > max_qpu_seconds:
        skipped.insert(0, (work.pop()[0], costs.pop()))
    if not work:
        raise BudgetExceeded(f"the captured queries need more than --max-qpu-seconds {max_qpu_seconds:g} "
                             "(nothing was submitted)")
    summary.qpu_seconds_est = float(sum(costs))
    n_jobs = sum(bool(aq) + bool(eq) for _, aq, eq in work)
    n_circ = sum(len(q.values) for _, aq, eq in work for q in (aq or []) + eq)
    echo(f"{spec.name}: submitting {n_jobs} jobs for {len(work)} cells: {n_circ:,} circuits, estimated "
         f"{summary.qpu_seconds_est:.1f} QPU seconds")
    progress = _Progress(n_jobs, n_circ, echo)
    for p, est_s in skipped:
        _store_budget_skipped(store, spec.name, p, cv, est_s, max_qpu_seconds)
    summary.cells_budget_skipped = len(skipped)

    # 2. submit, one job per stage (its queries are the job's PUBs), Batch mode per backend
    batches: dict[Any, Any] = {}
    attack_jobs: dict[str, str] = {}
    try:
        for p, aq, eq in work:
            cfg = p.cfg
            t = wb.transpile_measured(measured_circuit(cfg.model), cfg.backend, level)
            base_tags = ("qmu", f"grid:{spec.name}", *tags)
            akey = p.keys["attack"]
            if aq:
                attack_jobs[akey] = _submit_job(ledger, batches, spec.name, cfg, t, aq, "attack", akey,
                                                [c.cell_id for c in todo if c.keys["attack"] == akey],
                                                base_tags, progress)
                ledger.put_stage(akey, {"job_id": attack_jobs[akey], "backend": cfg.backend})
                summary.submitted_jobs.append(attack_jobs[akey])
            a_job = attack_jobs.get(akey) or ledger.stage(akey)["job_id"]
            e_job = _submit_job(ledger, batches, spec.name, cfg, t, eq, "evaluate", p.keys["evaluate"], [p.cell_id],
                                base_tags, progress)
            summary.submitted_jobs.append(e_job)
            ledger.put_cell({
                "grid": spec.name, "cell_id": p.cell_id, "cfg": config_dict(cfg), "keys": p.keys, "code_version": cv,
                "backend": cfg.backend, "state": PENDING, "reason": None, "attack_job": a_job, "evaluate_job": e_job,
                "optimization_level": t.optimization_level, "submitted_at": _now(),
                "attempts": (ledger.cell(spec.name, p.cell_id) or {}).get("attempts", 0) + 1,
            })
            summary.cells_submitted += 1
            echo(f"submitted {p.cell_id} ({cfg.model} {cfg.method} shots={cfg.eval_shots} {cfg.backend}): "
                 f"jobs {a_job} {e_job}")
    finally:
        _close_batches(ledger, batches, summary.submitted_jobs, echo)
    store.write_manifest(spec.name, {"grid": spec.name, "path": spec.path, "cells": [p.cell_id for p in plans],
                                     "code_version": cv, "written_at": _now(), "hardware": True,
                                     "catalog": _catalog(), "verdicts": spec.verdicts,
                                     "source_commit": source_commit()})
    return summary


class _Progress:
    """What submit prints as it goes: jobs submitted, circuits done (local jobs finish in-process)."""

    def __init__(self, jobs: int, circuits: int, echo: Callable[[str], None]) -> None:
        self.jobs, self.circuits, self.echo = jobs, circuits, echo
        self.submitted = self.done = 0
        self.t0 = time.time()
        self.warned: set[str] = set()

    def job(self, rec: dict[str, Any], finished: bool) -> None:
        self.submitted += 1
        n = sum(rec["circuits"])
        self.done += n if finished else 0
        what = f"done, {self.done:,}/{self.circuits:,} circuits" if finished else "submitted"
        self.echo(f"job {self.submitted}/{self.jobs} {rec['job_id']} ({rec['stage']}, {n:,} circuits x "
                  f"{rec['shots']} shots, est {rec['qpu_seconds_est']:.1f} QPU s): {what} "
                  f"[{time.time() - self.t0:.0f} s]")

    def warn(self, error: str | None) -> None:
        """Print each distinct QPU-accounting error once."""
        if error and error not in self.warned:
            self.warned.add(error)
            self.echo(f"warning: {error}")


def _join(*errors: str | None) -> str | None:
    """The distinct messages of already-joined error strings (a batch's close error sits on both jobs of a cell)."""
    kept = list(dict.fromkeys(part for e in errors if e for part in e.split("; ")))
    return "; ".join(kept) if kept else None


def _close_batches(ledger: Ledger, batches: dict, job_ids: list[str], echo: Callable[[str], None]) -> None:
    """Close every batch; a failed close is recorded on the jobs submitted in it and printed once."""
    for target, batch in batches.items():
        try:
            batch.close()
        except Exception as e:  # noqa: BLE001 -- recorded, never silent
            from workloads.quantum.backends import scrub

            error = f"closing the batch on {target} failed: {scrub(f'{type(e).__name__}: {e}')}"
            echo(f"warning: {error}")
            for job_id in job_ids:
                rec = ledger.job(job_id)
                if rec is not None and rec["backend"] == target:
                    rec["qpu_seconds_error"] = _join(rec.get("qpu_seconds_error"), error)
                    ledger.put_job(rec)


def _submit_job(ledger: Ledger, batches: dict, grid: str, cfg: Any, t: Any, queries: list[Any], kind: str,
                key: str, cells: list[str], tags: tuple[str, ...], progress: _Progress) -> str:
    """Submit one stage's queries as one sampler job; record it; for local backends, retain its result."""
    from workloads.quantum import backends as wb

    shots = queries[0].shots
    backend = cfg.backend
    local = wb.is_local(backend)
    est = wb.qpu_seconds_estimate(backend, sum(len(q.values) for q in queries), shots, 1, t)
    delay_error = wb.rep_delay(backend)[1]
    progress.warn(delay_error)
    job_tags = [*tags, f"stage:{kind}"]
    mode = None
    if not local:  # the service's Batch mode; local jobs run in this process
        from qiskit_ibm_runtime import Batch

        if backend not in batches:
            try:
                batches[backend] = Batch(backend=wb.get_backend(backend))
            except Exception as e:  # noqa: BLE001
                raise wb.BackendError(f"{backend}: cannot open a batch: {wb.scrub(f'{type(e).__name__}: {e}')}") from None
        mode = batches[backend]
    sampler = wb.make_sampler(backend, shots, queries[0].seed, t, mode=mode)
    if not local:
        sampler.options.environment.job_tags = job_tags
    try:
        job = sampler.run([(t.isa, q.values) for q in queries], shots=shots)
        job_id = str(job.job_id())
    except Exception as e:  # noqa: BLE001
        raise wb.BackendError(f"{backend}: submit failed: {wb.scrub(f'{type(e).__name__}: {e}')}") from None
    rec = {
        "job_id": job_id, "grid": grid, "backend": backend, "stage": kind, "stage_key": key, "cells": cells,
        "shots": shots, "circuits": [len(q.values) for q in queries], "seeds": [q.seed for q in queries],
        "values_sums": [float(np.sum(q.values)) for q in queries], "tags": job_tags, "local": local,
        "pid": os.getpid(), "host": socket.gethostname(), "submitted_at": _now(), "status": PENDING,
        "reason": None, "qpu_seconds": None, "qpu_seconds_est": est, "qpu_seconds_error": delay_error,
        "transpile": {"depth": t.depth, "two_qubit_gates": t.two_qubit_gates, "active_qubits": t.active_qubits,
                      "optimization_level": t.optimization_level, "seed_transpiler": t.seed_transpiler,
                      "duration_s": t.duration_s},
        "device": wb.device_info(backend),
    }
    ledger.put_job(rec)  # recorded before waiting
    if local:  # the fake/aer "service" retains the result; remote jobs are fetched by collect
        _finish_job(ledger, rec, job)
    progress.job(rec, finished=local)
    return job_id


def _finish_job(ledger: Ledger, rec: dict[str, Any], job: Any) -> None:
    """Wait for `job`, retain its bits in the ledger and mark it done, or failed with the reason."""
    from workloads.quantum import backends as wb

    try:
        result = job.result()
        pubs = [wb.pub_bits(r) for r in result]
    except Exception as e:  # noqa: BLE001
        rec.update(status=FAILED, reason=wb.scrub(f"{type(e).__name__}: {e}")[:2000], finished_at=_now())
        ledger.put_job(rec)
        return
    ledger.put_result(rec["job_id"], pubs)
    # QPU time is what the service reported, else unknown (None); local simulators report none
    usage, error = (None, None) if rec["local"] else wb.job_usage(job)
    rec.update(status=DONE, reason=None, finished_at=_now(), qpu_seconds=usage,
               qpu_seconds_error=_join(rec.get("qpu_seconds_error"), error))
    ledger.put_job(rec)
    if error:
        print(f"warning: {error}", flush=True)


# ------------------------------------------------------------------------------------------------------
# job state, collect


def _job_state(ledger: Ledger, rec: dict[str, Any], refresh: bool = True) -> str:
    """pending | done | failed, refreshing from the service (ibm) or the retained result (local)."""
    from workloads.quantum import backends as wb

    if rec["status"] in (DONE, FAILED):
        if rec["status"] == DONE and not ledger.has_result(rec["job_id"]) and rec["local"]:
            rec.update(status=FAILED, reason="retained result missing from the ledger")
            ledger.put_job(rec)
        return rec["status"]
    if rec["local"]:
        if ledger.has_result(rec["job_id"]):
            rec.update(status=DONE, finished_at=_now(), qpu_seconds=None)
            ledger.put_job(rec)
            return DONE
        if rec.get("host") == socket.gethostname() and rec["pid"] != os.getpid() and _pid_alive(rec["pid"]):
            return PENDING
        rec.update(status=FAILED, reason="lost: the local job ended with its driver before it finished; resubmit")
        ledger.put_job(rec)
        return FAILED
    if not refresh:
        return PENDING
    service = wb.runtime_service()
    try:
        job = service.job(rec["job_id"])
        st = job.status()
        st = getattr(st, "name", str(st)).upper()
    except Exception as e:  # noqa: BLE001
        raise wb.BackendError(f"cannot query job {rec['job_id']}: {wb.scrub(f'{type(e).__name__}: {e}')}") from None
    if st in ("DONE", "COMPLETED"):
        _finish_job(ledger, rec, job)
        return rec["status"]
    if st in ("ERROR", "CANCELLED", "FAILED"):
        try:
            msg = job.error_message() or st.lower()
        except Exception:  # noqa: BLE001
            msg = st.lower()
        rec.update(status=FAILED, reason=f"{st.lower()}: {wb.scrub(str(msg))}"[:2000], finished_at=_now())
        rec["qpu_seconds"], error = wb.job_usage(job)
        rec["qpu_seconds_error"] = _join(rec.get("qpu_seconds_error"), error)
        if error:
            print(f"warning: {error}", flush=True)
        ledger.put_job(rec)
        return FAILED
    return PENDING


class _Replay:
    """Query hook that answers a stage's queries, in order, from one finished job's retained bits."""

    def __init__(self, rec: dict[str, Any], pubs: list[tuple[np.ndarray, int]]) -> None:
        self.rec, self.pubs, self.i = rec, pubs, 0

    def __call__(self, q: Any) -> Any:
        from workloads.quantum import backends as wb

        i = self.i
        self.i += 1
        if i >= len(self.pubs) or len(q.values) != self.rec["circuits"][i]:
            raise RuntimeError(f"job {self.rec['job_id']} does not match the stage's query {i} "
                               f"({len(q.values)} circuits); was the code changed between submit and collect?")
        ref = self.rec["values_sums"][i]
        if not math.isclose(float(np.sum(q.values)), ref, rel_tol=1e-6, abs_tol=1e-6):
            raise RuntimeError(f"job {self.rec['job_id']}: parameters of query {i} differ from the submitted ones")
        packed, nb = self.pubs[i]
        z = wb.z_from_bits(packed, nb, q.circuit.observables)
        est = self.rec.get("qpu_seconds_est", 0.0) if i == 0 else 0.0
        tr = self.rec["transpile"]
        dev = self.rec["device"]
        cost = {"circuits": float(len(q.values)), "shots": float(len(q.values) * q.shots),
                "qpu_seconds_est": est, "transpiled_depth": tr["depth"], "two_qubit_gates": tr["two_qubit_gates"],
                "calibration_time": dev["calibration_time"], "job_ids": [self.rec["job_id"]],
                "backend_version": dev["backend_version"]}
        usage = self.rec.get("qpu_seconds")
        if usage is not None:  # unknown QPU time is left out, never counted as 0 (the row's value is set below)
            cost["qpu_seconds"] = usage if i == 0 else 0.0
        return wb.QueryResult(z, cost)


@dataclass
class CollectSummary:
    stored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def collect(store: ResultStore, grid: str | None = None, echo: Callable[[str], None] = _say) -> CollectSummary:
    """Store the rows of every submitted cell whose jobs have finished; mark cells of failed jobs failed."""
    from workloads.quantum import backends as wb
    from workloads.serialize import loads

    wc, _ = _workload()
    ledger = Ledger(store)
    out = CollectSummary()
    for rec in ledger.cells(grid):
        if rec["state"] != PENDING:
            continue
        a = ledger.job(rec["attack_job"])
        e = ledger.job(rec["evaluate_job"])
        states = [_job_state(ledger, j) if j else FAILED for j in (a, e)]
        if FAILED in states:
            bad = a if states[0] == FAILED else e
            reason = f"job {bad['job_id'] if bad else '?'} failed: {(bad or {}).get('reason') or 'missing from ledger'}"
            rec.update(state=FAILED, reason=reason)
            ledger.put_cell(rec)
            store.write_cell(rec["grid"], rec["cell_id"], {**_base_row(rec), "status": "failed", "error": reason}, None)
            out.failed.append((rec["cell_id"], reason))
            echo(f"failed {rec['cell_id']}: {reason}")
            continue
        if PENDING in states:
            out.pending.append(rec["cell_id"])
            continue
        cfg = _cfg(wc, rec["cfg"])
        original, _ = loads(store.read_artifact(rec["keys"]["train"]))
        unlearned, _ = loads(store.read_artifact(rec["keys"]["unlearn"]))
        costs = {k: json.loads(store.artifact_metadata(rec["keys"][k]).get("qmu", "{}")).get("cost", {})
                 for k in ("train", "unlearn")}
        with wb.query_hook(_Replay(a, ledger.result(a["job_id"]))):
            att = wc.attack_stage(cfg, original)
        with wb.query_hook(_Replay(e, ledger.result(e["job_id"]))):
            row, examples = wc.evaluate_stage(cfg, original, unlearned, att.state, costs={**costs, "attack": att.cost})
        row = {**row, **_base_row(rec), **_provenance(a, e), "status": "ok", "error": None}
        store.write_cell(rec["grid"], rec["cell_id"], row, examples)
        rec.update(state=DONE, reason=None, collected_at=_now())
        ledger.put_cell(rec)
        out.stored.append(rec["cell_id"])
        echo(f"stored {rec['cell_id']} ({cfg.model} {cfg.method} shots={cfg.eval_shots} {cfg.backend}): "
             f"mia_success {row['mia_success']:.3f}, acc_test_retain {row['acc_test_retain']:.3f}")
    return out


def _cfg(wc: Any, d: dict[str, Any]) -> Any:
    d = dict(d)
    params = d.pop("params", None)
    cfg = wc.CellConfig(**d)
    return cfg.with_params(params) if params else cfg


def _base_row(rec: dict[str, Any]) -> dict[str, Any]:
    c = rec["cfg"]
    row = {k: c.get(k) for k in ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots",
                                 "seed", "backend", "dataset", "n_train", "n_test", "n_eval")}
    row.update(params=json.dumps(c.get("params") or {}, sort_keys=True), code_version=rec["code_version"],
               host=socket.gethostname(), finished_at=datetime.now(timezone.utc), hw_submitted_at=rec["submitted_at"],
               optimization_level=rec.get("optimization_level"))
    for kind, key in rec["keys"].items():
        row[f"{kind}_key"] = key
    return row


def _provenance(a: dict[str, Any], e: dict[str, Any]) -> dict[str, Any]:
    dev = e["device"]
    used = [j.get("qpu_seconds") for j in (a, e)]
    reported = all(u is not None for u in used) and not e["local"]
    return {
        "job_ids": [a["job_id"], e["job_id"]],
        "backend_name": dev["backend_name"], "backend_version": dev["backend_version"],
        "calibration_time": dev["calibration_time"], "qiskit_ibm_runtime_version": dev["qiskit_ibm_runtime_version"],
        "transpiled_depth": e["transpile"]["depth"], "two_qubit_gates": e["transpile"]["two_qubit_gates"],
        "qpu_seconds": float(sum(used)) if reported else None,  # NULL unless the service reported both jobs
        "qpu_seconds_reported": reported,
        "qpu_seconds_error": _join(a.get("qpu_seconds_error"), e.get("qpu_seconds_error")),
        "qpu_seconds_est": float(a.get("qpu_seconds_est", 0.0) + e.get("qpu_seconds_est", 0.0)),
    }


def job_table(store: ResultStore, grid: str | None = None, refresh: bool = True) -> list[dict[str, Any]]:
    """Every ledger job with its (refreshed) state, for `qmu hw status`."""
    from workloads.quantum import backends as wb

    ledger = Ledger(store)
    rows = []
    for rec in ledger.jobs():
        if grid and rec["grid"] != grid:
            continue
        can_refresh = refresh and (rec["local"] or wb.credentials_source() is not None)
        state = _job_state(ledger, rec, refresh=can_refresh) if (rec["local"] or can_refresh) else rec["status"]
        rows.append({**rec, "status": state})
    return rows
