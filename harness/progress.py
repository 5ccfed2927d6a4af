"""Progress of a run: a rich live display on a terminal, plain timestamped lines in CI logs.

Both name the work: each finished cell as model / forget / method / shots / seed with its two headline
numbers, and the running stages as "train hqnn-l1 seed 0 (12 s)". The ETA is the cost model's estimate of
the work left, scaled by how long the finished stages really took against their estimates, over the
workers in use (or the longest remaining dependency chain, when that is longer).

The runner may hand a worker several stages at once (a batch, and a queued next batch), so a stage counts as
running from the later of its dispatch and the previous finish on the same worker: per worker these busy
times add up to the measured work, which is what the calibration needs.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBar, TextColumn
from rich.text import Text

from .estimate import stage_estimate
from .ui import fmt_duration

# The two numbers a finished cell is summarised by: leakage left on the forget set, utility kept.
HEADLINE = (("mia_success", "MIA success"), ("acc_test_retain", "test acc"))


class Progress:
    """Callbacks of the driver loop; this base class ignores them all."""

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None: ...
    def stage_started(self, node: Any, worker: dict[str, Any]) -> None: ...
    # state: done | failed | reused; meta: the worker's record of a done stage (its wall, its group size)
    def stage_finished(self, node: Any, state: str, meta: dict[str, Any] | None = None) -> None: ...
    def cell_finished(self, cell_id: str, status: str, row: dict[str, Any] | None = None) -> None: ...
    def tick(self) -> None: ...
    def close(self, summary: Any) -> None: ...
    def stop(self) -> None: ...  # Ctrl-C: stop drawing (the caller prints what was kept)


NullProgress = Progress


def _shots(v: Any) -> str:
    return "exact" if v is None else str(v)


def stage_label(kind: str, cfg: Any) -> str:
    """'train hqnn-l1 seed 0', 'reference #1 hqnn-l1 seed 0', 'unlearn ga hqnn-l1 class:4 seed 0',
    'attack shared hqnn-l1 shots 16 seed 0', 'attack forget hqnn-l1 class:4 shots 16 seed 0',
    'evaluate ga hqnn-l1 class:4 shots 16 seed 0'."""
    g = lambda k: getattr(cfg, k, None)  # noqa: E731
    seed = f"seed {g('seed')}"
    if kind in ("train", "reference", "shadow", "replica"):
        parts = ([f"#{g('index')}"] if kind in ("reference", "replica") and g("index") is not None else []) \
            + ([f"x{g('k')}"] if kind == "shadow" else []) + [g("model")] \
            + ([g("forget")] if kind in ("shadow", "replica") else []) \
            + ([f"shots {g('train_shots')}"] if g("train_shots") is not None else []) + [seed]
    elif kind == "ulira":
        parts = [g("method"), g("model"), g("forget"), seed]
    elif kind == "unlearn":
        parts = [g("method"), g("model"), g("forget"), seed]
    elif kind == "attack":  # the shared attack stage serves every forget set
        scope = g("attack_scope")
        parts = ([scope] if scope else []) + [g("model")] + ([] if scope == "shared" else [g("forget")]) \
            + [f"shots {_shots(g('eval_shots'))}", seed]
    else:
        parts = [g("method"), g("model"), g("forget"), f"shots {_shots(g('eval_shots'))}", seed]
    return " ".join([kind, *map(str, parts)])


def cell_label(cfg: Any) -> str:
    """'hqnn-l1 / class:4 / ga / shots 16 / seed 0' (train/unlearn/eval shots when training samples too)."""
    g = lambda k: getattr(cfg, k, None)  # noqa: E731
    trained = g("train_shots") is not None or g("unlearn_shots") is not None
    shots = "/".join(_shots(g(k)) for k in ("train_shots", "unlearn_shots", "eval_shots")) if trained \
        else _shots(g("eval_shots"))
    backend = g("backend")
    extra = f" / {backend}" if backend not in (None, "torch") else ""
    return f"{g('model')} / {g('forget')} / {g('method')} / shots {shots} / seed {g('seed')}{extra}"


def headline(row: dict[str, Any] | None) -> str:
    if not row:
        return ""
    out = []
    for col, name in HEADLINE:
        v = row.get(col)
        ok = isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
        out.append(f"{name} {v:.3f}" if ok else f"{name} NULL")
    return ", ".join(out)


class _Counts(Progress):
    """Bookkeeping shared by the two displays: counts, running stages and the calibrated ETA."""

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None:
        self.grid, self.total, self.t0 = grid, total_cells, time.time()
        self.cells_done, self.cells_failed, self.skipped = skipped, 0, skipped
        self.stages_total, self.stages_done, self.stages_failed = len(plan.stages), 0, 0
        self.cfgs = {c.cell_id: c.cfg for c in plan.cells}
        self.nodes = dict(plan.stages)
        self.running: dict[str, tuple[float, Any]] = {}  # stage key -> (dispatch time, worker id)
        self.free_at: dict[Any, float] = {}  # worker id -> when its last stage finished
        self.seen_workers: set[Any] = set()
        self.left = set(plan.stages)
        self.est = {s.key: stage_estimate(s.kind, s.cfg).seconds + 0.01 for s in plan.stages.values()}
        self.chain = _chains(plan, self.est)
        self.measured: dict[str, float] = {}  # per calibration key: wall of the stages that ran to completion here
        self.estimated: dict[str, float] = {}  # ... and their cost-model estimate

    @property
    def workers(self) -> int:
        return max(1, len(self.seen_workers))

    def _began(self, key: str) -> float:
        """When the stage really started: its dispatch, or the previous finish on its worker if later."""
        t, wid = self.running[key]
        return max(t, self.free_at.get(wid, t))

    def stage_started(self, node: Any, worker: dict[str, Any] | None) -> None:
        wid = (worker or {}).get("pid", node.key)
        self.running[node.key] = (time.time(), wid)
        self.seen_workers.add(wid)

    def stage_finished(self, node: Any, state: str, meta: dict[str, Any] | None = None) -> None:
        if node.key in self.running:
            began = self._began(node.key)
            _, wid = self.running.pop(node.key)
            now = time.time()
            if state == "done":
                k = _calibration_key(node)
                self.measured[k] = self.measured.get(k, 0.0) + now - began
                self.estimated[k] = self.estimated.get(k, 0.0) + self.est.get(node.key, 0.0)
            self.free_at[wid] = now
        self.left.discard(node.key)
        self.stages_failed += state == "failed"
        self.stages_done += 1

    def heads(self) -> dict[Any, str]:
        """Worker -> the stage it is busy with: its earliest-dispatched unfinished one."""
        first: dict[Any, tuple[float, str]] = {}
        for k, (t, wid) in self.running.items():
            if wid not in first or t < first[wid][0]:
                first[wid] = (t, k)
        return {wid: k for wid, (_, k) in first.items()}

    def current(self) -> dict[str, float]:
        """The stage each worker is busy with now -> its start."""
        return {k: self._began(k) for k in self.heads().values()}

    def cell_finished(self, cell_id: str, status: str, row: dict[str, Any] | None = None) -> None:
        self.cells_done += 1
        self.cells_failed += status == "failed"

    def ratio(self, key: str | None = None) -> float | None:
        """Measured over estimated seconds of the finished stages of a calibration key, or of all: how far off
        the cost model is here. The model can be off by different factors per kind (an attack 4x, a training
        0.7x)."""
        keys = [k for k in self.measured if key is None or k == key]
        e = sum(self.estimated[k] for k in keys)
        return sum(self.measured[k] for k in keys) / e if e > 0 else None

    def eta(self) -> str:
        """'eta 1m20s' once a stage has been timed; '~1m20s' (uncalibrated cost model) before. Each stage is
        scaled by the measured ratio of its own kind (of its method, for unlearning) once one has finished, by
        the overall one before. Not by another method's: the cost model's error differs per method (retrain
        0.5x, graddiff several x), and one rga stage at 6.5x once tripled the smoke grid's ETA."""
        if not self.left:
            return ""
        r = self.ratio()
        overall = r if r is not None else 1.0
        keys = {s: _calibration_key(self.nodes[s]) for s in self.left}
        k = {c: self.ratio(c) or overall for c in set(keys.values())}
        now = time.time()
        busy = {s: now - t for s, t in self.current().items()}
        work = sum(max(0.0, self.est[s] * k[keys[s]] - busy.get(s, 0.0)) for s in self.left)
        chain = max(self.chain[s] * overall - busy.get(s, 0.0) for s in self.left)
        return f"eta {'' if r is not None else '~'}{fmt_duration(max(work / self.workers, chain, 0.0))}"

    def running_text(self) -> str:
        now = time.time()
        queued = len(self.running) - len(self.current())
        text = ", ".join(f"{stage_label(self.nodes[k].kind, self.nodes[k].cfg)} ({fmt_duration(now - t)})"
                         for k, t in sorted(self.current().items(), key=lambda kv: kv[1]))
        return text + (f" (+{queued} queued)" if queued and text else "")

    def line(self) -> str:
        return (f"{self.grid}: cells {self.cells_done}/{self.total} (failed {self.cells_failed}) | "
                f"stages {self.stages_done}/{self.stages_total} (running {len(self.current())}, "
                f"failed {self.stages_failed}) | elapsed {fmt_duration(time.time() - self.t0)} {self.eta()}".rstrip())

    def cell_text(self, cell_id: str, status: str, row: dict[str, Any] | None) -> str:
        cfg = self.cfgs.get(cell_id)
        label = cell_label(cfg) if cfg is not None else cell_id
        if status == "ok":
            return f"ok     {label}: {headline(row)}"
        err = str((row or {}).get("error") or "").strip().splitlines()
        return f"{status} {label}" + (f": {err[0][:160]}" if err else "")


