"""Self-contained HTML report of ``gpuyield validate``: error tables and predicted-vs-measured plots.

Inline SVG only (no scripts, no network): one log-log scatter per metric (points coloured by engine, the
y = x line and ±10 % / ±20 % bands), and error tables per GPU, engine and model.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from typing import Any

from gpuyield.core.perf.validation import error_summary

__all__ = ["group_errors", "render_validation_html"]

_COLOURS = {"vllm": "#1f77b4", "sglang": "#d62728", "trtllm": "#2ca02c"}
_OTHER = "#7f7f7f"


def group_errors(rows: list[dict[str, Any]], key: str, metric: str) -> dict[str, dict[str, Any]]:
    """Error summary of ``metric`` per value of ``key`` (e.g. per gpu)."""
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        p, m = r.get(f"predicted_{metric}"), r.get(f"measured_{metric}")
        if p is not None and m:
            pairs[str(r.get(key))].append((float(p), float(m)))
    return {k: error_summary(v) for k, v in sorted(pairs.items())}


def _points(v: Any) -> str:
    """A share of a MAPE in percentage points (0.087 -> 8.7)."""
    return "—" if v is None else f"{100 * v:.1f}"


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "—"
    if pct:
        return f"{100 * v:.1f}%"
    return str(v)


def _scatter(rows: list[dict[str, Any]], metric: str, title: str, w: int = 440, h: int = 400) -> str:
    pts = [
        (float(r[f"measured_{metric}"]), float(r[f"predicted_{metric}"]), str(r.get("engine", "")))
        for r in rows
        if r.get(f"measured_{metric}") and r.get(f"predicted_{metric}")
    ]
    pad = 48
    if not pts:
        return f"<p>{html.escape(title)}: no measured values.</p>"
    lo = min(min(m, p) for m, p, _ in pts)
    hi = max(max(m, p) for m, p, _ in pts)
    lo, hi = math.log10(lo) - 0.05, math.log10(hi) + 0.05

    def sx(v: float) -> float:
        return pad + (math.log10(v) - lo) / (hi - lo) * (w - 2 * pad)

    def sy(v: float) -> float:
        return h - pad - (math.log10(v) - lo) / (hi - lo) * (h - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">'
    ]
    parts.append(f'<rect x="0" y="0" width="{w}" height="{h}" fill="white" stroke="#ccc"/>')
    a, b = 10**lo, 10**hi
    for f, col in ((1.2, "#f3e0e0"), (1.1, "#e0f0e0")):
        parts.append(
            f'<polygon points="{sx(a):.1f},{sy(a * f):.1f} {sx(b / f):.1f},{sy(b):.1f} {sx(b):.1f},{sy(b):.1f} '
            f'{sx(b):.1f},{sy(b / f):.1f} {sx(a * f):.1f},{sy(a):.1f} {sx(a):.1f},{sy(a):.1f}" fill="{col}"/>'
        )
    parts.append(f'<line x1="{sx(a):.1f}" y1="{sy(a):.1f}" x2="{sx(b):.1f}" y2="{sy(b):.1f}" stroke="#333"/>')
    for e in range(math.ceil(lo), math.floor(hi) + 1):
        v = 10.0**e
        parts.append(
            f'<text x="{sx(v):.1f}" y="{h - pad + 16}" font-size="10" text-anchor="middle">{v:g}</text>'
        )
        parts.append(f'<text x="{pad - 6}" y="{sy(v) + 3:.1f}" font-size="10" text-anchor="end">{v:g}</text>')
    for m, p, eng in pts:
        parts.append(
            f'<circle cx="{sx(m):.1f}" cy="{sy(p):.1f}" r="2" fill="{_COLOURS.get(eng, _OTHER)}" fill-opacity="0.55"/>'
        )
    parts.append(f'<text x="{w / 2}" y="16" font-size="13" text-anchor="middle">{html.escape(title)}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 8}" font-size="11" text-anchor="middle">measured (log)</text>')
    parts.append(
        f'<text x="12" y="{h / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {h / 2})">predicted (log)</text>'
    )
    y = 30
    for eng, col in _COLOURS.items():
        parts.append(
            f'<circle cx="{w - 90}" cy="{y}" r="4" fill="{col}"/><text x="{w - 80}" y="{y + 4}" font-size="11">{eng}</text>'
        )
        y += 14
    parts.append("</svg>")
    return "".join(parts)


def _table(title: str, groups: dict[str, dict[str, dict[str, Any]]]) -> str:
    keys = sorted({k for g in groups.values() for k in g})
    out = [f"<h3>{html.escape(title)}</h3><table><tr><th></th>"]
    for metric in groups:
        out.append(f"<th>{html.escape(metric)} n</th><th>MAPE</th><th>median</th><th>p90</th><th>bias</th>")
    out.append("</tr>")
    for k in keys:
        out.append(f"<tr><td>{html.escape(k)}</td>")
        for g in groups.values():
            s = g.get(k, {})
            out.append(
                f"<td>{s.get('n', 0)}</td><td>{_fmt(s.get('mape'))}</td><td>{_fmt(s.get('median_ape'))}</td>"
                f"<td>{_fmt(s.get('p90_ape'))}</td><td>{_fmt(s.get('bias'))}</td>"
            )
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _own_rows_text(own: dict[str, Any] | None) -> str:
    """How the report's rows relate to the calibration's own measurements (``validate_rows``' ``own_rows``)."""
    if own is None or own["left_out"]:
        return ", each without its own measurement (leave-one-out)."
    why = (
        "as asked (--leave-own-out no)"
        if own.get("decided") == "asked"
        else "as this file is not the calibration's own data"
    )
    return (
        f"; {own['in_table']} of the {own['measured_rows']} measured rows are measurements the calibration holds"
        f" and were used as such, {why}: not a leave-one-out error."
        + (f" Note: {html.escape(own['note'])}." if own.get("note") else "")
    )


def render_validation_html(result: dict[str, Any], title: str = "gpuyield validate") -> str:
    """The whole report as one HTML string."""
    rows = result["rows"]
    metrics = [m for m, s in result["summary"].items() if s.get("n")]
    summary_rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{s['n']}</td><td>{_fmt(s['mape'])}</td><td>{_fmt(s['median_ape'])}</td>"
        f"<td>{_fmt(s['p90_ape'])}</td><td>{_fmt(s['bias'])}</td></tr>"
        for m, s in result["summary"].items()
    )
    body = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:1400px}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ddd;padding:3px 7px;font-size:12px;text-align:right}td:first-child{text-align:left}"
        ".plots{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{result['num_rows']} rows; coverage {100 * result['coverage']:.1f}% "
        f"({len(result['unsupported'])} unsupported). Errors are |predicted − measured| / measured; bias is the "
        "mean signed relative error."
        + (
            f" {result['corrected_rows']} rows were corrected by the calibration's measured operating points"
            + _own_rows_text(result.get("own_rows"))
            if result.get("corrected_rows")
            else ""
        )
        + "</p>",
        "<table><tr><th>metric</th><th>n</th><th>MAPE</th><th>median APE</th><th>p90 APE</th><th>bias</th></tr>",
        summary_rows,
        "</table><div class='plots'>",
    ]
    for m in metrics:
        body.append(_scatter(rows, m, f"{m}: predicted vs measured"))
    body.append("</div>")
    for key in ("gpu", "engine", "model"):
        values = sorted({str(r.get(key)) for r in rows})
        if len(values) < 2:
            continue
        body.append(f"<h3>predicted vs measured per {html.escape(key)}</h3><div class='plots'>")
        for v in values:
            sub = [r for r in rows if str(r.get(key)) == v]
            for m in metrics:
                body.append(_scatter(sub, m, f"{v}: {m}", 300, 280))
        body.append("</div>")
    by_kind = result.get("summary_by_layout_kind") or {}  # validate_rows' split, transposed to metric -> kind
    body.append(
        _table("per layout kind", {m: {k: s[m] for k, s in by_kind.items() if s[m]["n"]} for m in metrics})
    )
    for key in ("gpu", "engine", "model", "precision"):
        body.append(_table(f"per {key}", {m: group_errors(rows, key, m) for m in metrics}))
    rep = result.get("repeat_floor") or {}
    if rep.get("rows"):
        body.append(
            f"<h3>repeated inputs, other measurements</h3><p>{rep['rows']} rows share every input column with a row "
            f"measured with other values ({rep['groups']} groups): the runs differed in settings the columns do not "
            "record (worker counts behind a <code>0x</code> layout, speculative decoding, batch limits). No model of "
            "the inputs can score below the floor below on this file.</p>"
            "<table><tr><th>metric</th><th>rows</th><th>least MAPE of the file</th><th>MAPE of these rows, each "
            "from its repeats' median</th><th>points of the file's MAPE they add</th></tr>"
        )
        for m in ("ttft_ms", "tpot_ms"):
            v = rep.get(m) or {}
            body.append(
                f"<tr><td>{m}</td><td>{v.get('rows', 0)}</td><td>{_fmt(v.get('oracle_floor'))}</td>"
                f"<td>{_fmt(v.get('twin_mape'))}</td><td>{_points(v.get('twin_points'))}</td></tr>"
            )
        body.append("</table>")
    if result.get("implausible"):
        body.append(
            "<h3>physically impossible rows (scored above)</h3><p>Their measured latency is below a floor no "
            "deployment of the recorded size can beat (Little's law with peak FLOPs or HBM bandwidth); the "
            "recorded concurrency or GPU count is probably not what ran.</p>"
            "<table><tr><th>row</th><th>reason</th></tr>"
        )
        for u in result["implausible"]:
            body.append(
                f"<tr><td>{u['row']}</td><td style='text-align:left'>{html.escape(u['reason'])}</td></tr>"
            )
        body.append("</table>")
    if result["unsupported"]:
        body.append("<h3>unsupported rows</h3><table><tr><th>row</th><th>reason</th></tr>")
        for u in result["unsupported"]:
            body.append(
                f"<tr><td>{u['row']}</td><td style='text-align:left'>{html.escape(u['reason'])}</td></tr>"
            )
        body.append("</table>")
    body.append("</body></html>")
    return "".join(body)
