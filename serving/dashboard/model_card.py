"""``/ui/models/{name}[/{ref}]``: the model card as a page, with ROC and calibration plots.

Everything comes from ``serving.registry.model_card.build_card`` (what `tessera models show`
prints); the plots are inline SVG drawn here from the holdout rows stored with the version, so
the page needs no script. Every string from the registry is escaped.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from features.errors import RegistryError
from serving.dashboard.page import _e, _table
from serving.http.errors import ApiError, error_responses

SIZE = 240  # plot area in px; axes run 0..1 on both sides
PAD = 30

CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#0f172a;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}
td,th{border-bottom:1px solid #e2e8f0;padding:3px 10px;text-align:left}
.pass{color:#16a34a}.fail{color:#dc2626;font-weight:600}.skip{color:#64748b}
.plots{display:flex;gap:32px;flex-wrap:wrap}.bar{background:#2563eb;height:10px}
svg text{font-size:10px;fill:#475569}"""


def _n(x: object) -> str:
    if isinstance(x, float):
        return "–" if not math.isfinite(x) else f"{x:.4f}"
    return "–" if x is None else _e(x)


def _xy(x: float, y: float) -> str:
    return f"{PAD + x * SIZE:.1f},{PAD + (1 - y) * SIZE:.1f}"


def _frame(title: str, xlabel: str, ylabel: str, body: str) -> str:
    ticks = "".join(
        f'<text x="{PAD + t * SIZE:.0f}" y="{PAD + SIZE + 14}" text-anchor="middle">{t:g}</text>'
        f'<text x="{PAD - 6}" y="{PAD + (1 - t) * SIZE + 3:.0f}" text-anchor="end">{t:g}</text>'
        for t in (0, 0.5, 1)
    )
    w = SIZE + 2 * PAD
    return (
        f'<svg role="img" aria-label="{_e(title)}" width="{w}" height="{w + 10}" '
        f'viewBox="0 0 {w} {w + 10}" xmlns="http://www.w3.org/2000/svg">'
        f'<title>{_e(title)}</title>'
        f'<rect x="{PAD}" y="{PAD}" width="{SIZE}" height="{SIZE}" fill="none" stroke="#cbd5e1"/>'
        f'<line x1="{PAD}" y1="{PAD + SIZE}" x2="{PAD + SIZE}" y2="{PAD}" stroke="#cbd5e1" '
        f'stroke-dasharray="4 3"/>{ticks}'
        f'<text x="{PAD + SIZE / 2}" y="{w + 6}" text-anchor="middle">{_e(xlabel)}</text>'
        f'<text x="10" y="{PAD + SIZE / 2}" transform="rotate(-90 10 {PAD + SIZE / 2})" '
        f'text-anchor="middle">{_e(ylabel)}</text>'
        f'<text x="{PAD}" y="18">{_e(title)}</text>{body}</svg>'
    )


def roc_svg(points: list[tuple[float, float]], auc: float | None) -> str:
    if not points:
        return '<p class="skip">no holdout rows stored: no ROC curve</p>'
    line = " ".join(_xy(x, y) for x, y in [*points, (1.0, 1.0)])
    title = f"ROC (holdout AUC {_n(auc)})"
    return _frame(title, "false positive rate", "true positive rate",
                  f'<polyline class="roc" points="{line}" fill="none" stroke="#2563eb" '
                  'stroke-width="2"/>')


def calibration_svg(bins: list[dict[str, Any]]) -> str:
    if not bins:
        return '<p class="skip">no holdout rows stored: no calibration plot</p>'
    most = max(b["count"] for b in bins)
    dots = "".join(
        f'<circle cx="{_xy(b["mean_score"], b["positive_rate"]).split(",")[0]}" '
        f'cy="{_xy(b["mean_score"], b["positive_rate"]).split(",")[1]}" '
        f'r="{2 + 6 * math.sqrt(b["count"] / most):.1f}" fill="#2563eb" fill-opacity="0.6">'
        f'<title>{b["lo"]:.1f}-{b["hi"]:.1f}: {b["count"]} rows, mean score '
        f'{b["mean_score"]:.3f}, positive rate {b["positive_rate"]:.3f}</title></circle>'
        for b in bins
    )
    line = " ".join(_xy(b["mean_score"], b["positive_rate"]) for b in bins)
    return _frame("Calibration (dot size: rows)", "mean score", "positive rate",
                  f'<polyline points="{line}" fill="none" stroke="#93c5fd"/>{dots}')


def _rows(rows: list[list[str]], head: list[str]) -> str:
    return _table(head, rows)  # the dashboard's table: head escaped, cells already HTML


