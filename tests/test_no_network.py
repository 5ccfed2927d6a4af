"""The whole test run is offline: tests/conftest.py's `no_network` fixture blocks every non-local address."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import NetworkBlocked

PUBLIC = ("1.1.1.1", 443)


def test_a_connect_to_a_public_address_is_blocked_naming_the_fixture() -> None:
    # a datagram socket's connect sends nothing, so this check is safe even where the fixture is missing
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(NetworkBlocked, match="no_network fixture"):
        s.connect(PUBLIC)
    with pytest.raises(NetworkBlocked, match=r"no_network fixture \(tests/conftest.py\).*1\.1\.1\.1"):
        socket.create_connection(PUBLIC, timeout=1)


def test_a_lookup_of_a_public_name_is_blocked() -> None:
    with pytest.raises(NetworkBlocked, match="no_network fixture.*quantum.cloud.ibm.com"):
        socket.getaddrinfo("quantum.cloud.ibm.com", 443)
    assert issubclass(NetworkBlocked, OSError)  # code that copes with being offline keeps coping


def test_loopback_and_unix_sockets_still_work(tmp_path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        t = threading.Thread(target=lambda: server.accept()[0].sendall(b"ok"))
        t.start()
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5) as c:
            assert c.recv(2) == b"ok"
        t.join(5)
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        a.sendall(b"unix")
        assert b.recv(4) == b"unix"


def test_a_child_python_process_is_offline_too(tmp_path) -> None:
    # `qmu` subprocesses and Ray workers inherit the guard through PYTHONPATH's sitecustomize
    code = ("import socket\n"
            "try:\n    socket.create_connection(('1.1.1.1', 443), timeout=1)\n"
            "except OSError as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("NetworkBlocked") and "no_network fixture" in out.stdout, out.stdout + out.stderr
