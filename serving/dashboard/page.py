"""Render the ``/ui`` page: server-side HTML plus one JSON block of Chart.js configs.

The server decides every number and label; the browser only draws (the vendored Chart.js, no
CDN, so the page works offline). Each panel renders from one snapshot entry and falls back to
"no data yet" -- or the provider's error -- when it has nothing.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable

LIVE = "rgba(37, 99, 235, 0.75)"
REF = "rgba(148, 163, 184, 0.75)"
ALERT = "rgba(220, 38, 38, 0.85)"
PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#dc2626"]


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def _num(x: object, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec) if isinstance(x, int | float) else _e(x)


def _empty(panel: dict) -> str:
    if "error" in panel:
        return f'<p class="empty error">source failed: {_e(panel["error"])}</p>'
    return '<p class="empty">no data yet</p>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


class Charts:
    """Collects chart configs while panels render; emitted once as JSON at the end."""

    def __init__(self) -> None:
        self.specs: dict[str, dict] = {}

    def add(self, kind: str, data: dict, title: str, options: dict | None = None) -> str:
        cid = f"chart-{len(self.specs)}"
        opts = {
            "animation": False,
            "responsive": True,
            "maintainAspectRatio": False,
            "plugins": {"title": {"display": True, "text": title}},
        }
        opts.update(options or {})
        self.specs[cid] = {"type": kind, "data": data, "options": opts}
        return f'<div class="chart"><canvas id="{cid}" data-title="{_e(title)}"></canvas></div>'

    def json(self) -> str:
        # no "<" at all inside the <script> element: "</script>" would end it and "<!--<script>"
        # would make the HTML parser swallow the rest of the page (names are user data)
        text = json.dumps(self.specs, default=str)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- panels -----------------------------------------------------------------------------------


def _freshness(panel: dict, charts: Charts) -> str:
    rows = panel["rows"]
    if not rows:
        return _empty(panel)
    chart = charts.add(
        "bar",
        {
            "labels": [r["view"] for r in rows],
            "datasets": [
                {
                    "label": "age of newest event (s)",
                    "data": [r["age_s"] for r in rows],
                    "backgroundColor": LIVE,
                }
            ],
        },
        "Feature freshness (seconds)",
    )
    table = _table(
        ["view", "age (s)", "consumer lag"],
        [[_e(r["view"]), _num(r["age_s"]), _num(r.get("lag"))] for r in rows],
    )
    return chart + table


def _throughput(panel: dict, charts: Charts) -> str:
    rows = panel["rows"]
    if not rows:
        return _empty(panel)
    chart = charts.add(
        "bar",
        {
            "labels": [r["name"] for r in rows],
            "datasets": [
                {
                    "label": "per second",
                    "data": [r["per_s"] for r in rows],
                    "backgroundColor": PALETTE[1],
                }
            ],
        },
        "Throughput (per second)",
    )
    table = _table(
        ["source", "per second", "total"],
        [[_e(r["name"]), _num(r["per_s"]), _num(r.get("total"), ",")] for r in rows],
    )
    return chart + table


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    fmt = [format(e, ".3g") for e in edges]
    return (
        [f"≤{fmt[0]}"] + [f"{a}–{b}" for a, b in zip(fmt, fmt[1:], strict=False)] + [f">{fmt[-1]}"]
    )


def _monitors(panel: dict, charts: Charts) -> str:
    if not panel["rows"]:
        return _empty(panel)
    out = []
    for rep in panel["rows"]:
        status = rep.get("status", "ok")
        out.append(
            f"<h3>{_e(rep['model'])} v{_e(rep.get('version') or '?')} "
            f'<span class="badge {_e(status)}">{_e(status.upper())}</span> '
            f"<small>{_num(rep.get('rows'), ',')} predictions in window</small></h3>"
        )
        if rep.get("alerts"):
            items = "".join(f"<li>{_e(a['column'])}: {_e(a['kind'])}</li>" for a in rep["alerts"])
            out.append(f'<ul class="alerts">{items}</ul>')
        out.append(
            _table(
                ["column", "PSI", "KS", "KS p", "nulls", "ref nulls", "out of range", "alerts"],
                [
                    [
                        _e(c["name"]),
                        _num(c["psi"]),
                        _num(c["ks"]),
                        _num(c["ks_p"], ".2g"),
                        _num(c["null_rate"]),
                        _num(c["ref_null_rate"]),
                        _num(c["out_of_range_rate"]),
                        _e(", ".join(c["alerts"]) or "–"),
                    ]
                    for c in rep["columns"]
                ],
            )
        )
        grid = []
        for c in rep["columns"]:
            live_colour = ALERT if c["alerts"] else LIVE
            title = f"{c['name']}  PSI {_num(c['psi'])}  KS p {_num(c['ks_p'], '.2g')}"
            grid.append(
                charts.add(
                    "bar",
                    {
                        "labels": _bin_labels(c["edges"]),
                        "datasets": [
                            {"label": "reference", "data": c["ref_hist"], "backgroundColor": REF},
                            {
                                "label": "live",
                                "data": c["live_hist"],
                                "backgroundColor": live_colour,
                            },
                        ],
                    },
                    title,
                    {"scales": {"y": {"title": {"display": True, "text": "share"}}}},
                )
            )
        out.append('<div class="grid">' + "".join(grid) + "</div>")
    return "".join(out)


def _participants(rep: dict) -> list[tuple[str, dict]]:
    out = [(f"champion v{rep['champion']['version']}", rep["champion"])]
    out += [(f"arm {a['name']} v{a['version']}", a) for a in rep.get("arms", [])]
    out += [(f"shadow v{s['version']}", s) for s in rep.get("shadows", [])]
    return out


def _zoom(values: list) -> dict:
    """A y axis fitted to the values (AUCs sit near each other, far from zero)."""
    vals = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not vals:
        return {}
    pad = max(0.01, (max(vals) - min(vals)) * 0.2)
    return {"min": max(0.0, min(vals) - pad), "max": min(1.0, max(vals) + pad)}


def _decision_cell(seq: dict) -> str:
    if not seq:
        return ""
    word = seq.get("decision", "")
    cls = {"better": "badge", "worse": "badge alert"}.get(word, "")
    return f'<b class="{cls}">{_e(word)}</b> ({_num(seq.get("labels"), ",")} labels)<br>' + _e(
        seq.get("sentence", "")
    )


def _sequence_chart(people: list[tuple[str, dict]], level: int, charts: Charts) -> str:
    """Each challenger's confidence sequence (lower and upper bound) against labels so far."""
    sets, metrics = [], []
    for i, (name, m) in enumerate(people[1:], start=1):
        seq = (m.get("vs_champion") or {}).get("sequential") or {}
        metrics.append(seq.get("metric") or "")
        path = (seq.get(seq.get("metric") or "") or {}).get("path") or []
        pts = [p for p in path if None not in p]
        if not pts:
            continue
        colour = PALETTE[i % len(PALETTE)]
        for k, bound in ((1, "lower"), (2, "upper")):
            sets.append(
                {
                    "label": f"{name} {bound}",
                    "data": [{"x": p[0], "y": p[k]} for p in pts],
                    "showLine": True,
                    "borderColor": colour,
                    "backgroundColor": colour,
                    "pointRadius": 1,
                }
            )
    if not sets:
        return ""
    xs = [pt["x"] for d in sets for pt in d["data"]]
    sets.append(
        {
            "label": "no difference",
            "data": [{"x": min(xs), "y": 0}, {"x": max(xs), "y": 0}],
            "showLine": True,
            "borderColor": "#94a3b8",
            "borderDash": [4, 4],
            "pointRadius": 0,
        }
    )
    return charts.add(
        "scatter",
        {"datasets": sets},
        f"Improvement over the champion: {level}% anytime-valid confidence sequence vs labels",
        {
            "scales": {
                "x": {"title": {"display": True, "text": "labels"}},
                "y": {
                    "title": {
                        "display": True,
                        "text": f"{' / '.join(sorted(set(metrics)))} improvement (> 0: better)",
                    }
                },
            }
        },
    )


