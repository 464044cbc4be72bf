"""``report.html`` for ``gpuyield plan``: one self-contained file (inline CSS and SVG, no script, no network).

Sections: the plan / naive / API table, the Pareto chart (cost vs p99 TTFT of every simulated point), the
cost breakdown, TTFT and TPOT CDFs (plan vs naive), per-replica utilisation, prices with source and date,
search statistics and the main rejection reasons.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from gpuyield.core.plan.economics import FleetEconomics
from gpuyield.core.plan.profile import WorkloadProfile
from gpuyield.core.plan.search import PlanResult
from gpuyield.core.plan.spec import PlanRequest
from gpuyield.core.plan.verify import SimPoint

__all__ = ["render_plan_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#57606a;font-size:13px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:right}th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:16px}.card{border:1px solid #d0d7de;border-radius:6px;padding:8px}
.kpi{font-size:28px;font-weight:600}.ok{color:#1a7f37}.bad{color:#cf222e}small{color:#57606a}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#1b1f24}
"""
_PLAN, _NAIVE, _OTHER, _FAIL = "#0969da", "#bc4c00", "#8c959f", "#cf222e"


def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: float | None, spec: str = ",.2f", prefix: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return prefix + format(x, spec)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


class _Axes:
    def __init__(self, w: int, h: int, x0: float, x1: float, y0: float, y1: float, *, logy: bool = False) -> None:
        self.w, self.h, self.ml, self.mr, self.mt, self.mb = w, h, 62, 14, 16, 40
        self.logy = logy
        if x1 <= x0:
            x1 = x0 + 1
        if logy:
            y0, y1 = math.log10(max(y0, 1e-3)), math.log10(max(y1, 1e-3))
        if y1 <= y0:
            y1 = y0 + 1
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1

    def x(self, v: float) -> float:
        return self.ml + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.ml - self.mr)

    def y(self, v: float) -> float:
        if self.logy:
            v = math.log10(max(v, 1e-3))
        return self.h - self.mb - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.mt - self.mb)

    def frame(self, xlabel: str, ylabel: str, xfmt: str = ",.0f", yfmt: str = ",.0f") -> str:
        parts = [f'<rect x="{self.ml}" y="{self.mt}" width="{self.w - self.ml - self.mr}" height="{self.h - self.mt - self.mb}" fill="none" stroke="#d0d7de"/>']
        for t in _ticks(self.x0, self.x1):
            X = self.x(t)
            parts.append(f'<line x1="{X:.1f}" x2="{X:.1f}" y1="{self.mt}" y2="{self.h - self.mb}" stroke="#eaeef2"/>')
            parts.append(f'<text x="{X:.1f}" y="{self.h - self.mb + 14}" text-anchor="middle">{_e(format(t, xfmt))}</text>')
        if self.logy:
            yt = [10.0**k for k in range(math.floor(self.y0), math.ceil(self.y1) + 1) if self.y0 <= k <= self.y1] or [10**self.y0]
        else:
            yt = _ticks(self.y0, self.y1)
        for t in yt:
            Y = self.y(t)
            parts.append(f'<line x1="{self.ml}" x2="{self.w - self.mr}" y1="{Y:.1f}" y2="{Y:.1f}" stroke="#eaeef2"/>')
            parts.append(f'<text x="{self.ml - 4}" y="{Y + 4:.1f}" text-anchor="end">{_e(format(t, yfmt))}</text>')
        parts.append(f'<text x="{(self.ml + self.w - self.mr) / 2:.0f}" y="{self.h - 6}" text-anchor="middle">{_e(xlabel)}</text>')
        parts.append(f'<text transform="translate(12,{(self.mt + self.h - self.mb) / 2:.0f}) rotate(-90)" text-anchor="middle">{_e(ylabel)}</text>')
        return "".join(parts)


