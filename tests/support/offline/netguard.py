"""The network guard of the test run: a connect, a datagram or a name lookup for anything but loopback, this
machine's own addresses and unix sockets raises NetworkBlocked (an OSError, so code that handles "offline"
still does). Installed in the pytest process by tests/conftest.py and in every child by `sitecustomize`."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable

OFFLINE_ENV = "QMU_TEST_OFFLINE"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class NetworkBlocked(OSError):
    """A test tried to reach a non-local address; raised by the `no_network` fixture (tests/conftest.py)."""


def _own_addresses() -> set[str]:
    """The addresses of this machine's interfaces: a local Ray may bind its node to one of them."""
    import psutil

    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)}


def _is_local(host: Any, own: set[str]) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host.lower() in _LOCAL_NAMES or host == socket.gethostname()
    return ip.is_loopback or ip.is_unspecified or str(ip) in own


def _blocked(what: str) -> NetworkBlocked:
    return NetworkBlocked(f"the no_network fixture (tests/conftest.py) blocked {what}: tests reach only this machine")


def install() -> Callable[[], None]:
    """Patch the socket module; returns the undo."""
    own = _own_addresses()
    connect, connect_ex, sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    getaddrinfo = socket.getaddrinfo

    def check(family: int, address: Any) -> None:
        if family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0], own):
            raise _blocked(f"a connection to {address!r}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        check(self.family, address)
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        check(self.family, address)
        return connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
        check(self.family, args[-1])
        return sendto(self, data, *args)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_local(host, own):
            try:
                ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
            except ValueError:  # a name: resolving it would ask a DNS server
                raise _blocked(f"a lookup of {host!r}") from None
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
    socket.socket.sendto, socket.getaddrinfo = guarded_sendto, guarded_getaddrinfo

    def undo() -> None:
        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
        socket.socket.sendto, socket.getaddrinfo = sendto, getaddrinfo

    return undo
