"""``assay flywheel report OUT``: one self-contained HTML page (no network) showing the loop turn.

* **Rounds**: per round, records in/out of each stage, human labels spent, the classifier's held-out accuracy (with
  the majority baseline beside it, and a sentence saying honestly whether it rose), collapse metrics of the round's
  synthetic generation against the human anchor, and the knowledge patches made.
* **Worth**: per round and stage, ``Q`` with its 95% interval and effective clean tokens ``D·Q^(γ/β)``.
* **Lineage**: pick any output record (the last round's training mix) and see its whole history across the four
  stages (:mod:`assay.flywheel.lineage`); the histories are embedded as JSON and drawn by a small inline script.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from assay.flywheel.loop import read_json
from assay.flywheel.recipe import FlywheelError

STAGES = ("harvest", "curated", "synthetic", "mix")

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#1d2733;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d8dee6;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}th,td{border:1px solid #d8dee6;padding:4px 8px;
text-align:right;vertical-align:top}th{background:#f3f6f9}td.l,th.l{text-align:left}.note{color:#5b6b7c}
.ci{color:#5b6b7c;font-size:12px}#lineage{border:1px solid #d8dee6;padding:12px;border-radius:6px;margin-top:8px}
.stage{margin:10px 0;padding:8px 10px;border-left:4px solid #7aa6d6;background:#f8fafc}.stage h3{margin:0 0 6px;
font-size:15px}.event{margin:4px 0 8px}.event b{display:inline-block;min-width:200px}code{font-size:12px;
background:#eef2f6;padding:0 3px}pre{white-space:pre-wrap;background:#f3f6f9;padding:6px;font-size:12px}
"""

SCRIPT = """
const DATA = JSON.parse(document.getElementById('lineage-data').textContent);
const ENT = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
function esc(s){return String(s).replace(/[&<>"']/g, c => ENT[c]);}
function val(v){
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return '<code>' + esc(JSON.stringify(v)) + '</code>';
  return esc(v);
}
function show(id){
  const h = DATA[id]; const box = document.getElementById('lineage');
  if (!h) { box.innerHTML = '<p>no history for ' + esc(id) + '</p>'; return; }
  let out = '<p><b>record</b> <code id="lineage-id">' + esc(h.record_id) + '</code> (' + esc(h.origin || '?') +
            ') — chain: ' + h.chain.map(c => '<code>' + esc(c) + '</code>').join(' → ') + '</p>';
  out += '<pre>' + esc(h.text) + '</pre>';
  for (const st of h.stages) {
    out += '<div class="stage" data-stage="' + esc(st.stage) + '"><h3>' + esc(st.title) +
           ' (' + st.events.length + ')</h3>';
    if (!st.events.length) out += '<div class="note">nothing at this stage</div>';
    for (const ev of st.events) {
      out += '<div class="event" data-what="' + esc(ev.what) + '"><b>' + esc(ev.what) + '</b> ';
      out += Object.entries(ev).filter(([k]) => k !== 'what').map(([k, v]) => esc(k) + ': ' + val(v)).join('; ');
      out += '</div>';
    }
    out += '</div>';
  }
  box.innerHTML = out;
}
const pick = document.getElementById('pick');
pick.addEventListener('change', () => show(pick.value));
show(pick.value);
"""


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return html.escape(str(x))


def _tokens(x: Any) -> str | None:
    return None if x is None else f"{x:,.0f}"


def _ci(lo: Any, hi: Any, digits: int = 3) -> str:
    if lo is None and hi is None:
        return ""
    return f'<span class="ci">[{_fmt(lo, digits)}, {_fmt(hi, digits)}]</span>'