def _svg(w: int, h: int, body: str, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{_e(title)}"><title>{_e(title)}</title>{body}</svg>')


def _pareto_svg(result: PlanResult, slo_ttft: float | None) -> str:
    pts = [p for p in result.simulated if math.isfinite(p.ttft_p99_ms) and math.isfinite(p.usd_per_hour)]
    if not pts:
        return "<p>No finite simulated points.</p>"
    xs = [p.usd_per_hour for p in pts]
    ys = [p.ttft_p99_ms for p in pts]
    ax = _Axes(640, 360, 0.0, max(xs) * 1.08, max(1.0, min(ys) * 0.8), max(ys) * 1.3, logy=True)
    body = [ax.frame("fleet cost, $/hour", "TTFT p99, ms (log)")]
    if slo_ttft:
        Y = ax.y(slo_ttft)
        body.append(f'<line x1="{ax.ml}" x2="{ax.w - ax.mr}" y1="{Y:.1f}" y2="{Y:.1f}" stroke="{_FAIL}" stroke-dasharray="5,4"/>')
        body.append(f'<text x="{ax.w - ax.mr - 4}" y="{Y - 4:.1f}" text-anchor="end" fill="{_FAIL}">SLO {slo_ttft:g} ms</text>')
    # The 2-D frontier (cost vs TTFT p99) as a staircase; the 3-D Pareto set (also TPOT) as blue rings.
    stair, best_ttft = [], math.inf
    for p in sorted(result.pareto, key=lambda p: (p.usd_per_hour, p.ttft_p99_ms)):
        if p.ttft_p99_ms < best_ttft:
            stair.append(p)
            best_ttft = p.ttft_p99_ms
    if len(stair) > 1:
        d = f"M{ax.x(stair[0].usd_per_hour):.1f},{ax.y(stair[0].ttft_p99_ms):.1f}"
        for prev, p in zip(stair, stair[1:], strict=False):
            d += f" L{ax.x(p.usd_per_hour):.1f},{ax.y(prev.ttft_p99_ms):.1f} L{ax.x(p.usd_per_hour):.1f},{ax.y(p.ttft_p99_ms):.1f}"
        body.append(f'<path d="{d}" fill="none" stroke="{_PLAN}" stroke-width="1.5" stroke-opacity="0.6"/>')
    for p in result.pareto:
        body.append(f'<circle cx="{ax.x(p.usd_per_hour):.1f}" cy="{ax.y(p.ttft_p99_ms):.1f}" r="5.5" fill="none" stroke="{_PLAN}" stroke-opacity="0.6"/>')
    for p in pts:
        color = _OTHER if p.meets_slo else _FAIL
        body.append(f'<circle cx="{ax.x(p.usd_per_hour):.1f}" cy="{ax.y(p.ttft_p99_ms):.1f}" r="3.5" fill="{color}" fill-opacity="0.7">'
                    f'<title>{_e(p.candidate)} x{p.level}: ${p.usd_per_hour:.2f}/h, TTFT p99 {p.ttft_p99_ms:.0f} ms, TPOT p99 {p.tpot_p99_ms:.1f} ms</title></circle>')
    for p, color, label in ((result.naive, _NAIVE, "naive"), (result.best, _PLAN, "plan")):
        if p is None or not math.isfinite(p.ttft_p99_ms):
            continue
        X, Y = ax.x(p.usd_per_hour), ax.y(p.ttft_p99_ms)
        body.append(f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="7" fill="none" stroke="{color}" stroke-width="2.5"/>')
        body.append(f'<text x="{X + 9:.1f}" y="{Y - 8:.1f}" fill="{color}" font-weight="bold">{label}</text>')
    return _svg(640, 360, "".join(body), "Pareto: cost vs TTFT p99")


def _cost_svg(econ: dict[str, FleetEconomics]) -> str:
    rows = [(k, e) for k, e in econ.items() if math.isfinite(e.usd_per_hour)]
    if not rows:
        return ""
    w, bar_h, gap = 640, 26, 14
    h = 30 + len(rows) * (bar_h + gap)
    vmax = max(e.usd_per_hour for _, e in rows) * 1.15 or 1.0
    scale = (w - 200) / vmax
    palette = ["#0969da", "#54aeff", "#bc4c00", "#fb8f44", "#8250df"]
    body = []
    for i, (k, e) in enumerate(rows):
        y = 10 + i * (bar_h + gap)
        body.append(f'<text x="4" y="{y + bar_h / 2 + 4:.0f}">{_e(k)}</text>')
        x = 70.0
        parts = [(f"{pc.pool}: {pc.num_gpus}x {pc.gpu_id}", pc.usd_per_hour) for pc in e.pools] or [("API, same traffic", e.usd_per_hour)]
        for j, (label, usd) in enumerate(parts):
            wpx = usd * scale
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{max(wpx, 1):.1f}" height="{bar_h}" fill="{palette[j % len(palette)]}">'
                        f'<title>{_e(label)}: ${usd:.2f}/h</title></rect>')
            if wpx > 90:
                body.append(f'<text x="{x + 4:.1f}" y="{y + bar_h / 2 + 4:.0f}" fill="#fff">{_e(label)}</text>')
            x += wpx
        body.append(f'<text x="{x + 6:.1f}" y="{y + bar_h / 2 + 4:.0f}">${e.usd_per_hour:,.2f}/h</text>')
    return _svg(w, h, "".join(body), "cost breakdown, $/hour")


def _cdf_svg(series: Sequence[tuple[str, str, Sequence[float]]], xlabel: str, limit: float | None) -> str:
    finite = [v for _, _, q in series for v in q if math.isfinite(v)]
    if not finite:
        return "<p>No latency data.</p>"
    hi = sorted(finite)[int(0.995 * (len(finite) - 1))] * 1.1
    if limit:
        hi = max(hi, limit * 1.1)
    ax = _Axes(420, 280, 0.0, hi, 0.0, 1.0)
    body = [ax.frame(xlabel, "fraction of requests", yfmt=".1f")]
    if limit:
        X = ax.x(limit)
        body.append(f'<line x1="{X:.1f}" x2="{X:.1f}" y1="{ax.mt}" y2="{ax.h - ax.mb}" stroke="{_FAIL}" stroke-dasharray="5,4"/>')
    for i, (label, color, q) in enumerate(series):
        if not q:
            continue
        n = len(q) - 1
        pts = [(min(v, hi), k / n) for k, v in enumerate(q) if math.isfinite(v)]
        d = " ".join(f"{'M' if j == 0 else 'L'}{ax.x(x):.1f},{ax.y(y):.1f}" for j, (x, y) in enumerate(pts))
        body.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        body.append(f'<text x="{ax.ml + 8}" y="{ax.mt + 16 + 14 * i}" fill="{color}" font-weight="bold">{_e(label)}</text>')
    return _svg(420, 280, "".join(body), f"CDF of {xlabel}")


def _util_svg(p: SimPoint) -> str:
    items = sorted(p.outcome.replica_utilisation.items())
    if not items:
        return "<p>No per-replica data.</p>"
    w = 640
    bw = max(4.0, min(40.0, (w - 80) / len(items) - 2))
    h = 220
    ax = _Axes(w, h, 0, len(items), 0.0, 1.0)
    body = [f'<text x="{w - ax.mr}" y="{ax.mt - 2}" text-anchor="end">busy fraction per replica (plan)</text>']
    for i, (rid, u) in enumerate(items):
        x = ax.ml + i * (bw + 2)
        y = ax.y(min(1.0, u))
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{ax.h - ax.mb - y:.1f}" fill="{_PLAN}">'
                    f'<title>{_e(rid)}: {u:.0%}</title></rect>')
        if len(items) <= 24:
            body.append(f'<text x="{x + bw / 2:.1f}" y="{ax.h - ax.mb + 12}" text-anchor="middle" font-size="9">{_e(rid)}</text>')
    for t in (0.0, 0.5, 1.0):
        Y = ax.y(t)
        body.append(f'<line x1="{ax.ml - 4}" x2="{w - ax.mr}" y1="{Y:.1f}" y2="{Y:.1f}" stroke="#eaeef2"/>'
                    f'<text x="{ax.ml - 6}" y="{Y + 4:.1f}" text-anchor="end">{t:.0%}</text>')
    return _svg(w, h, "".join(body), "per-replica utilisation")


