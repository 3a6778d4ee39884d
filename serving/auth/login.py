"""``/auth/login``: a browser signs in to ``/ui`` once; the token goes into an HttpOnly,
SameSite=Strict cookie (never into a URL, where it would end up in logs and history)."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from serving.auth.guard import COOKIE
from serving.auth.tokens import TokenStore
from serving.http.errors import ApiError

_FORM = """<!doctype html><meta charset="utf-8"><title>Tessera sign-in</title>
<form method="post" action="/auth/login"><label>Token <input name="token" type="password"
autocomplete="off" required></label> <button>Sign in</button></form>"""


def login_router(store: TokenStore) -> APIRouter:
    router = APIRouter()

    @router.get("/auth/login", response_class=HTMLResponse, tags=["dashboard"],
                summary="The dashboard's sign-in form")
    async def form() -> HTMLResponse:
        return HTMLResponse(_FORM)

    @router.post("/auth/login", tags=["dashboard"], summary="Sign in to /ui with a token",
                 responses={303: {"description": "signed in: on to /ui"},
                            401: {"description": "unknown or revoked token"}})
    async def login(request: Request) -> Response:
        # the form's urlencoded body, parsed with the standard library (no multipart needed)
        token = parse_qs((await request.body()).decode("latin-1")).get("token", [""])[0]
        rec = store.verify(token)
        if rec is None or not rec.allows("ui"):
            raise ApiError(401, "invalid_token", "unknown or revoked token, or one without the "
                                                 "'ui' scope")
        out = RedirectResponse("/ui", status_code=303)
        out.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return out

    return router
