"""The token check in front of every request (the scorer's outer ASGI layer calls it).

Auth is on as soon as ``<home>/tokens.json`` holds one live token; then every route but the
public ones needs ``Authorization: Bearer <token>`` with the route's scope (or, for GET
requests from a browser, the ``tessera_token`` cookie that ``/auth/login`` sets).
"""

from __future__ import annotations

from http.cookies import SimpleCookie

from serving.auth.actor import PRINCIPAL
from serving.auth.policy import required_scope
from serving.auth.tokens import TokenStore
from serving.http.errors import ApiError

COOKIE = "tessera_token"


class AuthGuard:
    def __init__(self, store: TokenStore) -> None:
        self.store = store

    def check(self, scope: dict) -> ApiError | None:
        """None if the request may go on (``scope[PRINCIPAL]`` set when a token was used)."""
        store = self.store
        store.reload()
        if not store.active:
            return None
        needed = required_scope(scope["method"], scope.get("path", ""))
        if not needed:
            return None
        token = _token(scope)
        if token is None:
            return ApiError(401, "unauthorized",
                            f"this route needs a token with scope {needed!r}: send "
                            "'Authorization: Bearer <token>' (an operator creates one with "
                            f"`tessera tokens create --name NAME --scope {needed}`)")
        rec = store.verify(token)
        if rec is None:
            return ApiError(401, "invalid_token", "the token is unknown, malformed or revoked")
        if not rec.allows(needed):
            return ApiError(403, "forbidden",
                            f"token {rec.name!r} has scopes {', '.join(rec.scopes)}; this route "
                            f"needs {needed!r}")
        scope[PRINCIPAL] = rec.name
        return None


def _token(scope: dict) -> str | None:
    cookie = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else None
        if name == b"cookie" and scope["method"] == "GET":
            jar = SimpleCookie()
            jar.load(value.decode("latin-1"))
            if COOKIE in jar:
                cookie = jar[COOKIE].value
    return cookie