def _table(result: PlanResult) -> str:
    econ = result.economics
    cols = [k for k in ("plan", "naive", "api") if k in econ]
    pts = {"plan": result.best, "naive": result.naive}
    cands = {"plan": result.best_candidate, "naive": result.naive_candidate}

    def dep(k: str) -> str:
        c, p = cands.get(k), pts.get(k)
        if c is None or p is None:
            return "hosted API"
        pools = " + ".join(
            f"{n}x {pl.gpu_id} tp{pl.tp}" + (f"pp{pl.pp}" if pl.pp > 1 else "")
            + ("" if (pl.weight_precision, pl.kv_dtype) == ("bf16", "bf16") else f" w{pl.weight_precision}/kv{pl.kv_dtype}")
            + f" ({pl.role})"
            for pl, n in zip(c.pools, p.replicas, strict=True)
        )
        return f"{pools}; router {c.router}"

    rows = [
        ("deployment", lambda k: _e(dep(k))),
        ("GPUs", lambda k: str(econ[k].num_gpus) if k != "api" else "-"),
        ("$/hour", lambda k: _fmt(econ[k].usd_per_hour, ",.2f", "$")),
        ("$/month (730 h)", lambda k: _fmt(econ[k].usd_per_hour * 730, ",.0f", "$")),
        ("$ per 1M input tokens", lambda k: _fmt(econ[k].usd_per_1m_input, ",.4f", "$")),
        ("$ per 1M output tokens", lambda k: _fmt(econ[k].usd_per_1m_output, ",.4f", "$")),
        ("utilisation (busy)", lambda k: _fmt(econ[k].utilisation * 100, ".0f") + ("%" if math.isfinite(econ[k].utilisation) else "")),
        ("TTFT p99 (sim), ms", lambda k: _fmt(pts[k].ttft_p99_ms, ",.0f") if pts.get(k) else "-"),
        ("TPOT p99 (sim), ms", lambda k: _fmt(pts[k].tpot_p99_ms, ",.1f") if pts.get(k) else "-"),
        ("break-even vs API, tokens/month", lambda k: _break_even(econ[k])),
    ]
    head = "<tr><th></th>" + "".join(f"<th>{_e(k)}</th>" for k in cols) + "</tr>"
    body = "".join("<tr><td>" + _e(label) + "</td>" + "".join(f"<td>{fn(k)}</td>" for k in cols) + "</tr>" for label, fn in rows)
    return f"<table>{head}{body}</table>"


