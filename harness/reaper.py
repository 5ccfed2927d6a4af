"""Ends the Ray processes of a local Ray when the driver that started it dies without shutting it down.

After a `kill -9` of `qmu run`, the GCS and raylet die with it (Ray ties them to their parent), but Ray's
per-node agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) wait about a minute on the dead GCS before
they exit. `harness.runner.connect` starts this watcher beside a local Ray:

    python -m harness.reaper DRIVER_PID   (stdin: a pipe whose write end only the driver holds)

It notes the driver's Ray processes every second; end of file on stdin means the driver is gone, however it
ended, and the noted processes that still run (same pid and start time) are killed.
"""

from __future__ import annotations

import os
import select
import signal
import sys

import psutil

POLL_SECONDS = 1.0


def ray_processes(pid: int) -> dict[int, float]:
    """pid -> start time of every Ray process under `pid` (GCS, raylet, agents, workers, monitors)."""
    found = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in children:
        try:
            if _is_ray(p.name(), p.cmdline()):
                found[p.pid] = p.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _is_ray(name: str, cmdline: list[str]) -> bool:
    return name in ("gcs_server", "raylet") or name.startswith("ray::") or \
        any("ray::" in a or f"{os.sep}ray{os.sep}" in a for a in cmdline[:3])


def end(processes: dict[int, float]) -> int:
    """SIGKILL the noted processes that still run; the number killed."""
    n = 0
    for pid, created in processes.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created:  # not a later process that reused the pid
                p.kill()
                n += 1
        except psutil.NoSuchProcess:
            continue
    return n


def watch(driver: int, stdin: int) -> None:
    """Note the driver's Ray processes until `stdin` reaches end of file, then end those still running."""
    seen: dict[int, float] = {}
    while True:
        seen.update(ray_processes(driver))
        ready, _, _ = select.select([stdin], [], [], POLL_SECONDS)
        if ready and not os.read(stdin, 4096):
            break
    end({**seen, **started_by(_raylets(seen))})


def _raylets(processes: dict[int, float]) -> set[str]:
    out = set()
    for pid in processes:
        try:
            if psutil.Process(pid).name() == "raylet":
                out.add(str(pid))
        except psutil.NoSuchProcess:
            continue
    return out


def started_by(raylets: set[str]) -> dict[int, float]:
    """The processes those raylets started (agents, workers), wherever they were reparented: the raylet names
    itself to them in RAY_RAYLET_PID. Catches those started after the last note."""
    found = {}
    for p in psutil.process_iter(["name"]):
        try:
            if (p.info["name"] or "").startswith("ray::") and p.environ().get("RAY_RAYLET_PID") in raylets:
                found[p.pid] = p.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    watch(int(sys.argv[1]), sys.stdin.fileno())