def _calibration_key(node: Any) -> str:
    """What the ETA calibrates together: a stage kind, or kind:method for unlearning (the cost model is off by
    0.5x for retrain and several x for graddiff)."""
    method = getattr(node.cfg, "method", None) if node.kind == "unlearn" else None
    return f"{node.kind}:{method}" if method else node.kind


def _chains(plan: Any, est: dict[str, float]) -> dict[str, float]:
    """Estimated seconds from a stage's start to the end of its longest chain of dependents."""
    deps = plan.dependents()
    out: dict[str, float] = {}

    def walk(k: str) -> float:
        if k not in out:
            out[k] = est[k] + max((walk(d) for d in deps[k]), default=0.0)
        return out[k]

    for k in plan.stages:
        walk(k)
    return out


class PlainProgress(_Counts):
    """Timestamped lines: every finished cell and non-evaluate stage, and a heartbeat naming what runs."""

    def __init__(self, out: TextIO | None = None, every: float = 15.0) -> None:
        self.out, self.every, self.last = out or sys.stdout, every, 0.0

    def _print(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.out, flush=True)
        self.last = time.time()

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None:
        super().start(grid, total_cells, skipped, plan)
        est = sum(self.est.values())
        starting = "; starting workers" if plan.stages else ""
        self._print(f"{grid}: {total_cells} cells, {skipped} already done; {len(plan.stages)} stages to check "
                    f"(cost model: about {fmt_duration(est)} of CPU){starting}")

    def stage_started(self, node: Any, worker: dict[str, Any]) -> None:
        wid = (worker or {}).get("pid", node.key)
        waits = any(w == wid for _, w in self.running.values())  # sent behind a stage its worker is still on
        super().stage_started(node, worker)
        if node.kind != "evaluate":
            self._print(f"{'queued' if waits else 'start':<6} {stage_label(node.kind, node.cfg)}")

    def stage_finished(self, node: Any, state: str, meta: dict[str, Any] | None = None) -> None:
        began = self._began(node.key) if node.key in self.running else None
        wid = self.running.get(node.key, (0.0, None))[1]
        super().stage_finished(node, state, meta)
        if node.kind != "evaluate" and state != "reused" and began is not None:
            took = fmt_duration(time.time() - began)
            group = int((meta or {}).get("group", 1))
            if group > 1:  # members of a group finish together: each is charged its share of the group's wall
                took = (f"{fmt_duration(meta['wall'])} (its share: {group} trained together in "
                        f"{fmt_duration(meta['wall'] * group)})")
            self._print(f"{state:<6} {stage_label(node.kind, node.cfg)} in {took} "
                        f"(cost model {fmt_duration(self.est.get(node.key, 0.0))}) | {self.line()}")
        nxt = self.heads().get(wid)  # a queued stage starts when the one before it on its worker ends
        if nxt is not None and self.nodes[nxt].kind != "evaluate":
            self._print(f"{'start':<6} {stage_label(self.nodes[nxt].kind, self.nodes[nxt].cfg)}")

    def cell_finished(self, cell_id: str, status: str, row: dict[str, Any] | None = None) -> None:
        super().cell_finished(cell_id, status, row)
        self._print(f"{self.cell_text(cell_id, status, row)} | {self.line()}")

    def tick(self) -> None:
        if time.time() - self.last >= self.every:
            running = self.running_text()
            self._print(self.line() + (f" | running: {running}" if running else ""))

    def close(self, summary: Any) -> None:
        self._print(f"done | {self.line()}")