def _break_even(e: FleetEconomics) -> str:
    """Break-even volume, flagged when it is above what this fleet was verified to carry."""
    be = e.break_even_tokens_per_month
    if be is None:
        return "-"
    text = _fmt(be, ".3g")
    cap = e.capacity_tokens_per_month
    if math.isfinite(cap) and be > cap:
        text += f" (above the verified {_fmt(cap, '.3g')}/month: not reachable without a bigger fleet)"
    return text


def render_plan_report(result: PlanResult, request: PlanRequest, profile: WorkloadProfile, info: object) -> str:
    """The whole report as one HTML string."""
    econ = result.economics
    plan_e, naive_e = econ.get("plan"), econ.get("naive")
    ratio = plan_e.usd_per_hour / naive_e.usd_per_hour if plan_e and naive_e and naive_e.usd_per_hour > 0 else None
    rate_scale = getattr(info, "rate_scale", 1.0)
    slo = request.slo
    cdf_ttft = [("plan", _PLAN, result.best.outcome.ttft_quantiles_ms)]
    cdf_tpot = [("plan", _PLAN, result.best.outcome.tpot_quantiles_ms)]
    if result.naive is not None:
        cdf_ttft.append(("naive", _NAIVE, result.naive.outcome.ttft_quantiles_ms))
        cdf_tpot.append(("naive", _NAIVE, result.naive.outcome.tpot_quantiles_ms))
    prices: set[tuple[str, float, str, str]] = set()
    for e in econ.values():
        prices.update(e.prices)
    price_rows = "".join(
        f"<tr><td>{_e(g)}</td><td>{_fmt(u, ',.4f', '$') if g != 'api' else _e(f'{request_api(econ)}')}</td><td>{_e(s)}</td><td>{_e(a)}</td></tr>"
        for g, u, s, a in sorted(prices, key=lambda t: t[0])
    )
    counts: dict[str, int] = {}
    for r in result.rejections:
        counts[f"{r.stage}: {r.kind}"] = counts.get(f"{r.stage}: {r.kind}", 0) + 1
    sim_rej = [r for r in result.rejections if r.stage == "simulate"][:12]
    rej_rows = "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in sorted(counts.items()))
    rej_list = "".join(f"<li><code>{_e(r.candidate)}</code>: {_e(r.kind)}: {_e(r.reason)}</li>" for r in sim_rej)
    st = result.stats
    cand = result.best_candidate
    knobs = "".join(
        f"<tr><td>{_e(p.role)}</td><td>{n}</td><td>{_e(p.gpu_id)}</td><td>{p.tp}/{p.pp}/{p.ep}</td><td>{p.max_num_seqs}</td>"
        f"<td>{p.max_num_batched_tokens}</td><td>{'on' if p.enable_prefix_caching else 'off'}</td><td>{_e(p.kv_offload)}</td>"
        f"<td>{_e(p.weight_precision)}/{_e(p.kv_dtype)}</td></tr>"
        for p, n in zip(cand.pools, result.best.replicas, strict=True)
    )
    kpi = (f'<div class="card"><div class="kpi">{_fmt(plan_e.usd_per_hour if plan_e else None, ",.2f", "$")}/h</div><small>plan, {result.best.num_gpus} GPUs</small></div>'
           + (f'<div class="card"><div class="kpi">{_fmt(naive_e.usd_per_hour, ",.2f", "$")}/h</div><small>naive, {naive_e.num_gpus} GPUs</small></div>' if naive_e else "")
           + (f'<div class="card"><div class="kpi {"ok" if ratio <= 1 else "bad"}">{ratio:.2f}x</div><small>plan / naive cost</small></div>' if ratio is not None else "")
           + (f'<div class="card"><div class="kpi">{_fmt(result.capacity_rate_scale, ".2f")}x</div><small>traffic carried at the SLO</small></div>' if result.capacity_rate_scale is not None else ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>gpuyield plan: {_e(request.model_id)} on {_e(profile.name)}</title><style>{_CSS}</style></head>
<body>
<h1>gpuyield plan: {_e(request.model_id)}</h1>
<div class="sub">workload <b>{_e(profile.name)}</b> x{rate_scale:g} ({profile.num_requests:,} requests, {profile.rate_per_s:.2f} req/s mean,
{profile.sizing_rate_per_s:.2f} req/s in bursts; mean {profile.input_mean_tokens:.0f} in / {profile.output_mean_tokens:.0f} out tokens) ·
SLO {_e(slo.describe())} · mode {_e(result.mode.value)} · GPUs {_e(", ".join(request.gpu_ids))} · seed {request.seed}</div>
<div class="grid" style="margin-top:12px">{kpi}</div>
<h2>Plan vs naive vs API</h2>
{_table(result)}
<p><small>Naive: one TP1 replica per GPU on the cheapest allowed GPU that fits, engine defaults (prefix caching and chunked prefill on), round-robin routing, fewest replicas meeting the SLO in simulation. Cost split between input and output tokens by the share of engine time spent on prefill. Break-even: monthly tokens (at this workload's input:output mix) above which the fleet is cheaper than the API.</small></p>
<h2>Chosen deployment</h2>
<p><code>{_e(cand.key())}</code></p>
<table><tr><th>pool</th><th>replicas</th><th>GPU</th><th>TP/PP/EP</th><th>max_num_seqs</th><th>token budget</th><th>prefix cache</th><th>KV offload</th><th>weights/KV</th></tr>{knobs}</table>
<h2>Pareto: cost vs TTFT p99 (every simulated point)</h2>
{_pareto_svg(result, slo.ttft_p99_ms)}
<p><small>Grey: meets the SLO; red: misses it; blue rings: the Pareto set in (cost, TTFT p99, TPOT p99); blue staircase: the cost vs TTFT p99 frontier. Hover a point for its configuration.</small></p>
<h2>Cost breakdown</h2>
{_cost_svg(econ)}
<h2>Latency CDFs (simulated, plan vs naive)</h2>
<div class="grid">{_cdf_svg(cdf_ttft, "TTFT, ms", slo.ttft_p99_ms)}{_cdf_svg(cdf_tpot, "TPOT, ms", slo.tpot_p99_ms)}</div>
<h2>Per-replica utilisation</h2>
{_util_svg(result.best)}
<h2>Prices used</h2>
<table><tr><th>item</th><th>$/GPU-hour</th><th>source</th><th>as of</th></tr>{price_rows}</table>
<h2>Search</h2>
<table><tr><th>candidates enumerated</th><th>screened</th><th>feasible after screen</th><th>simulated</th><th>simulations</th><th>wall time</th></tr>
<tr><td>{int(st.get("candidates_enumerated", 0))}</td><td>{int(st.get("candidates_screened", 0))}</td><td>{int(st.get("candidates_feasible_after_screen", 0))}</td>
<td>{int(st.get("candidates_simulated", 0))}</td><td>{int(st.get("simulations", 0))}</td><td>{getattr(info, "wall_time_s", 0.0):.1f} s</td></tr></table>
<table><tr><th>rejections</th><th>count</th></tr>{rej_rows}</table>
<ul>{rej_list}</ul>
{"".join(f"<p><small>note: {_e(n)}</small></p>" for n in result.notes)}
<p class="sub">generated by gpuyield {_e(getattr(info, "gpuyield_version", ""))}</p>
</body></html>
"""


def request_api(econ: dict[str, FleetEconomics]) -> str:
    a = econ.get("api")
    if a is None:
        return "-"
    return f"${a.usd_per_1m_input:.3f} in / ${a.usd_per_1m_output:.3f} out per 1M tokens"
