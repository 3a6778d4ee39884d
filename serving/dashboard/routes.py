"""The ``/ui`` router: the scorer app mounts the dashboard with one line.

    app.include_router(dashboard_router(DashboardData(monitors=..., experiments=...)))

``/ui`` is the page, ``/ui/data.json`` the same snapshot as JSON, ``/ui/static/...`` the
vendored Chart.js (MIT, licence alongside) so the page needs no network.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from serving.dashboard.data import DashboardData
from serving.dashboard.page import content_security_policy, render
from serving.http.errors import error_responses

STATIC = Path(__file__).parent / "static"


def dashboard_router(
    data: DashboardData, prefix: str = "/ui", refresh_s: int | None = 15
) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["dashboard"])

    @router.get("", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        html = render(data.snapshot(), static_url=f"{prefix}/static", refresh_s=refresh_s)
        return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(),
                                           "X-Content-Type-Options": "nosniff"})

    @router.get("/data.json")
    def snapshot() -> dict:
        return data.snapshot()

    @router.get("/static/{name}", responses=error_responses(404))
    def static(name: str) -> FileResponse:
        path = STATIC / name
        if "/" in name or not path.is_file():
            raise HTTPException(status_code=404, detail=f"no static file {name!r}")
        return FileResponse(path, headers={"Cache-Control": "max-age=86400"})

    return router