class RichProgress(_Counts):
    """A live cells bar with the ETA, the running stages under it, and finished cells printed above."""

    def __init__(self, console: Console | None = None) -> None:
        self.bar = RichBar(TextColumn("{task.description:<8}", markup=False), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}", markup=False), console=console, transient=False)

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None:
        super().start(grid, total_cells, skipped, plan)
        self.bar.start()
        self.cells = self.bar.add_task("cells", total=total_cells, completed=skipped, info="")
        self.stages = self.bar.add_task("stages", total=max(1, self.stages_total), info="")
        self._refresh()

    def _refresh(self) -> None:
        self.bar.update(self.cells, completed=self.cells_done,
                        info=f"failed {self.cells_failed}  elapsed {fmt_duration(time.time() - self.t0)}  {self.eta()}")
        running = self.running_text()
        self.bar.update(self.stages, completed=self.stages_done,
                        info=f"failed {self.stages_failed}" + (f"  running: {running}" if running else ""))

    def stage_started(self, node: Any, worker: dict[str, Any]) -> None:
        super().stage_started(node, worker)
        self._refresh()

    def stage_finished(self, node: Any, state: str, meta: dict[str, Any] | None = None) -> None:
        super().stage_finished(node, state, meta)
        self._refresh()

    def cell_finished(self, cell_id: str, status: str, row: dict[str, Any] | None = None) -> None:
        super().cell_finished(cell_id, status, row)
        self.bar.console.print(Text(self.cell_text(cell_id, status, row)), soft_wrap=True)
        self._refresh()

    def tick(self) -> None:
        self._refresh()

    def close(self, summary: Any) -> None:
        self._refresh()
        self.bar.stop()

    def stop(self) -> None:
        self.bar.stop()  # a live display left running keeps the cursor hidden and swallows later lines


def make_progress(stream: TextIO | None = None) -> Progress:
    stream = stream or sys.stdout
    return RichProgress(Console(file=stream)) if stream.isatty() else PlainProgress(stream)