def _experiments(panel: dict, charts: Charts) -> str:
    if not panel["rows"]:
        return _empty(panel)
    out = []
    for rep in panel["rows"]:
        people = _participants(rep)
        level = round(100 * (1 - rep.get("alpha", 0.05)))
        out.append(
            f"<h3>{_e(rep['model'])} <small>spec revision {_e(rep.get('revision'))}</small></h3>"
        )
        labels = [name for name, _ in people]
        ci = [(m.get("ci") or {}).get("auc") for _, m in people]
        auc = charts.add(
            "bar",
            {
                "labels": labels,
                "datasets": [
                    {
                        "type": "bar",
                        "label": f"AUC {level}% CI",
                        "data": [list(c) if c and None not in c else None for c in ci],
                        "backgroundColor": REF,
                        "barPercentage": 0.4,
                    },
                    {
                        "type": "line",
                        "label": "AUC",
                        "data": [m.get("auc") for _, m in people],
                        "showLine": False,
                        "pointRadius": 6,
                        "backgroundColor": PALETTE[0],
                        "borderColor": PALETTE[0],
                    },
                ],
            },
            "AUC with bootstrap confidence intervals",
            {
                "scales": {
                    "y": _zoom([v for c in ci if c for v in c] + [m.get("auc") for _, m in people])
                }
            },
        )
        calib_sets = [
            {
                "label": "perfect",
                "data": [{"x": 0, "y": 0}, {"x": 1, "y": 1}],
                "showLine": True,
                "borderColor": "#94a3b8",
                "borderDash": [4, 4],
                "pointRadius": 0,
            }
        ]
        for i, (name, m) in enumerate(people):
            pts = [
                {"x": b["mean_score"], "y": b["positive_rate"]} for b in m.get("reliability") or []
            ]
            if pts:
                colour = PALETTE[i % len(PALETTE)]
                calib_sets.append(
                    {
                        "label": name,
                        "data": pts,
                        "showLine": True,
                        "borderColor": colour,
                        "backgroundColor": colour,
                    }
                )
        axes = {"min": 0, "max": 1}
        calib = charts.add(
            "scatter",
            {"datasets": calib_sets},
            "Calibration: observed positive rate vs mean score",
            {
                "scales": {
                    "x": {**axes, "title": {"display": True, "text": "mean score"}},
                    "y": {**axes, "title": {"display": True, "text": "positive rate"}},
                }
            },
        )
        out.append(f'<div class="grid two">{auc}{calib}</div>')
        seq = _sequence_chart(people, level, charts)
        if seq:
            out.append(f'<div class="grid two">{seq}</div>')
        out.append(
            _table(
                [
                    "who",
                    "predictions",
                    "labelled",
                    "AUC",
                    "AUC CI",
                    "logloss",
                    "Brier",
                    "p99 ms",
                    "decision (anytime-valid)",
                    "fixed-horizon verdict (one look)",
                ],
                [
                    [
                        _e(name),
                        _num(m.get("predictions"), ","),
                        _num(m.get("labelled"), ","),
                        _num(m.get("auc"), ".4f"),
                        "–" if not c else f"[{_num(c[0], '.4f')}, {_num(c[1], '.4f')}]",
                        _num(m.get("logloss"), ".4f"),
                        _num(m.get("brier"), ".4f"),
                        _num(m.get("p99_ms")),
                        _decision_cell((m.get("vs_champion") or {}).get("sequential") or {}),
                        _e(((m.get("vs_champion") or {}).get("verdict") or {}).get("sentence", "")),
                    ]
                    for (name, m), c in zip(people, ci, strict=True)
                ],
            )
        )
    return "".join(out)


