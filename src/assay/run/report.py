"""The data card: one self-contained HTML file (inline SVG charts, no scripts, no network) describing a run, made to
tune a recipe with: the funnel of records through the steps; for each filter the distribution of each of its signals
over the records that reached it, with its thresholds drawn and the share it dropped; examples for every drop
reason (a seeded sample, not the first in a file); the languages language ID saw; the recipe and its parameters as
run; where records came from; dedup clusters; one record's lineage; document lengths and input errors. What it reads
from the run's records is in :mod:`assay.run.card_data`.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any

import orjson
import yaml

from assay.core.errors import AssayError
from assay.core.step import Filter, Step, Threshold
from assay.io.folder import Folder
from assay.run import layout
from assay.run.card_data import MAX_RECORDS, CardData, Seen, read_card_data, step_signals
from assay.run.tuning import describe as describe_tuning
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
.hists{display:flex;flex-wrap:wrap;gap:.6rem}figure.hist{margin:0;width:440px}figcaption{font-size:.8rem}
section.filter{border-top:1px solid #eef1f4;margin-top:1rem}.reason,.cluster{margin-bottom:1rem}
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


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() and abs(v) >= 10 else f"{v:.3g}"


def _histogram(values: list[float], rules: list[Threshold], width: int = 430, height: int = 150,
               bins: int = 24) -> str:
    """A histogram of ``values`` as inline SVG, each numeric rule drawn as a vertical line (class ``threshold``);
    bins on the dropped side of a rule are red."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    # a threshold far outside the data (max_doc_words 100,000 over pages of 2,000 words) would squash the bars; a
    # ratio's threshold is always drawn
    ratio = 0 <= lo and hi <= 1
    shown = [t for t in rules if t.op in ("<", ">") and (lo - 3 * span <= float(t.value) <= hi + 3 * span
                                                          or ratio and 0 <= float(t.value) <= 1)]
    far = [t for t in rules if t.op in ("<", ">") and t not in shown]
    lo, hi = min([lo] + [float(t.value) for t in shown]), max([hi] + [float(t.value) for t in shown])
    if hi == lo:
        hi = lo + 1
    span = hi - lo
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / span * bins))] += 1
    top = max(counts) or 1
    left, plot_w, plot_h = 34, width - 44, height - 36
    x = lambda v: left + (v - lo) / span * plot_w  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" role="img">',
             f'<text x="{left - 4}" y="12" text-anchor="end">{top:,}</text>']
    for b, c in enumerate(counts):
        centre = lo + (b + 0.5) * span / bins
        dropped = any(t.drops(centre) for t in shown)
        h = plot_h * c / top
        parts.append(f'<rect x="{left + b * plot_w / bins + 1:.1f}" y="{6 + plot_h - h:.1f}" '
                     f'width="{plot_w / bins - 2:.1f}" height="{h:.1f}" fill="{"#c4573b" if dropped else "#4f9d69"}">'
                     f'<title>{_fmt(lo + b * span / bins)} – {_fmt(lo + (b + 1) * span / bins)}: {c:,}</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 14}">{_fmt(lo)}</text>'
                 f'<text x="{left + plot_w}" y="{height - 14}" text-anchor="end">{_fmt(hi)}</text>')
    for t in shown:
        tx = x(float(t.value))
        anchor = "start" if tx < left + 60 else "end" if tx > left + plot_w - 60 else "middle"
        parts.append(f'<line class="threshold" data-value="{t.value}" x1="{tx:.1f}" y1="2" x2="{tx:.1f}" '
                     f'y2="{6 + plot_h}" stroke="#b02a1a" stroke-width="2" stroke-dasharray="4 2"/>'
                     f'<text x="{tx:.1f}" y="{height - 2}" text-anchor="{anchor}" fill="#b02a1a">'
                     f'{html.escape(t.op)} {_fmt(float(t.value))} dropped</text>')
    if far:
        parts.append(f'<text x="{left + plot_w}" y="12" text-anchor="end" fill="#b02a1a">off the chart: '
                     + html.escape(", ".join(f"{t.op} {_fmt(float(t.value))}" for t in far)) + "</text>")
    parts.append("</svg>")
    return "".join(parts)


