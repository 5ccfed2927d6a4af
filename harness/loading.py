"""Opening what a `qmu` command is given: the results root and the grid file, each failing with one error line
(exit 2) that names the flag or file. Shared by `qmu` (cli) and `qmu hw` (hw_cli)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .ui import fail

# The workload module every stage runs. Tests point `harness.cli.WORKLOAD` at tests.support.trivial through a
# fixture; it is not a flag.
WORKLOAD = "workloads.stages"


def where(store: Any) -> str:
    """The store's location as the user should read it: an absolute local path, or the URI."""
    return store.base if store.local else store.root


def open_store(results: str, *, must_exist: bool = False):
    """The ResultStore at `results`; exit 2 on a URI pyarrow cannot open, or (must_exist) a root with no store."""
    from .store import ResultStore

    try:
        store = ResultStore(results)
    except (ValueError, OSError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise fail(f"--results {results!r}: cannot open it ({str(e).splitlines()[0][:200]}); give a local "
                   "directory or a filesystem URI such as s3://BUCKET/PREFIX") from None
    if store.local and not os.path.isdir(found := nearest_existing(store.base)):
        raise fail(f"--results {store.base}: is a file, not a directory" if found == store.base else
                   f"--results {store.base}: {found} is a file, so no store can be under it; choose a directory path")
    if must_exist:
        try:
            grids = store.grids()
        except OSError as e:
            raise fail(f"--results {results!r}: cannot read it ({str(e).splitlines()[0][:200]})") from None
        if not grids:
            raise fail(f"--results {where(store)}: no result store there (no cells/ or manifests/); run "
                       f"`qmu run GRID.yaml --results {results}` first, or point --results at an existing store")
    return store


def nearest_existing(path: str) -> str:
    """`path` itself, or its nearest ancestor that exists (`path` is absolute, so "/" ends the walk)."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def load_grid(grid: Path, workload: str = WORKLOAD):
    """The validated grid (exit 2 naming file, key and problem), with its fingerprint for the manifest."""
    import dataclasses

    from .grid_spec import GridError, load_grid as parse

    try:
        spec = parse(grid, workload)
    except GridError as e:
        raise fail(str(e)) from None
    return dataclasses.replace(spec, fingerprint=fingerprint(grid.read_bytes(), workload))


def fingerprint(text: bytes, workload: str = WORKLOAD) -> str:
    """Equal fingerprints expand into the same cells: same grid bytes, workload module and science code."""
    import hashlib

    import workloads  # the package only: code_version hashes the sources without importing torch

    h = hashlib.sha256(text)
    h.update(f"\0{workload}\0{workloads.code_version()}".encode())
    return h.hexdigest()[:24]
