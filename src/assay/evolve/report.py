"""``assay evolve report OUT``: one self-contained HTML page (inline SVG, no scripts, no network) for an evolve loop:
per round, how many records were made, verified, rejected (and why), routed to people and labelled; the training
mix's human share; and the collapse metrics of each generation against the human anchor set, as a table and as
one small chart per metric (the anchor's own value drawn as a dashed reference line)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import orjson

from assay.core.errors import AssayError
from assay.run.report import _CSS as CSS

#: (metric key in metrics.json, label, anchor reference key or None, higher is more diverse?)
METRICS = [
    ("synthetic.distinct_1", "distinct-1", "anchor.distinct_1"),
    ("synthetic.distinct_2", "distinct-2", "anchor.distinct_2"),
    ("synthetic.self_bleu", "self-BLEU (lower = more diverse)", "anchor.self_bleu"),
    ("synthetic.vendi", "Vendi score", "anchor.vendi"),
    ("tail_recall", "anchor rare n-gram recall", None),
    ("head_recall", "anchor frequent n-gram recall", None),
    ("embedding_coverage", "embedding coverage of the anchor", None),
]


def _line_chart(title: str, values: list[float | None], reference: float | None, width: int = 300,
                height: int = 150) -> str:
    """A small line chart of one value per round, with an optional dashed reference line."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if not pts:
        return ""
    ys = [v for _, v in pts] + ([reference] if reference is not None else [])
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    pad_l, pad_r, pad_t, pad_b = 44, 12, 26, 24
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    n = max(1, len(values) - 1)

    def x(i: float) -> float:
        return pad_l + pw * (i / n if len(values) > 1 else 0.5)

    def y(v: float) -> float:
        return pad_t + ph * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{pad_l}" y="14" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" stroke="#c5ced8"/>',
             f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#c5ced8"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">{hi:.3g}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + ph}" text-anchor="end">{lo:.3g}</text>']
    for i in range(len(values)):
        parts.append(f'<text x="{x(i):.1f}" y="{height - 6}" text-anchor="middle">r{i + 1}</text>')
    if reference is not None:
        parts.append(f'<line x1="{pad_l}" y1="{y(reference):.1f}" x2="{pad_l + pw}" y2="{y(reference):.1f}" '
                     f'stroke="#d08a2e" stroke-dasharray="4 3"><title>anchor: {reference:.4g}</title></line>')
    if len(pts) > 1:
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#3b82c4" stroke-width="2"/>')
    for i, v in pts:
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="#3b82c4"><title>round {i + 1}: '
                     f'{v:.4g}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: Any) -> str:
    if v is None:
        return '<span class="muted">–</span>'
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def _top_drops(phase: dict[str, Any] | None, n: int = 3) -> str:
    if not phase:
        return ""
    drops: dict[str, int] = {}
    for s in (phase.get("steps") or {}).values():
        for k, v in s.get("drops", {}).items():
            drops[k] = drops.get(k, 0) + v
    return ", ".join(f"{k} {v}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])[:n])


def render(summary: dict[str, Any]) -> str:
    rounds = summary.get("rounds", [])
    e = html.escape
    routed_total = sum((r.get("route") or {}).get("routed", 0) for r in rounds)
    last_merge = next((r["merge"] for r in reversed(rounds) if r.get("merge")), {})
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>evolve loop: {e(summary.get('name', ''))}"
           f"</title><style>{CSS}</style></head><body>",
           f"<h1>Evolve loop: {e(summary.get('name', ''))}</h1>",
           f"<p class='sub'>{len(rounds)} round(s) · annotation project <b>{e(str(summary['annotation']['project']))}"
           f"</b> in {e(str(summary['annotation']['db']))}</p>",
           "<div class='cards'>",
           f"<div class='card'><b>{len(rounds)}</b>rounds</div>",
           f"<div class='card'><b>{sum((r.get('verify') or {}).get('records', 0) for r in rounds):,}</b>"
           "verified synthetic records</div>",
           f"<div class='card'><b>{routed_total:,}</b>items routed to people</div>",
           f"<div class='card'><b>{last_merge.get('labels', 0):,}</b>human labels received</div>",
           f"<div class='card'><b>{last_merge.get('human_fraction', 0):.0%}</b>human share of the last mix</div>",
           "</div>"]
    # -- the funnel ---------------------------------------------------------------------------------------------
    out.append("<h2>Rounds</h2><table><tr><th>round</th><th class='n'>inputs</th><th class='n'>synthesized</th>"
               "<th class='n'>verified</th><th class='n'>rejected</th><th>top reasons</th><th class='n'>routed</th>"
               "<th class='n'>labels</th><th class='n'>mix: human</th><th class='n'>mix: synthetic</th>"
               "<th class='n'>human share</th></tr>")
    for r in rounds:
        s, v, ro, m = (r.get(k) or {} for k in ("synthesize", "verify", "route", "merge"))
        reasons = "; ".join(x for x in (_top_drops(s), _top_drops(v)) if x)
        out.append(f"<tr><td>{r['round']}</td><td class='n'>{_fmt(s.get('inputs'))}</td>"
                   f"<td class='n'>{_fmt(s.get('records'))}</td><td class='n'>{_fmt(v.get('records'))}</td>"
                   f"<td class='n'>{_fmt((s.get('rejected') or 0) + (v.get('rejected') or 0))}</td>"
                   f"<td>{e(reasons)}</td><td class='n'>{_fmt(ro.get('routed'))} / {_fmt(ro.get('budget'))}</td>"
                   f"<td class='n'>{_fmt(m.get('labels'))}</td><td class='n'>{_fmt(m.get('human'))}</td>"
                   f"<td class='n'>{_fmt(m.get('synthetic'))}</td>"
                   f"<td class='n'>{_fmt(m.get('human_fraction'))}</td></tr>")
    out.append("</table>")
    # -- collapse metrics ---------------------------------------------------------------------------------------
    out.append("<h2>Collapse metrics</h2><p class='sub'>Each round's verified generation against the human anchor "
               "set. Falling distinct-n, Vendi score, rare n-gram recall or coverage, or rising self-BLEU, are the "
               "early signs of collapse.</p>")
    out.append("<table><tr><th>metric</th><th class='n'>anchor</th>"
               + "".join(f"<th class='n'>round {r['round']}</th>" for r in rounds) + "</tr>")
    metric_rows = [r.get("metrics") or {} for r in rounds]
    for key, label, ref in METRICS:
        if not any(key in m for m in metric_rows):
            continue
        anchor_v = next((m.get(ref) for m in metric_rows if ref and m.get(ref) is not None), None)
        out.append(f"<tr><td>{e(label)}</td><td class='n'>{_fmt(anchor_v)}</td>"
                   + "".join(f"<td class='n'>{_fmt(m.get(key))}</td>" for m in metric_rows) + "</tr>")
    out.append(f"<tr><td>records measured</td><td class='n'>{_fmt(next((m.get('n_anchor') for m in metric_rows), None))}"
               "</td>" + "".join(f"<td class='n'>{_fmt(m.get('n_synthetic'))}</td>" for m in metric_rows)
               + "</tr></table>")
    charts = []
    for key, label, ref in METRICS:
        values = [m.get(key) for m in metric_rows]
        anchor_v = next((m.get(ref) for m in metric_rows if ref and m.get(ref) is not None), None)
        chart = _line_chart(label, values, anchor_v)
        if chart:
            charts.append(chart)
    out.append("<div class='cards'>" + "".join(f"<div>{c}</div>" for c in charts) + "</div>")
    # -- judge calibration --------------------------------------------------------------------------------------
    cal = [(r["round"], (r.get("merge") or {}).get("calibration")) for r in rounds]
    if any(c for _, c in cal):
        out.append("<h2>Judge calibration from human labels</h2><table><tr><th>round</th><th class='n'>labelled "
                   "pairs</th><th>judge score → human rating</th></tr>")
        for rnd, c in cal:
            if c:
                pairs = ", ".join(f"{x:g}→{y:.2f}" for x, y in zip(c["xs"], c["ys"]))
                out.append(f"<tr><td>{rnd}</td><td class='n'>{c['n']}</td><td>{e(pairs)}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "".join(out)


def write_report(out_dir: str | Path) -> Path:
    """Write ``report.html`` into an evolve loop's output folder (from ``loop.json``, or from the round folders)."""
    out = Path(out_dir)
    path = out / "loop.json"
    if path.exists():
        summary = orjson.loads(path.read_bytes())
    else:
        from assay.evolve.loop import EvolveLoop, LoopRecipe

        state = out / "loop-state.json"
        if not state.exists():
            raise AssayError(f"{out} is not an evolve loop output folder (no loop.json or loop-state.json)")
        recipe = LoopRecipe.model_validate(orjson.loads(state.read_bytes())["recipe"])
        summary = EvolveLoop(recipe, out).summary()
    target = out / "report.html"
    tmp = out / ".tmp-report.html"
    tmp.write_text(render(summary), encoding="utf-8")
    tmp.replace(target)
    return target
