"""IBM Quantum credentials and the service, kept in one place so that no message ever carries the token.

The token is read from QISKIT_IBM_TOKEN or qiskit's saved account, handed only to `QiskitRuntimeService`,
and scrubbed from every message a backend raises (`scrub`).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

TOKEN_ENV = "QISKIT_IBM_TOKEN"


class BackendError(RuntimeError):
    """A backend could not be reached or used; the message never contains a secret."""


class MissingCredentials(BackendError):
    """A backend that needs IBM Quantum credentials was asked for without them (the CLI exits 2)."""


class CannotConnect(BackendError):
    """The service refused the credentials or could not be reached. It is created before the first job,
    so nothing was submitted: the CLI exits 2 and asks the user to check the credentials and the network."""


def _saved_account() -> dict[str, Any] | None:
    """qiskit's saved default account (reads ~/.qiskit/qiskit-ibm.json; no network)."""
    try:
        from qiskit_ibm_runtime import QiskitRuntimeService

        accounts = QiskitRuntimeService.saved_accounts()
    except Exception:  # noqa: BLE001 -- a broken config file means "no saved account"
        return None
    if not accounts:
        return None
    for acc in accounts.values():
        if acc.get("is_default_account"):
            return acc
    return next(iter(accounts.values()))


def _known_secrets() -> list[str]:
    out = []
    tok = os.environ.get(TOKEN_ENV)
    if tok:
        out.append(tok)
    acc = _saved_account()
    if acc and acc.get("token"):
        out.append(str(acc["token"]))
    return [s for s in out if len(s) >= 4]


def scrub(text: str) -> str:
    """`text` with every known token (environment or saved account) replaced by ***."""
    for s in _known_secrets():
        text = text.replace(s, "***")
    return text


def credentials_source() -> str | None:
    """Where IBM credentials would come from ('environment' or 'saved account'), or None."""
    if os.environ.get(TOKEN_ENV):
        return "environment"
    if _saved_account() is not None:
        return "saved account"
    return None


def require_credentials(backend: str) -> None:
    """Raise MissingCredentials when no token is configured for `backend`; no network."""
    if credentials_source() is None:
        raise MissingCredentials(
            f"backend {backend!r} needs IBM Quantum credentials: set {TOKEN_ENV} (and QISKIT_IBM_INSTANCE, "
            "optionally QISKIT_IBM_CHANNEL), or save an account once with "
            "QiskitRuntimeService.save_account(token=..., set_as_default=True)"
        )


_SERVICE: Any = None
_LOCK = threading.Lock()


def runtime_service() -> Any:
    """The process's QiskitRuntimeService (token from the environment, else the saved account)."""
    global _SERVICE
    with _LOCK:
        if _SERVICE is not None:
            return _SERVICE
        require_credentials("ibm")
        from qiskit_ibm_runtime import QiskitRuntimeService

        kw: dict[str, Any] = {}
        if os.environ.get(TOKEN_ENV):
            kw["token"] = os.environ[TOKEN_ENV]
            kw["channel"] = os.environ.get("QISKIT_IBM_CHANNEL", "ibm_quantum_platform")
            if os.environ.get("QISKIT_IBM_INSTANCE"):
                kw["instance"] = os.environ["QISKIT_IBM_INSTANCE"]
        quiet = logging.getLogger("qiskit_ibm_runtime.qiskit_runtime_service")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it warns that the token we chose to pass is used instead of a saved one
        try:
            _SERVICE = QiskitRuntimeService(**kw)
        except Exception as e:  # noqa: BLE001 -- re-raised without the chained original (it may hold the token)
            raise CannotConnect(f"cannot connect to IBM Quantum with the token from the {credentials_source()}: "
                                f"{scrub(f'{type(e).__name__}: {e}')}; check {TOKEN_ENV}, QISKIT_IBM_INSTANCE and "
                                "the network (nothing was submitted)") from None
        finally:
            quiet.setLevel(level)
        return _SERVICE