def _lineage(panel: dict) -> str:
    rows = panel["rows"]
    if not rows:
        return _empty(panel)
    return _table(
        ["model", "version", "parent", "created", "training set", "metrics", "aliases"],
        [
            [
                _e(r.get("model")),
                _e(r.get("version")),
                _e(r.get("parent") or "–"),
                _e(r.get("created")),
                f"<code>{_e(r.get('training_set') or '–')}</code>",
                _e(", ".join(f"{k} {_num(v, '.4g')}" for k, v in (r.get("metrics") or {}).items())),
                _e(", ".join(r.get("aliases") or [])),
            ]
            for r in rows
        ],
    )


def _what(r: dict) -> str:
    """One line for an audit entry (``serving.auth.audit.describe``)."""
    from serving.auth.audit import describe

    return describe(r)


def _audit(panel: dict) -> str:
    rows = panel["rows"]
    if not rows:
        return _empty(panel)
    return _table(
        ["when", "model", "who", "what", "why"],
        [
            [
                _e(r.get("when") or r.get("at") or r.get("ts")),
                _e(r.get("model") or "–"),
                _e(r.get("who")),
                _e(_what(r)),
                _e(r.get("why")),
            ]
            for r in reversed(rows)
        ],
    )


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f8fafc;
color:#0f172a}
header{background:#0f172a;color:#f8fafc;padding:12px 24px;display:flex;gap:16px;
align-items:baseline}
header h1{font-size:18px;margin:0}header small{color:#94a3b8}
main{padding:16px 24px;display:grid;gap:16px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 16px}
section h2{font-size:15px;margin:0 0 8px}h3{font-size:14px;margin:12px 0 6px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px}
.grid.two{grid-template-columns:repeat(auto-fill,minmax(420px,1fr))}
.chart{position:relative;height:220px}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:13px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e2e8f0}
th{color:#475569;font-weight:600}
.empty{color:#64748b;font-style:italic}.error{color:#b91c1c}
.badge{font-size:11px;padding:1px 6px;border-radius:4px;background:#dcfce7;color:#166534}
.badge.alert{background:#fee2e2;color:#991b1b}
ul.alerts{color:#991b1b;margin:4px 0}
"""

JS = """
const specs = JSON.parse(document.getElementById('chart-specs').textContent);
window.tesseraCharts = {};
for (const [id, cfg] of Object.entries(specs)) {
  const el = document.getElementById(id);
  if (el && window.Chart) window.tesseraCharts[id] = new Chart(el, cfg);
}
document.body.dataset.charts = String(Object.keys(window.tesseraCharts).length);
"""


def render(snapshot: dict[str, dict], static_url: str, refresh_s: int | None = 15) -> str:
    """The whole page from ``DashboardData.snapshot()``."""
    charts = Charts()
    sections = [
        ("freshness", "Feature freshness", _freshness(snapshot["freshness"], charts)),
        ("throughput", "Throughput", _throughput(snapshot["throughput"], charts)),
        ("drift", "Drift per feature: live vs reference", _monitors(snapshot["monitors"], charts)),
        ("experiments", "Experiments", _experiments(snapshot["experiments"], charts)),
        ("lineage", "Model lineage", _lineage(snapshot["lineage"])),
        ("audit", "Audit log", _audit(snapshot["audit"])),
    ]
    body = "".join(
        f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>'
        for sid, title, content in sections
    )
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<title>Tessera</title>{meta}<link rel="icon" href="data:,"><style>{CSS}</style>'
        f'<script src="{_e(static_url)}/chart.umd.min.js"></script></head><body>'
        "<header><h1>Tessera</h1><small>features · models · drift · experiments</small>"
        f"</header><main>{body}</main>"
        f'<script type="application/json" id="chart-specs">{charts.json()}</script>'
        f"<script>{JS}</script></body></html>"
    )


def content_security_policy() -> str:
    """The page's CSP: its own inline script and style by hash, Chart.js from /ui/static,
    nothing else (no other origin, no inline script an injected name could add)."""
    import base64
    import hashlib

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    return (f"default-src 'none'; script-src 'self' {digest(JS)}; style-src {digest(CSS)}; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
