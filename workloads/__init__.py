"""The science of qmu-bench: data, circuits, simulators, models, training, unlearning, attacks, metrics.

Knows nothing of Ray, the result store or reports.
"""

__version__ = "0.1.0"


def code_version() -> str:
    """Package version plus a content hash of the science sources, so results track the code."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):  # subpackages (attacks, unlearning) are science too
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"
