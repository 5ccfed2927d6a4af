"""cluster.yaml is safe by default: the dashboard on localhost only, no secret in the file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def test_dashboard_binds_to_localhost_only() -> None:
    cfg = yaml.safe_load(CLUSTER.read_text())
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in CLUSTER.read_text()
    assert "ray dashboard cluster.yaml" in CLUSTER.read_text()  # how to reach it: an SSH tunnel


def test_no_ibm_token_in_the_yaml() -> None:
    text = CLUSTER.read_text()
    cfg = yaml.safe_load(text)
    flat = yaml.safe_dump(cfg)  # what the launcher copies and runs (comments excluded)
    assert "QISKIT_IBM_TOKEN" not in flat and not re.search(r"token\s*[:=]", flat, re.I)
    assert "getpass" in text  # the comment shows how to save the account on the head instead