def render_card(card: dict[str, Any]) -> str:
    m = card["metrics"]
    ts = card["training_set"]
    aliases = f" ({_e(', '.join(card['aliases']))})" if card["aliases"] else ""
    parts = [
        f"<h1>{_e(card['name'])} v{_e(card['version'])}{aliases}</h1>",
        f"<p>created {_e(card['created'])} by {_e(card['created_by'])} · LightGBM "
        f"{_e(card['lightgbm_version'])} · objective {_e(card['objective'])} · label "
        f"<code>{_e(card['label'])}</code> · seed {_e(card['seed'])}</p>",
        f"<p>training set <code>{_e(ts.get('path'))}</code> · fingerprint "
        f"<code>{_e(ts.get('fingerprint'))}</code></p>",
        "<h2>Metrics (time holdout)</h2>",
        _rows([[_n(m.get(k)) for k in ("auc", "logloss", "calibration_error", "positive_rate",
                                       "train_rows", "holdout_rows", "holdout_from")]],
              ["AUC", "logloss", "calibration error", "positive rate", "training rows",
               "holdout rows", "holdout from"]),
        f'<div class="plots">{roc_svg(card["roc"], m.get("auc"))}'
        f'{calibration_svg(card["calibration"])}</div>',
        "<h2>Features</h2>",
        _rows([[f"<code>{_e(f['ref'])}</code>", _e(f["view_version"]), _n(f["gain"]),
                f'{f["gain_share"]:.1%} <div class="bar" style="width:'
                f'{200 * f["gain_share"]:.0f}px"></div>']
               for f in sorted(card["features"], key=lambda f: -(f["gain"] or 0))],
              ["feature", "view version", "gain", "share"]),
        "<h2>Review gates</h2>",
    ]
    if not card["gates"]:
        parts.append('<p class="skip">never evaluated</p>')
    for g in card["gates"]:
        verdict = ("passed", "pass") if g["passed"] else (
            ("overridden", "fail") if g.get("override") else ("failed", "fail"))
        against = f" against v{_e(g['against'])}" if g.get("against") else ""
        parts.append(f'<p>{_e(g["stage"])} {_e(g["when"])}{against}: '
                     f'<span class="{verdict[1]}">{verdict[0]}</span></p>')
        rows = []
        for c in g["checks"]:
            cls, word = {True: ("pass", "pass"), False: ("fail", "FAIL"),
                         None: ("skip", "skip")}[c["passed"]]
            value = (", ".join(f"{_e(k)}: {_n(v)}" for k, v in c["value"].items())
                     if isinstance(c["value"], dict) else _n(c["value"]))
            rows.append([f'<span class="{cls}">{word}</span>', _e(c["check"]), value,
                         _n(c["limit"]), _e(c["detail"])])
        parts.append(_rows(rows, ["", "check", "value", "limit", "detail"]))
    for col, segs in card["segments"].items():
        parts.append(f"<h2>By {_e(col)} (AUC gap {_n(segs['gap']['auc'])})</h2>")
        parts.append(_rows([[_e(s["segment"]), _n(s["labelled"]), _n(s["auc"]),
                             _n(s["calibration_error"]), _n(s["positive_rate"]),
                             "yes" if s["judged"] else "too few rows"]
                            for s in segs["segments"]],
                           [col, "rows", "AUC", "calibration error", "positive rate", "judged"]))
    parts.append("<h2>Parameters</h2>")
    parts.append(_rows([[_e(k), f"<code>{_e(v)}</code>"] for k, v in
                        sorted(card["params"].items())], ["parameter", "value"]))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{_e(card['name'])} v"
            f"{_e(card['version'])} · Tessera</title><style>{CSS}</style></head><body>"
            + "".join(parts) + "</body></html>")


def model_card_router(registry: Any, prefix: str = "/ui") -> APIRouter:
    """GET ``{prefix}/models/{name}`` (the champion, else the latest version) and
    ``{prefix}/models/{name}/{ref}`` (a version number or alias)."""
    from serving.registry.model_card import build_card

    router = APIRouter(prefix=prefix)

    def card(name: str, ref: str | None) -> HTMLResponse:
        try:
            if ref is None:
                ref = "champion" if "champion" in registry.aliases(name) else "latest"
            return HTMLResponse(render_card(build_card(registry, name, ref)))
        except RegistryError as e:
            raise ApiError(404, "unknown_model", str(e), "model") from None

    @router.get("/models/{name}", response_class=HTMLResponse, tags=["dashboard"],
                responses=error_responses(404),
                summary="Model card of the champion (else the latest version)")
    def champion_card(name: str) -> HTMLResponse:
        return card(name, None)

    @router.get("/models/{name}/{ref}", response_class=HTMLResponse, tags=["dashboard"],
                responses=error_responses(404),
                summary="Model card of a version or alias")
    def ref_card(name: str, ref: str) -> HTMLResponse:
        return card(name, ref)

    return router