def accuracy_sentence(rounds: list[dict[str, Any]]) -> str:
    accs = [(r["round"], (r.get("train") or {}).get("accuracy")) for r in rounds]
    known = [(k, a) for k, a in accs if a is not None]
    if len(known) < 2:
        return "Too few rounds with a trained classifier to say whether human labels raised its accuracy."
    first, last = known[0], known[-1]
    base = (rounds[-1].get("train") or {}).get("majority_baseline")
    base_txt = f"; the majority-class baseline is {base:.3f}" if isinstance(base, float) else ""
    if last[1] > first[1]:
        return (f"Held-out accuracy rose from {first[1]:.3f} (round {first[0]}) to {last[1]:.3f} (round {last[0]}) "
                f"as human labels accumulated{base_txt}.")
    if last[1] == first[1]:
        return (f"Held-out accuracy did not change ({first[1]:.3f} in round {first[0]} and round {last[0]}): these "
                f"human labels did not improve the classifier{base_txt}.")
    return (f"Held-out accuracy fell from {first[1]:.3f} (round {first[0]}) to {last[1]:.3f} (round {last[0]}): "
            f"more human labels did not raise it here{base_txt}.")


def render(out: Path) -> str:
    from assay.flywheel.lineage import RunIndex, lineage

    summary = read_json(out / "flywheel.json")
    if summary is None:
        raise FlywheelError(f"{out} holds no flywheel run (no flywheel.json): run `assay flywheel run` first")
    rounds = summary["rounds"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Flywheel {html.escape(summary['name'])}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Flywheel <code>{html.escape(summary['name'])}</code>: {len(rounds)} round(s)</h1>"]
    people = summary.get("people", {})
    if people.get("mode") == "simulated":
        who = ", ".join(f"{a['name']} (noise {a['noise']:g})" for a in people.get("annotators", []))
        parts.append(f"<p class='note'>Labels came from seeded simulated annotators ({html.escape(who)}) through the "
                     f"annotation app's HTTP API; they answer by the stated gold rule "
                     f"(<code>assay.flywheel.people.gold_rating</code>) and at random with the stated noise rate.</p>")
    law = (summary.get("reference", {}).get("lab") or {}).get("law") or {}
    if law:
        ci = law.get("gamma_over_beta_ci") or [None, None]
        parts.append(f"<p>Quality ladder on the reference pages: γ/β = {_fmt(law.get('gamma_over_beta'))} "
                     f"{_ci(ci[0], ci[1])} from {law.get('runs')} tiny-LM runs.</p>")

    # rounds table
    parts.append("<h2>Rounds</h2><table id='rounds'><tr><th>round</th><th>pages → harvested</th><th>routed to people"
                 "</th><th>human labels (docs + synthetic)</th><th>classifier held-out accuracy</th><th>baseline</th>"
                 "<th>curated</th><th>synthesized → verified</th><th>removed by people</th><th>mix (human share)</th>"
                 "<th>patches</th></tr>")
    for r in rounds:
        h, rt, lb, tr = (r.get(k) or {} for k in ("harvest", "route", "label", "train"))
        sy, ve, rv, mx, kn = (r.get(k) or {} for k in ("synthesize", "verify", "review", "mix", "knowledge"))
        acc = tr.get("accuracy")
        acc_txt = _fmt(acc) + ("" if tr.get("trained", True) else " <span class='ci'>(not retrained)</span>")
        parts.append(
            f"<tr data-round='{r['round']}'><td>{r['round']}{'' if r.get('complete') else ' (incomplete)'}</td>"
            f"<td>{_fmt(h.get('pages'))} → {_fmt(h.get('records'))}</td><td>{_fmt(rt.get('routed'))}</td>"
            f"<td>{_fmt(lb.get('items'))} + {_fmt(rv.get('items'))}</td><td class='acc'>{acc_txt}</td>"
            f"<td>{_fmt(tr.get('majority_baseline'))}</td><td>{_fmt(tr.get('curated'))}</td>"
            f"<td>{_fmt(sy.get('records'))} → {_fmt(ve.get('records'))}</td>"
            f"<td>{_fmt(mx.get('removed_by_people'))}</td>"
            f"<td>{_fmt(mx.get('records'))} ({_fmt(mx.get('human_fraction'))})</td>"
            f"<td>{_fmt(kn.get('patches'))}</td></tr>")
    parts.append(f"</table><p id='accuracy-verdict'>{html.escape(accuracy_sentence(rounds))}</p>")

    # worth table
    parts.append("<h2>Worth: Q and effective clean tokens per stage</h2><table id='worth'><tr><th>round</th>"
                 "<th class='l'>stage</th><th>records</th><th>D (tokens)</th><th>Q [95% CI]</th>"
                 "<th>D·Q^(γ/β) [95% CI]</th><th class='l'>read off</th></tr>")
    for r in rounds:
        for st in STAGES:
            p = (r.get("lab_placements") or {}).get(st)
            if not p:
                continue
            if not p.get("placed"):
                parts.append(f"<tr><td>{r['round']}</td><td class='l'>{st}</td><td>{p.get('docs')}</td>"
                             f"<td>{p.get('D')}</td><td colspan='3' class='l note'>{html.escape(p.get('why', ''))}"
                             f"</td></tr>")
                continue
            q_ci, d_ci = p.get("Q_ci") or [None, None], p.get("D_eff_ci") or [None, None]
            epochs = p.get("epochs") or 1
            repeated = "" if epochs <= 1 else f", {epochs:g} epochs"
            parts.append(f"<tr data-stage='{st}'><td>{r['round']}</td><td class='l'>{st}</td><td>{p['docs']}</td>"
                         f"<td>{p['D']:,}</td><td class='q'>{_fmt(p.get('Q'))} {_ci(*q_ci)}</td>"
                         f"<td>{_tokens(p.get('D_eff'))} {_ci(_tokens(d_ci[0]), _tokens(d_ci[1]))}</td>"
                         f"<td class='l'>{html.escape(str(p.get('method')))}"
                         f"{repeated}</td></tr>")
    parts.append("</table><p class='note'>Q is relative to the reference pages as judged by their held-out part; "
                 "the interval of D·Q^(γ/β) is that of Q (γ/β at its point estimate). Datasets smaller than the "
                 "placement budget are repeated (epochs > 1), which the quality law does not model.</p>")

    # collapse
    keys = [("synthetic.distinct_2", "distinct-2"), ("synthetic.self_bleu", "self-BLEU"), ("synthetic.vendi", "Vendi"),
            ("tail_recall", "anchor tail recall"), ("embedding_coverage", "embedding coverage")]
    parts.append("<h2>Collapse metrics of each generation against the human anchor</h2><table id='collapse'>"
                 "<tr><th>round</th>" + "".join(f"<th>{k[1]}</th>" for k in keys) + "</tr>")
    for r in rounds:
        m = r.get("metrics") or {}
        parts.append(f"<tr><td>{r['round']}</td>" + "".join(f"<td>{_fmt(_dig(m, k[0]))}</td>" for k in keys) + "</tr>")
    parts.append("</table>")

    # lineage
    index = RunIndex(out)
    ids = index.output_ids()
    histories = {}
    for rid in ids:
        try:
            histories[rid] = lineage(index, rid)
        except KeyError:
            continue
    ordered = sorted(histories, key=lambda i: (histories[i]["origin"] != "synthetic", i))
    parts.append("<h2>Lineage</h2><p>Pick an output record (the last round's training mix) to see its history across "
                 "the four stages.</p><select id='pick'>")
    for rid in ordered:
        h = histories[rid]
        label = f"{h['origin'] or '?'}: {rid} — {h['text'][:70]}"
        parts.append(f"<option value='{html.escape(rid)}'>{html.escape(label)}</option>")
    parts.append("</select><div id='lineage'></div>")
    payload = json.dumps(histories, default=str).replace("</", "<\\/")
    parts.append(f"<script type='application/json' id='lineage-data'>{payload}</script><script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "".join(parts)


def _dig(d: dict[str, Any], dotted: str) -> Any:
    if dotted in d:
        return d[dotted]
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def refresh_summary(out: Path) -> None:
    """Rewrite ``flywheel.json`` from the run folder (a report of a run that is still going, or was killed)."""
    from assay.flywheel.loop import STATE_FILE, Flywheel, write_json
    from assay.flywheel.recipe import FlywheelRecipe

    state = read_json(out / STATE_FILE)
    if state is None:
        return
    summary = Flywheel(FlywheelRecipe(**state["recipe"]), out).summary()
    write_json(out / "flywheel.json", summary)


def write_report(out: str | Path, refresh: bool = False) -> Path:
    out = Path(out)
    if refresh:
        refresh_summary(out)
    path = out / "report.html"
    tmp = out / ".tmp-report.html"
    tmp.write_text(render(out), encoding="utf-8")
    tmp.replace(path)
    return path