def _share(n: int, of: int) -> str:
    return f"{100 * n / of:.1f}%" if of else "0.0%"


def _signal_figure(key: str, values: list[Any], rules: list[Threshold], reached: int) -> str:
    """One signal's chart over the ``reached`` records that reached its step (``values``: of those that have it)."""
    e = html.escape
    mine = [t for t in rules if t.signal == key]
    numeric = [float(v) for v in values if _num(v)]
    beyond = sum(1 for v in values if any(t.drops(v) for t in mine))
    caption = f"<b>{e(key)}</b> · " + (f"{len(values):,} records" if len(values) == reached else
                                        f"set on {len(values):,} of {reached:,} records")
    if mine:
        caption += (f" · {e(' or '.join(t.describe().removeprefix(f'dropped when {key} ') for t in mine))}"
                    f" · beyond: {beyond:,} ({_share(beyond, reached)})")
    else:
        caption += ' · <span class="muted">no threshold on this signal</span>'
    if numeric and len(numeric) == len(values):
        chart = _histogram(numeric, mine)
    else:
        chart = _bars(Counter(str(v) for v in values).most_common(12), width=430, bar_h=18, color="#7a5bc4")
    return f'<figure class="hist" data-signal="{e(key)}"><figcaption>{caption}</figcaption>{chart}</figure>'


def _filter_panels(stats: dict[str, Any], data: CardData) -> str:
    e = html.escape
    by_index = {s["index"]: s for s in stats["steps"]}
    out = []
    for step in data.steps:
        rules = step.thresholds() if isinstance(step, Filter) else None
        is_dedup = hasattr(step, "signal_prefix")
        if not isinstance(step, Filter) and not is_dedup:
            continue
        s = by_index.get(step.index, {"records_in": 0, "dropped": 0})
        reached = data.reaching(step.index)
        if data.analysis:
            would = sum(data.would_drop(step.index).values())
            share = (f'would drop: <b class="n">{would:,}</b> of {len(reached):,} records that would reach it '
                     f'(<b class="pct">{_share(would, len(reached))}</b>)' + (" (estimate: see the note above)"
                                                                              if is_dedup else ""))
        else:
            share = (f'dropped here: <b class="n">{s["dropped"]:,}</b> of {s["records_in"]:,} records '
                     f'(<b class="pct">{_share(s["dropped"], s["records_in"])}</b>)')
        keys = sorted({k for r in reached for k in r.signals})
        mine = step_signals(step, keys) if isinstance(step, Filter) else []
        if rules is None:
            rule_line = '<p class="muted no-threshold">no threshold declared by this step</p>'
        else:
            rule_line = "<p>rules: " + ("; ".join(e(t.describe()) for t in rules) or "none") + "</p>"
        ordered = [t.signal for t in rules or []]
        mine.sort(key=lambda k: (ordered.index(k) if k in ordered else len(ordered), k))
        figures = "".join(_signal_figure(k, [r.signals[k] for r in reached if k in r.signals], rules or [],
                                         len(reached)) for k in mine if not k.endswith(".flag"))
        absent = sorted({t.signal for t in rules or []} - set(mine))
        figures += "".join(f'<p class="muted">{e(k)}: on none of the {len(reached):,} records that reached it</p>'
                           for k in absent)
        out.append(f'<section class="filter" data-step="{e(step.name)}" data-index="{step.index}">'
                   f'<h3>{step.index}. {e(step.name)} <span class="sub">v{e(step.version)} · params '
                   f'{step.params_hash}</span></h3><p class="share">{share}</p>{rule_line}'
                   f'<div class="hists">{figures}</div></section>')
    return "".join(out) or '<p class="muted">no filters in this recipe</p>'


def _record_block(r: Seen, data: CardData, chars: int = 600) -> str:
    e = html.escape
    where = r.meta.get("url") or r.meta.get("source") or ""
    head = f"<b>{e(r.id[:16])}</b> · {e(str(where))}"
    if r.stop is not None and r.stop < len(data.steps):
        verb = "would be dropped" if data.analysis else "dropped"
        head += f" · {verb} by <b>{e(data.steps[r.stop].name)}</b>: {e(str(r.reason))}"
    return f'<div class="example" data-id="{e(r.id)}"><p>{head}</p><pre>{e(r.text[:chars])}</pre></div>'


