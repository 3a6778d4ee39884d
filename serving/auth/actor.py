"""Who is acting: the one place that names the principal an audit record carries.

- Over HTTP: the token the auth guard verified, ``token:<name>`` (the guard puts the name in
  the ASGI scope under ``PRINCIPAL``); ``anonymous`` when auth is off, which the scorer
  only allows on loopback.
- On the command line: the operating-system account running it, ``os:<user>``. The CLI works on
  the registry, the event log and Redis directly, so the OS account (its file and network
  permissions) is what was authorised; it takes no token, since a token would prove nothing
  the account does not already have.
- Automated actors (the statistical guardrail, the retrain loop) name themselves.

Callers pass the result explicitly to whatever writes the record (``who=``); the stores fall
back to ``local()`` only because any caller that names nobody runs in a local process.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from typing import Any

PRINCIPAL = "tessera.principal"  # the ASGI scope key the auth guard sets: the token's name
ANONYMOUS = "anonymous"


def local() -> str:
    """The OS account of this process, marked as such: ``os:alice``."""
    try:
        return f"os:{getpass.getuser()}"
    except (OSError, KeyError):  # no passwd entry (some containers) and no LOGNAME/USER
        return "os:unknown"


def of_scope(scope: Mapping[str, Any]) -> str:
    """The principal of an HTTP request from its ASGI scope (``request.scope``)."""
    name = scope.get(PRINCIPAL)
    return f"token:{name}" if name else ANONYMOUS
