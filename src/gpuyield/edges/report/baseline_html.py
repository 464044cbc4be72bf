"""``report.html`` for ``gpuyield baseline``: one self-contained page (inline CSS and SVG, no script, no
network), with busy vs really-active vs productive per GPU, idle $ over time, and output tokens per $."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from gpuyield.core.baseline import BaselineResult

__all__ = ["render_baseline_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d232a;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6670;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #d8dee4;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#5b6670}
table{border-collapse:collapse;font-size:13px;width:100%} th,td{border-bottom:1px solid #e4e8ec;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f5f7f9}
.nm{color:#9aa4ad} ul.notes{font-size:13px;color:#3d4852} svg text{font-size:11px;fill:#1d232a}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
"""
_COLORS = {"busy": "#f0a202", "active": "#2b7bb9", "productive": "#2e9e5b", "idle": "#d1495b", "tok": "#5c4d7d"}


def _fmt(v: float | None, spec: str = ",.2f", suffix: str = "") -> str:
    if v is None:
        return '<span class="nm">not measured</span>'
    return f"{v:{spec}}{suffix}"


def _pct(v: float | None) -> str:
    return _fmt(None if v is None else v * 100, ".1f", "%")


def _esc(v: object) -> str:
    return html.escape("" if v is None else str(v))


def _busy_chart(result: BaselineResult) -> str:
    rows = result.per_gpu
    if not rows:
        return "<p class='nm'>no GPU telemetry</p>"
    bar_h, gap, left, width = 13, 12, 250, 520
    height = len(rows) * (3 * bar_h + gap) + 30
    parts = [f'<svg role="img" aria-label="busy vs active vs productive per GPU" width="{left + width + 70}" '
             f'height="{height}" viewBox="0 0 {left + width + 70} {height}">']
    for k in range(0, 101, 25):
        x = left + width * k / 100
        parts.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{height - 20}" stroke="#e4e8ec"/>')
        parts.append(f'<text x="{x}" y="{height - 6}" text-anchor="middle">{k}%</text>')
    y = 4
    for r in rows:
        active = r.mean_sm_active if r.mean_sm_active is not None else r.mean_gr_engine_active
        label = f"{r.gpu_id} ({r.idle_reason})" if r.idle_reason == "no engine" else r.gpu_id
        parts.append(f'<text x="{left - 6}" y="{y + 1.5 * bar_h + 4}" text-anchor="end">{_esc(label[:40])}</text>')
        for kind, value in (("busy", r.mean_gpu_util), ("active", active), ("productive", r.productivity)):
            if value is None:
                parts.append(f'<text x="{left + 3}" y="{y + bar_h - 2}" class="nm" fill="#9aa4ad">'
                             f'{kind}: not measured</text>')
            else:
                w = max(width * min(value, 1.0), 0.5)
                parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_COLORS[kind]}">'
                             f'<title>{_esc(r.gpu_id)} {kind}: {value * 100:.1f}%</title></rect>')
                parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 2}">{kind} {value * 100:.1f}%</text>')
            y += bar_h
        y += gap
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{_COLORS[k]}"></i>{k}</span>' for k in ("busy", "active", "productive"))
    return (f'<div class="legend">{legend}</div>' + "".join(parts)
            + '<p class="sub">busy = DCGM_FI_DEV_GPU_UTIL; active = SM_ACTIVE (or GR_ENGINE_ACTIVE); productive = '
              'delivered ÷ achievable output tokens of the GPU\'s deployment.</p>')