def _reason_examples(stats: dict[str, Any], data: CardData) -> str:
    """For every (step, reason) of the run, up to three records it took (the smallest hash of id first)."""
    e = html.escape
    pairs: list[tuple[int, str, int]] = []
    if data.analysis:
        pairs = [(i, reason, len(rs)) for (i, reason), rs in sorted(data.by_reason.items())]
    else:
        pairs = [(s["index"], reason, n) for s in stats["steps"] for reason, n in s["drops"].items()]
    if not pairs:
        return '<p class="muted">nothing was dropped</p>'
    out = []
    for index, reason, n in pairs:
        name = data.steps[index].name if index < len(data.steps) else "?"
        shown = data.examples(index, reason)
        blocks = "".join(_record_block(r, data, 400) for r in shown) or (
            '<p class="muted">none among the records the card read</p>')
        out.append(f'<div class="reason" data-step="{e(name)}" data-reason="{e(reason)}"><h3>{e(name)}: '
                   f'{e(reason)} <span class="sub">{n:,} records · {len(shown)} shown</span></h3>{blocks}</div>')
    return "".join(out)


def _languages(data: CardData) -> str:
    e = html.escape
    out = []
    for step in data.steps:
        if step.name != "language_id":
            continue
        rows = "".join(f"<tr><td>{e(lang)}</td><td class=n>{c:,}</td><td class=n>{d:,}</td><td class=n>{c - d:,}</td>"
                       f"</tr>" for lang, c, d in data.languages(step.index)[:25])
        out.append(f'<div class="langs" data-step-index="{step.index}"><p>what step {step.index} '
                   f'({e(step.name)}) saw, before it decided:</p><table><tr><th>language</th><th class=n>records</th>'
                   f'<th class=n>{"would drop" if data.analysis else "dropped"}</th><th class=n>passed</th></tr>'
                   f'{rows}</table></div>')
    return "".join(out) or '<p class="muted">no language_id step in this recipe</p>'


def _recipe(recipe_dict: dict[str, Any] | None, data: CardData) -> str:
    e = html.escape
    if recipe_dict is None:
        return '<p class="muted">recipe.yaml is not in the run folder</p>'
    rows = "".join(
        f'<tr class="step-params" data-step="{e(s.name)}"><td>{s.index}</td><td>{e(s.name)}</td><td>{e(s.version)}</td>'
        f'<td>{s.params_hash}</td><td><code>{e(orjson.dumps(s.params.model_dump(mode="json")).decode())}</code>'
        f'</td></tr>' for s in data.steps)
    io = {k: recipe_dict.get(k) for k in ("input", "output", "batch_size")}
    return (f'<p>{e(recipe_dict.get("description") or "")}</p><table><tr><th>#</th><th>step</th><th>version</th>'
            f'<th>params hash</th><th>parameters (every default filled in)</th></tr>{rows}</table>'
            f'<pre>{e(orjson.dumps(io, option=orjson.OPT_INDENT_2).decode())}</pre>')


def _origins(data: CardData) -> str:
    e = html.escape
    rows = "".join(f'<tr class="origin"><td>{e(o)}</td><td class=n>{c:,}</td><td class=n>{k:,}</td>'
                   f'<td class=n>{c - k:,}</td><td>{e(top)}</td></tr>' for o, c, k, top in data.origins()[:30])
    return (f'<table><tr><th>host (or input file)</th><th class=n>records</th><th class=n>kept</th>'
            f'<th class=n>{"would drop" if data.analysis else "dropped"}</th><th>top reason</th></tr>{rows}</table>')


