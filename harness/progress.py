"""Progress of a run: a rich live display on a terminal, plain timestamped lines in CI logs."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBar, TextColumn

from .estimate import stage_estimate


class Progress:
    """Callbacks of the driver loop; this base class ignores them all."""

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None: ...
    def stage_started(self, node: Any, worker: dict[str, Any]) -> None: ...
    def stage_finished(self, node: Any, state: str) -> None: ...  # done | failed | reused
    def cell_finished(self, cell_id: str, status: str) -> None: ...
    def tick(self) -> None: ...
    def close(self, summary: Any) -> None: ...


NullProgress = Progress


class _Counts(Progress):
    """Bookkeeping shared by the two displays."""

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None:
        self.grid, self.total, self.t0 = grid, total_cells, time.time()
        self.cells_done, self.cells_failed, self.skipped = skipped, 0, skipped
        self.stages_total, self.stages_done, self.stages_failed = len(plan.stages), 0, 0
        self.active: set[str] = set()
        # ETA from the cost model: elapsed time scaled by estimated work left over estimated work done, so
        # it is meaningful long before the first cell finishes (trains and unlearns run first).
        self.est = {s.key: stage_estimate(s.kind, s.cfg).seconds + 0.01 for s in plan.stages.values()}
        self.est_left, self.est_done = sum(self.est.values()), 0.0

    @property
    def running(self) -> int:
        return len(self.active)

    def stage_started(self, node: Any, worker: dict[str, Any]) -> None:
        self.active.add(node.key)

    def stage_finished(self, node: Any, state: str) -> None:
        self.active.discard(node.key)
        cost = self.est.get(node.key, 0.0)
        self.est_left -= cost
        if state != "reused":
            self.est_done += cost
        if state == "failed":
            self.stages_failed += 1
        self.stages_done += 1

    def cell_finished(self, cell_id: str, status: str) -> None:
        self.cells_done += 1
        self.cells_failed += status == "failed"

    def eta(self) -> str:
        if self.est_done <= 0:
            return "?"
        return _fmt(max(0.0, self.est_left) * (time.time() - self.t0) / self.est_done)

    def line(self) -> str:
        return (f"{self.grid}: cells {self.cells_done}/{self.total} (failed {self.cells_failed}) | "
                f"stages {self.stages_done}/{self.stages_total} (running {self.running}, "
                f"failed {self.stages_failed}) | elapsed {_fmt(time.time() - self.t0)} eta {self.eta()}")


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class PlainProgress(_Counts):
    """One line per finished cell and a heartbeat every `every` seconds: readable in CI logs."""

    def __init__(self, out: TextIO | None = None, every: float = 30.0) -> None:
        self.out, self.every, self.last = out or sys.stdout, every, 0.0

    def _print(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.out, flush=True)
        self.last = time.time()

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None:
        super().start(grid, total_cells, skipped, plan)
        self._print(f"{grid}: {total_cells} cells, {skipped} already done, {len(plan.stages)} stages to check")

    def cell_finished(self, cell_id: str, status: str) -> None:
        super().cell_finished(cell_id, status)
        self._print(f"cell {cell_id} {status} | {self.line()}")

    def tick(self) -> None:
        if time.time() - self.last >= self.every:
            self._print(self.line())

    def close(self, summary: Any) -> None:
        self._print(f"done | {self.line()}")


class RichProgress(_Counts):
    """Two live bars (cells, stages) with running/failed counts and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.bar = RichBar(TextColumn("{task.description:<7}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), console=console, transient=False)

    def start(self, grid: str, total_cells: int, skipped: int, plan: Any) -> None:
        super().start(grid, total_cells, skipped, plan)
        self.bar.start()
        self.cells = self.bar.add_task("cells", total=total_cells, completed=skipped, info="")
        self.stages = self.bar.add_task("stages", total=max(1, self.stages_total), info="")
        self._refresh()

    def _refresh(self) -> None:
        self.bar.update(self.cells, completed=self.cells_done,
                        info=f"failed {self.cells_failed}  elapsed {_fmt(time.time() - self.t0)}  eta {self.eta()}")
        self.bar.update(self.stages, completed=self.stages_done,
                        info=f"running {self.running} failed {self.stages_failed}")

    def stage_started(self, node: Any, worker: dict[str, Any]) -> None:
        super().stage_started(node, worker)
        self._refresh()

    def stage_finished(self, node: Any, state: str) -> None:
        super().stage_finished(node, state)
        self._refresh()

    def cell_finished(self, cell_id: str, status: str) -> None:
        super().cell_finished(cell_id, status)
        self._refresh()

    def tick(self) -> None:
        self._refresh()

    def close(self, summary: Any) -> None:
        self._refresh()
        self.bar.stop()


def make_progress(stream: TextIO | None = None) -> Progress:
    stream = stream or sys.stdout
    return RichProgress(Console(file=stream)) if stream.isatty() else PlainProgress(stream)
