"""``/docs``: Swagger UI from files shipped with Tessera (``static/swagger``), so the API
reference works on a machine without internet (FastAPI's default loads it from a CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(__file__).resolve().parent / "static" / "swagger"
FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def docs_router(openapi_url: str = "/openapi.json", title: str = "Tessera scorer") -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} - API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css", swagger_favicon_url="data:,")

    @router.get("/docs/static/{name}")
    async def static(name: str) -> FileResponse:
        if name not in FILES:
            raise HTTPException(status_code=404, detail=f"no file {name!r}")
        return FileResponse(STATIC / name, headers={"Cache-Control": "max-age=86400"})

    return router