def _clusters(data: CardData) -> str:
    e = html.escape
    out = []
    for step in data.steps:
        if not hasattr(step, "signal_prefix"):
            continue
        for kept, kept_id, dups in data.clusters(step):
            kept_html = (_record_block(kept, data, 300) if kept is not None else
                         f'<p class="muted">kept member {e(kept_id[:16])}: not among the records the card read</p>')
            out.append(f'<div class="cluster" data-step="{e(step.name)}"><h3>{e(step.name)}: cluster of '
                       f'{len(dups) + 1} (kept {e(kept_id[:16])})</h3><p><b>kept</b></p>{kept_html}'
                       f'<p><b>{"flagged" if data.analysis else "dropped"} duplicates</b></p>'
                       + "".join(_record_block(d, data, 300) for d in dups[:3]) + "</div>")
    return "".join(out) or '<p class="muted">no dedup step dropped anything</p>'


def _lineage(data: CardData) -> str:
    e = html.escape
    r = data.lineage_sample()
    if r is None:
        return '<p class="muted">no records</p>'
    by_key = {(s.name, s.params_hash): s for s in data.steps}
    rows = []
    keys = list(r.signals)
    claimed: set[str] = set()
    for i, (name, version, params) in enumerate(r.lineage):
        step = by_key.get((name, params))
        mine = step_signals(step, keys) if step is not None else []
        claimed.update(mine)
        sig = ", ".join(f"{k}={_fmt(v) if _num(v) else v}" for k, v in ((k, r.signals[k]) for k in mine))
        rows.append(f"<tr><td>{i}</td><td>{e(name)}</td><td>{e(version)}</td><td>{e(params)}</td>"
                    f"<td>{e(sig) or '<span class=muted>none</span>'}</td></tr>")
    rest = [k for k in keys if k not in claimed]
    extra = f"<p>other signals: {e(', '.join(rest))}</p>" if rest else ""
    return (f'<div class="lineage" data-id="{e(r.id)}">{_record_block(r, data, 300)}<table><tr><th>#</th><th>step'
            f'</th><th>version</th><th>params hash</th><th>signals it wrote</th></tr>{"".join(rows)}</table>'
            f'{extra}</div>')


def render(stats: dict[str, Any], data: CardData, recipe_dict: dict[str, Any] | None = None) -> str:
    e = html.escape
    steps = stats["steps"]
    funnel = [("input", stats["input"]["records_read"])] + [(f"{s['index']}. {s['name']}", s["records_out"])
                                                            for s in steps]
    drops: dict[str, int] = {}
    for s in steps:
        for reason, c in s["drops"].items():
            drops[f"{s['name']}: {reason}"] = drops.get(f"{s['name']}: {reason}", 0) + c
    would = ""
    if data.analysis and data.steps:  # nothing was dropped: show what a real run would keep and drop
        funnel = [("input", stats["input"]["records_read"])] + [
            (f"{st.index}. {st.name}", sum(1 for r in data.records if r.stop is None or r.stop > st.index))
            for st in data.steps]
        drops = {f"{data.steps[i].name}: {reason}": len(rs) for (i, reason), rs in data.by_reason.items()
                 if i < len(data.steps)}
        would = " (as a real run would have them)"
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
    notes = list(stats.get("notes", []))
    tuning = describe_tuning(stats.get("tuning"))
    banner = f'<p class="note tuning">{e(tuning)}</p>' if tuning else ""
    if data.analysis:
        banner += ('<p class="note">In an analysis run a record counts as dropped by the first step that flagged '
                   'it, as a real run would; a dedup step compared every record, so its figures are an estimate; '
                   'steps that edit text when they keep it (c4_quality) do not edit flagged records.</p>')
    read_note = (f"The panels below read {len(data.records):,} of the run's {data.total:,} records (a sample by a "
                 f"hash of their id)." if data.sampled else
                 f"The panels below read all {data.total:,} records of the run (kept and rejected).")
    kept = sorted((r for r in data.records if r.stop is None), key=lambda r: r.order)[:5]

    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Assay data card: {e(stats['recipe'])}</title>