def _idle_chart(result: BaselineResult) -> str:
    pts = result.idle_timeline
    if not pts:
        return "<p class='nm'>no time range</p>"
    values = [p.idle_usd if p.idle_usd is not None else p.idle_gpu_hours for p in pts]
    unit = "$" if all(p.idle_usd is not None for p in pts) else "GPU-h"
    top = max(values) or 1.0
    left, width, height = 60, 760, 180
    bw = width / len(pts)
    parts = [f'<svg role="img" aria-label="idle cost over time" width="{left + width + 10}" height="{height + 40}" '
             f'viewBox="0 0 {left + width + 10} {height + 40}">']
    for k in range(5):
        yv = top * k / 4
        yy = height - height * k / 4 + 5
        parts.append(f'<line x1="{left}" y1="{yy}" x2="{left + width}" y2="{yy}" stroke="#e4e8ec"/>')
        parts.append(f'<text x="{left - 4}" y="{yy + 4}" text-anchor="end">{unit if unit == "$" else ""}{yv:.3g}</text>')
    for i, (p, v) in enumerate(zip(pts, values, strict=True)):
        if i > 0 and p.start_s > pts[i - 1].end_s:  # a gap between captures taken at different times
            x = left + i * bw
            parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height + 5}" stroke="#5b6670" '
                         f'stroke-dasharray="3,3"><title>gap in the data</title></line>')
        h = height * v / top
        t = datetime.fromtimestamp(p.start_s, UTC).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(f'<rect x="{left + i * bw:.1f}" y="{height - h + 5:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="{_COLORS["idle"]}"><title>{t} UTC: {v:.4g} {unit} idle</title></rect>')
    t0 = datetime.fromtimestamp(pts[0].start_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    t1 = datetime.fromtimestamp(pts[-1].end_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts.append(f'<text x="{left}" y="{height + 25}">{t0}</text>')
    parts.append(f'<text x="{left + width}" y="{height + 25}" text-anchor="end">{t1}</text>')
    parts.append("</svg>")
    gaps = sum(1 for a, b in zip(pts[:-1], pts[1:], strict=True) if b.start_s > a.end_s)
    note = f'<p class="sub">{gaps + 1} separate capture windows, bins shown side by side (dashed line = gap).</p>'
    return "".join(parts) + (note if gaps else "")


def _tokens_chart(result: BaselineResult) -> str:
    rows = [(m.deployment, m.output_tokens / m.usd) for m in result.per_model
            if m.output_tokens is not None and m.usd]
    if not rows:
        return "<p class='nm'>not measured: needs ≥ 2 scrapes of an engine joined to priced GPUs</p>"
    top = max(v for _, v in rows) or 1.0
    left, width, bar_h = 260, 480, 18
    height = len(rows) * (bar_h + 8) + 10
    parts = [f'<svg role="img" aria-label="output tokens per dollar" width="{left + width + 110}" height="{height}" '
             f'viewBox="0 0 {left + width + 110} {height}">']
    y = 4
    for name, v in rows:
        w = max(width * v / top, 0.5)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{_esc(name[:40])}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_COLORS["tok"]}">'
                     f'<title>{_esc(name)}: {v:,.0f} output tokens per $</title></rect>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}">{v:,.0f} tok/$</text>')
        y += bar_h + 8
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_baseline_html(result: BaselineResult, *, title: str = "gpuyield baseline", generated_at: str = "") -> str:
    """The whole page as a string (deterministic for a given result and ``generated_at``)."""
    f = result.fleet
    cards = [
        ("GPUs", f"{f.gpus}"), ("GPU-hours", _fmt(f.gpu_hours, ",.3f")), ("cost", _fmt(f.usd, ",.2f", " $")),
        ("output tokens", _fmt(f.output_tokens, ",.0f")), ("$ / 1M output tokens", _fmt(f.usd_per_1m_output_tokens)),
        ("idle GPUs", f"{f.idle_gpus}"), ("idle GPU-hours", _fmt(f.idle_gpu_hours, ",.3f")),
        ("idle $", _fmt(f.idle_usd, ",.2f", " $")), ("idle $ / hour", _fmt(f.idle_usd_per_hour, ",.2f", " $")),
        ("mean GPU util (busy)", _pct(f.mean_gpu_util)), ("mean SM active", _pct(f.mean_sm_active)),
        ("energy", _fmt(f.energy_kwh, ",.4f", " kWh")), ("productivity", _pct(f.productivity)),
    ]
    card_html = "".join(f'<div class="card"><b>{v}</b><span>{_esc(k)}</span></div>' for k, v in cards)
    gpu_rows = [[_esc(r.gpu_id), _esc(r.device_name), _esc(r.deployment or r.idle_reason or r.pod or ""),
                 _fmt(r.gpu_hours, ",.4f"), _pct(r.mean_gpu_util), _pct(r.mean_sm_active), _pct(r.mean_gr_engine_active),
                 _fmt(r.mean_power_w, ",.1f", " W"), _fmt(r.usd, ",.4f"), _fmt(r.idle_usd, ",.4f"), _pct(r.productivity)]
                for r in result.per_gpu]
    model_rows = [[_esc(m.deployment), _esc(m.model), _esc(m.basis), _fmt(m.gpu_hours, ",.4f"),
                   _fmt(m.output_tokens, ",.0f"), _fmt(m.input_tokens, ",.0f"), _fmt(m.cached_input_tokens, ",.0f"),
                   _fmt(None if m.tpot_mean_s is None else m.tpot_mean_s * 1000, ",.1f", " ms"),
                   _fmt(m.usd_per_1m_output_tokens), _pct(m.productivity)]
                  for m in result.per_model]
    fleet_gaps = "".join(
        f"<li><b>fleet</b>: {_esc(g.cause)} — {_esc(g.detail)}"
        + (f"<br><code>{_esc(g.command)}</code>" if g.command else "") + "</li>" for g in result.gap)
    gaps = fleet_gaps + "".join(
        f"<li><b>{_esc(m.deployment)}</b>: {_esc(g.cause)} — {_esc(g.detail)}"
        + (f" ({g.lost_fraction:.0%} of achievable)" if g.lost_fraction is not None else "")
        + (f"<br><code>{_esc(g.command)}</code>" if g.command else "") + "</li>"
        for m in result.per_model for g in m.gap)
    tenants = ""
    if result.per_tenant:
        tenants = "<h2>Per tenant</h2>" + _table(
            ["tenant", "model", "requests", "input tokens", "output tokens", "share", "$"],
            [[_esc(t.tenant), _esc(t.model), _fmt(t.requests, ",.0f"), _fmt(t.input_tokens, ",.0f"),
              _fmt(t.output_tokens, ",.0f"), _pct(t.output_share), _fmt(t.usd, ",.4f")] for t in result.per_tenant])
    notes = "".join(f"<li>{_esc(n)}</li>" for n in result.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><h1>{_esc(title)}</h1><div class="sub">{_esc(generated_at)}</div>
<div class="cards">{card_html}</div>
<h2>Busy vs active vs productive, per GPU</h2>{_busy_chart(result)}
<h2>Idle cost over time</h2>{_idle_chart(result)}
<h2>Output tokens per $</h2>{_tokens_chart(result)}
<h2>Per GPU</h2>{_table(["GPU", "type", "deployment / state", "GPU-h", "busy", "SM active", "GR active", "power",
                         "$", "idle $", "productivity"], gpu_rows)}
<h2>Per model</h2>{_table(["deployment", "model", "basis", "GPU-h", "output tok", "input tok", "cached tok",
                           "TPOT", "$ / 1M out", "productivity"], model_rows)}
{tenants}
<h2>Where the gap comes from</h2><ul class="notes">{gaps or "<li class='nm'>nothing to explain</li>"}</ul>
<h2>Notes (not measured, assumptions)</h2><ul class="notes">{notes}</ul>
</body></html>
"""
