"""The data card: one self-contained HTML file (inline SVG charts, no scripts, no network) describing a run: the
funnel of records through the steps, document lengths, languages, top drop reasons, input errors, and a few kept
and rejected examples."""

from __future__ import annotations

import html
from typing import Any

import orjson

from assay.core.errors import AssayError, ErrorLog
from assay.io.folder import Folder
from assay.run.layout import rejected_files

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:980px;color:#1d2733;
padding:0 1rem}h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde3ea;padding-bottom:.3rem}
.sub{color:#5b6b7c}table{border-collapse:collapse;width:100%;font-size:.92rem}td,th{padding:.35rem .5rem;
border-bottom:1px solid #eef1f4;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#f4f7fa;border-radius:8px;padding:.8rem 1.1rem;
min-width:9rem}.card b{display:block;font-size:1.5rem}pre{white-space:pre-wrap;background:#f7f9fb;padding:.6rem;
border-radius:6px;font-size:.82rem;max-height:14rem;overflow:auto}svg text{font-size:12px;fill:#1d2733}
.muted{color:#8a99a8}.note{background:#fff6dd;border-left:4px solid #e0a800;padding:.5rem .8rem}
"""


def _bars(items: list[tuple[str, float]], width: int = 900, bar_h: int = 22, color: str = "#3b82c4",
          value_fmt: str = "{:,.0f}") -> str:
    """A horizontal bar chart as inline SVG."""
    if not items:
        return '<p class="muted">nothing to show</p>'
    label_w = min(300, max(60, 7 * max(len(k) for k, _ in items)))
    vmax = max(v for _, v in items) or 1
    plot_w = width - label_w - 90
    h = bar_h * len(items) + 10
    parts = [f'<svg width="{width}" height="{h}" role="img">']
    for i, (k, v) in enumerate(items):
        y = 5 + i * bar_h
        w = max(1.0, plot_w * v / vmax) if v else 0
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h * 0.68:.1f}" text-anchor="end">{html.escape(k)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="{color}" rx="2"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.68:.1f}">{value_fmt.format(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _columns(items: list[tuple[str, float]], width: int = 900, height: int = 220, color: str = "#4f9d69") -> str:
    """A vertical column chart (histogram) as inline SVG."""
    if not items:
        return '<p class="muted">nothing to show</p>'
    vmax = max(v for _, v in items) or 1
    n = len(items)
    col_w = (width - 40) / n
    parts = [f'<svg width="{width}" height="{height + 40}" role="img">']
    for i, (k, v) in enumerate(items):
        h = (height - 20) * v / vmax
        x = 20 + i * col_w
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - h:.1f}" width="{col_w - 4:.1f}" height="{h:.1f}" '
                     f'fill="{color}" rx="2"><title>{html.escape(k)}: {v:,.0f}</title></rect>'
                     f'<text x="{x + col_w / 2:.1f}" y="{height + 16}" text-anchor="middle">{html.escape(k)}</text>'
                     f'<text x="{x + col_w / 2:.1f}" y="{height - h - 4:.1f}" text-anchor="middle">{v:,.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt_len(b: int) -> str:
    n = 2 ** b
    return f"{n // 1000}k" if n >= 1000 else str(n)


def _examples(files: list[str], n: int) -> list[Any]:
    """The first ``n`` records of ``files`` (paths or URLs)."""
    from assay.io.sources import plan_shards, read_shard

    out: list[Any] = []
    errors = ErrorLog()
    for f in files:
        for shard in plan_shards([f], "auto", 0):
            for r in read_shard(shard, errors):
                out.append(r)
                if len(out) >= n:
                    return out
    return out


def _output_card(stats: dict[str, Any]) -> str:
    """The card of the records written. A share of the records read only means something when every step kept or
    dropped records; when steps made records (one repository into its files) or combined them (files into packed
    samples), the card names those steps with their counts instead."""
    read, out_n = stats["input"]["records_read"], stats["output"]["records"]
    reshaping = [s for s in stats["steps"] if s["records_out"] + s["dropped"] != s["records_in"]]
    if not reshaping:
        return f"<b>{out_n:,}</b>records kept ({100 * out_n / (read or 1):.1f}% of those read)"
    how = ", ".join(f"{html.escape(s['name'])} {s['records_in']:,} → {s['records_out']:,}" for s in reshaping)
    return f"<b>{out_n:,}</b>records written, from {read:,} read (steps that make or combine records: {how})"


def render(stats: dict[str, Any], kept: list[Any], rejected: list[Any]) -> str:
    e = html.escape
    steps = stats["steps"]
    funnel = [("input", stats["input"]["records_read"])] + [(f"{s['index']}. {s['name']}", s["records_out"])
                                                            for s in steps]
    drops: dict[str, int] = {}
    for s in steps:
        for reason, c in s["drops"].items():
            drops[f"{s['name']}: {reason}"] = drops.get(f"{s['name']}: {reason}", 0) + c
    top_drops = sorted(drops.items(), key=lambda kv: -kv[1])[:15]
    lengths = [(_fmt_len(int(k)), v) for k, v in stats.get("length_histogram_log2", {}).items()]
    langs = list(stats.get("languages", {}).items())[:15]

    rows = []
    for s in steps:
        counters = ", ".join(f"{k}={v:,}" for k, v in s.get("counters", {}).items())
        rows.append(f"<tr><td>{s['index']}</td><td>{e(s['name'])}</td><td class=n>{s['records_in']:,}</td>"
                    f"<td class=n>{s['records_out']:,}</td><td class=n>{s['dropped']:,}</td>"
                    f"<td class=n>{s['seconds']:.2f}</td><td class=n>"
                    f"{(s['records_in'] / s['seconds']) if s['seconds'] else 0:,.0f}</td><td>{e(counters)}</td></tr>")
    err_rows = "".join(f"<tr><td>{e(k)}</td><td class=n>{v:,}</td></tr>" for k, v in stats.get("errors", {}).items())

    def ex(records: list[Any], with_reason: bool) -> str:
        if not records:
            return '<p class="muted">none</p>'
        items = []
        for r in records:
            head = f"<b>{e(r.id[:16])}</b> · {e(str(r.meta.get('url') or r.meta.get('source') or ''))}"
            if with_reason and r.drop:
                head += f" · dropped by <b>{e(r.drop[0])}</b>: {e(r.drop[1])}"
            items.append(f"<p>{head}</p><pre>{e(r.text[:700])}</pre>")
        return "".join(items)

    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Assay data card: {e(stats['recipe'])}</title>
<style>{_CSS}</style></head><body>
<h1>Data card: {e(stats['recipe'])}</h1>
<p class="sub">recipe fingerprint {e(stats['fingerprint'])} · executor {e(stats['executor'])} × {stats['workers']}
 · finished {e(stats.get('finished', ''))} · {stats.get('seconds', 0)} s</p>
{''.join(f'<p class="note">note: {e(n)}</p>' for n in stats.get('notes', []))}
<div class="cards">
<div class="card"><b>{stats['input']['records_read']:,}</b>records read</div>
<div class="card">{_output_card(stats)}</div>
<div class="card"><b>{stats['output']['rejected']:,}</b>rejected (with reasons)</div>
<div class="card"><b>{sum(stats.get('errors', {}).values()):,}</b>input records skipped</div>
<div class="card"><b>{stats['input']['files']:,}</b>files · {stats['input']['shards']:,} shards</div>
</div>
<h2>Funnel</h2>{_bars(funnel)}
<h2>Steps</h2><table><tr><th>#</th><th>step</th><th class=n>in</th><th class=n>out</th><th class=n>dropped</th>
<th class=n>seconds</th><th class=n>records/s</th><th>counters</th></tr>{''.join(rows)}</table>
<h2>Top drop reasons</h2>{_bars(top_drops, color="#c4573b")}
<h2>Document length (characters, log2 bins)</h2>{_columns(lengths)}
<h2>Languages</h2>{_bars(langs, color="#7a5bc4")}
<h2>Input errors (counted skips)</h2>
{'<table><tr><th>kind</th><th class=n>count</th></tr>' + err_rows + '</table>' if err_rows else '<p class="muted">none</p>'}
<h2>Examples kept</h2>{ex(kept, False)}
<h2>Examples rejected</h2>{ex(rejected, True)}
<p class="muted">Written by Assay. Every record's lineage is in the output files.</p>
</body></html>"""


def write_report(run_dir: str, examples: int = 5) -> str:
    """Write ``report.html`` into the run folder ``run_dir`` (a path or URL); returns its path or URL."""
    run = Folder(run_dir)
    fs = run.fs
    path = run.path("stats.json")
    if not fs.exists(path):
        raise AssayError(f"{run_dir} has no stats.json: is it the output folder of a finished run?")
    stats = orjson.loads(fs.cat_file(path))
    outs = [run.url(f) for f in stats["output"]["files"]]
    rej = rejected_files(run)
    kept = _examples(outs, examples)
    rejected = _examples(rej, examples)
    page = render(stats, kept, rejected)
    with fs.open(run.path("report.html"), "w", encoding="utf-8") as f:
        f.write(page)
    return run.url("report.html")