<style>{_CSS}</style></head><body>
<h1>Data card: {e(stats['recipe'])}</h1>
<p class="sub">recipe fingerprint {e(stats['fingerprint'])} · executor {e(stats['executor'])} × {stats['workers']}
 · finished {e(stats.get('finished', ''))} · {stats.get('seconds', 0)} s</p>
{banner}{''.join(f'<p class="note">note: {e(n)}</p>' for n in notes)}
<div class="cards">
<div class="card"><b>{stats['input']['records_read']:,}</b>records read</div>
<div class="card">{_output_card(stats)}</div>
<div class="card"><b>{stats['output']['rejected']:,}</b>rejected (with reasons)</div>
<div class="card"><b>{sum(stats.get('errors', {}).values()):,}</b>input records skipped</div>
<div class="card"><b>{stats['input']['files']:,}</b>files · {stats['input']['shards']:,} shards</div>
</div>
<h2>Funnel{would}</h2>{_bars(funnel)}
<h2>Steps</h2><table><tr><th>#</th><th>step</th><th class=n>in</th><th class=n>out</th><th class=n>dropped</th>
<th class=n>seconds</th><th class=n>records/s</th><th>counters</th></tr>{''.join(rows)}</table>
<h2>Top drop reasons{would}</h2>{_bars(top_drops, color="#c4573b")}
<p class="sub">{e(read_note)}</p>
<h2 id="filters">Filters: signals and thresholds</h2>
<p class="sub">Each signal over the records that reached the step (kept, or dropped there or later); red: the side a
threshold drops.</p>{_filter_panels(stats, data)}
<h2 id="reasons">Examples for each drop reason</h2>{_reason_examples(stats, data)}
<h2 id="languages">Languages before language ID</h2>{_languages(data)}
<h2 id="recipe">Recipe and parameters (as run)</h2>{_recipe(recipe_dict, data)}
<h2 id="origins">Sources and domains</h2>{_origins(data)}
<h2 id="clusters">Dedup clusters</h2>{_clusters(data)}
<h2 id="lineage">Lineage of a sample record</h2>{_lineage(data)}
<h2>Document length of kept records (characters, log2 bins)</h2>{_columns(lengths)}
<h2>Languages kept</h2>{_bars(langs, color="#7a5bc4")}
<h2>Input errors (counted skips)</h2>
{'<table><tr><th>kind</th><th class=n>count</th></tr>' + err_rows + '</table>' if err_rows else '<p class="muted">none</p>'}
<h2>Examples kept</h2>{''.join(_record_block(r, data) for r in kept) or '<p class="muted">none</p>'}
<p class="muted">Written by Assay. Every record's lineage is in the output files.</p>
</body></html>"""


def _recipe_steps(recipe_dict: dict[str, Any] | None) -> list[Step]:
    """The run's steps with their parameters as run (positions set), or none when the recipe cannot be rebuilt here
    (an older run folder, a step whose module is missing)."""
    if recipe_dict is None:
        return []
    from assay.core.pipeline import Pipeline
    from assay.core.recipe import Recipe

    try:
        steps = Recipe.model_validate(recipe_dict).instantiate()
    except Exception:  # noqa: BLE001 - the card then shows what stats.json holds; it never fails the run
        return []
    Pipeline(steps)
    return steps


def write_report(run_dir: str, max_records: int = MAX_RECORDS) -> str:
    """Write ``report.html`` into the run folder ``run_dir`` (a path or URL); returns its path or URL."""
    run = Folder(run_dir)
    fs = run.fs
    path = run.path("stats.json")
    if not fs.exists(path):
        raise AssayError(f"{run_dir} has no stats.json: is it the output folder of a finished run?")
    stats = orjson.loads(fs.cat_file(path))
    recipe_path = run.path(layout.RECIPE)
    recipe_dict = yaml.safe_load(fs.cat_file(recipe_path)) if fs.exists(recipe_path) else None
    steps = _recipe_steps(recipe_dict)
    total = stats["output"]["records"] + stats["output"]["rejected"]
    data = read_card_data(layout.output_files(run), layout.rejected_files(run), steps, total,
                          analysis=bool((stats.get("tuning") or {}).get("analyze")), max_records=max_records)
    page = render(stats, data, recipe_dict)
    with fs.open(run.path("report.html"), "w", encoding="utf-8") as f:
        f.write(page)
    return run.url("report.html")
