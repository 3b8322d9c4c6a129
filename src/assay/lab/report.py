"""``assay lab report``: one self-contained HTML page with every lab result found in a folder.

The lab commands write JSON files with a ``kind`` (``fit``, ``ladder``, ``ablation``, ``collapse``); the report
reads them back, redraws the figures (PNG, embedded as base64, so the page is a single file) and tabulates the
fitted constants with their confidence intervals, the placed candidates and the runtimes.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from assay.lab import plots

KINDS = ("ladder", "fit", "ablation", "collapse")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs img{max-width:520px;border:1px solid #eee}
.note{color:#666;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""


def find_results(folder: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every JSON file under ``folder`` (two levels deep) whose top-level ``kind`` is a lab result."""
    root = Path(folder)
    found = []
    candidates = sorted(set(root.glob("*.json")) | set(root.glob("*/*.json")))
    for path in candidates:
        try:
            data = orjson.loads(path.read_bytes())
        except (orjson.JSONDecodeError, OSError):
            continue
        if isinstance(data, dict) and data.get("kind") in KINDS:
            found.append((path, data))
    return found


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isinf(x):
            return "∞"
        if math.isnan(x):
            return "–"
        if 1e3 <= abs(x) < 1e12:
            return f"{x:,.0f}"
        if x != 0 and (abs(x) >= 1e12 or abs(x) < 1e-3):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    if isinstance(x, int):
        return f"{x:,}"
    return html.escape(str(x))


def _ci(lo: Any, hi: Any) -> str:
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _table(headers: list[str], rows: Iterable[list[Any]], left: int = 1) -> str:
    head = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f"<td class='l'>{_fmt(c)}</td>" if i < left else f"<td>{_fmt(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _figure(fn: Callable[..., bytes], *args: Any, alt: str = "") -> str:
    """A figure, or a note saying why it could not be drawn (a report must not fail on one odd result)."""
    try:
        return _img(fn(*args), alt)
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
        return f"<p class='note'>figure {html.escape(alt)} not drawn: {html.escape(type(e).__name__)}: " \
               f"{html.escape(str(e))}</p>"


def _constants(fit: dict[str, Any]) -> str:
    bounds = set(fit.get("at_bounds", []))
    rows = [[k, v, _ci(*fit["ci"].get(k, (None, None))), "at its search bound: not identified" if k in bounds else ""]
            for k, v in fit["params"].items()]
    return _table(["constant", "value", "95% CI", ""], rows)


def _train_settings(train: dict[str, Any]) -> str:
    """The training recipe (:class:`assay.lab.tinylm.TrainConfig` minus tokens and seed) in words."""
    t = dict(train)
    parts = ["AdamW"]
    if "lr" in t:
        parts.append(f"peak learning rate {t.pop('lr'):g}")
    if "batch_size" in t:
        parts.append(f"batch {t.pop('batch_size')} sequences")
    if "warmup" in t:
        decay = f" then cosine decay to {t.pop('min_lr_ratio'):.0%}" if "min_lr_ratio" in t else ""
        parts.append(f"linear warm-up {t.pop('warmup'):.0%} of the steps{decay}")
    if "weight_decay" in t:
        parts.append(f"weight decay {t.pop('weight_decay'):g}")
    if "grad_clip" in t:
        parts.append(f"gradient clipping {t.pop('grad_clip'):g}")
    if "eval_points" in t:
        parts.append(f"{t.pop('eval_points')} held-out evaluations per run")
    if "threads" in t:
        threads = t.pop("threads")
        parts.append("torch threads: min(2, CPUs)" if threads is None else
                     f"{threads} torch thread{'s' if threads != 1 else ''}")
    if "device" in t:
        parts.append(f"device {t.pop('device')}")
    parts += [f"{k.replace('_', ' ')} {v}" for k, v in t.items()]
    return html.escape(", ".join(parts))


def _harness(h: dict[str, Any]) -> str:
    if not h:
        return ""
    m = h.get("model", {})
    return (f"<p class='note'>model: {m.get('n_layer')} layers × d={m.get('d_model')}, context {m.get('context')}, "
            f"vocabulary {h.get('vocab_size')} → {_fmt(h.get('params'))} parameters "
            f"({_fmt(h.get('params_non_embedding'))} without embeddings); held-out set {_fmt(h.get('eval_tokens'))} "
            f"tokens; training: {_train_settings(h.get('train') or {})}</p>")


def _fit_remarks(fit: dict[str, Any]) -> str:
    """A fit's notes and warnings (e.g. a residual far above the runs' noise)."""
    return "".join([f"<p class='note'>note: {html.escape(n)}</p>" for n in fit.get("notes", [])]
                   + [f"<p><b>warning:</b> {html.escape(w)}</p>" for w in fit.get("warnings", [])])


def _ladder(path: Path, r: dict[str, Any]) -> str:
    out = [f"<h2>Quality ladder <span class='note'>{html.escape(path.name)}</span></h2>", _harness(r["harness"])]
    out.append(_table(["D", "Q", "mean loss", "95% CI", "seeds"],
                      [[int(c["D"]), c["Q"], c["mean"], _ci(c["lo"], c["hi"]), c["n"]] for c in r["cells"]],
                      left=0))
    fit = r.get("fit")
    figs = []
    if fit:
        out.append("<h3>Fitted quality law L = B/(D^β·Q^γ) + E (fixed model size)</h3>")
        out.append(_constants(fit))
        out.append(_fit_remarks(fit))
        gb = fit.get("gamma_over_beta")
        if gb:
            out.append(f"<p>γ/β = {_fmt(gb[0])} {_ci(gb[1], gb[2])}: a token of quality Q is worth "
                       f"Q<sup>γ/β</sup> clean tokens.</p>")
        out.append(_table(["Q", "D_eff / D", "95% CI"],
                          [[e["Q"], e["D_eff_over_D"], _ci(e["lo"], e["hi"])] for e in fit["effective_data"]],
                          left=0))
        figs.append(_figure(plots.law_fit, r, alt="law fit"))
        figs.append(_figure(plots.effective_data, r, alt="effective data"))
    if r.get("placements"):
        out.append("<h3>Candidate datasets placed on the ladder</h3>")
        out.append(_table(["dataset", "D", "loss", "95% CI", "Q", "Q 95% CI", "D_eff (clean tokens)",
                           "D_eff 95% CI", "read off", "Q (law)", "epochs"],
                          [[p["name"], p["D"], p["loss"]["mean"], _ci(p["loss"]["lo"], p["loss"]["hi"]), p["Q"],
                            _ci(*p["Q_ci"]), p["D_eff"], _ci(*p["D_eff_ci"]), p.get("method", "law"),
                            p.get("Q_law"), p["epochs"]]
                           for p in r["placements"]]))
        out.append("<p class='note'>Q and D_eff are read off the ladder (interpolated between its runs) when the "
                   "candidate's loss falls inside it, otherwise from the fitted law.</p>")
    for note in r.get("notes", []):
        out.append(f"<p class='note'>note: {html.escape(note)}</p>")
    curves = _pick_curves(r)
    if curves:
        figs.append(_figure(plots.loss_curves, curves, alt="loss curves"))
    out.append(f"<div class='figs'>{''.join(figs)}</div>")
    total = r.get("total_seconds")
    out.append(f"<p class='note'>{len(r['runs'])} training runs and the fit in {_fmt(float(r.get('seconds', 0.0)))}"
               f" s{'' if total is None else f'; the whole command {_fmt(float(total))} s'}.</p>")
    return "".join(out)


def _pick_curves(r: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Seed 0 at the largest D for every Q, plus the first seed of each candidate."""
    curves = r.get("curves", {})
    if not curves:
        return {}
    d_max = max(run["D"] for run in r["runs"])
    out = {f"Q={k.split('Q=')[1].split(',')[0]}": v for k, v in curves.items()
           if k.startswith(f"D={int(d_max)},") and k.endswith("seed=0")}
    for p in r.get("placements", []):
        if p.get("curves"):
            out[p["name"]] = p["curves"][0]
    return out


def _fit(path: Path, r: dict[str, Any]) -> str:
    fit = r["fit"]
    out = [f"<h2>{html.escape(fit['law'])} law fit <span class='note'>{html.escape(path.name)}</span></h2>",
           f"<p class='note'>{fit['n_runs']} runs from {html.escape(str(r.get('source', '')))}; Huber δ = "
           f"{fit['huber_delta']} on log loss; {fit['bootstrap']} bootstrap refits; rms log-residual "
           f"{_fmt(fit['rmse_log'])}</p>", _constants(fit), _fit_remarks(fit)]
    if r.get("compute_optimal"):
        out.append(_table(["FLOPs C", "N_opt", "95% CI", "D_opt", "95% CI", "D/N"],
                          [[c["C"], c["N_opt"], _ci(c["N_lo"], c["N_hi"]), c["D_opt"], _ci(c["D_lo"], c["D_hi"]),
                            c["D_opt"] / c["N_opt"]] for c in r["compute_optimal"]], left=0))
    if r.get("effective_data"):
        out.append(_table(["Q", "D_eff / D", "95% CI"],
                          [[e["Q"], e["D_eff_over_D"], _ci(e["lo"], e["hi"])] for e in r["effective_data"]],
                          left=0))
    if r.get("epochs"):
        out.append(_table(["epochs", "D' / U_D", "95% CI"],
                          [[e["epochs"], e["D_eff_over_U"], _ci(e["lo"], e["hi"])] for e in r["epochs"]], left=0))
    out.append(f"<div class='figs'>{_figure(plots.law_fit, r, alt='fit')}</div>")
    return "".join(out)


def _ablation(path: Path, r: dict[str, Any]) -> str:
    out = [f"<h2>Data ablation <span class='note'>{html.escape(path.name)}</span></h2>", _harness(r["harness"])]
    out.append(_table(["dataset", "mean held-out loss", "95% CI", "seeds", "unique tokens", "epochs"],
                      [[d["name"], d["loss"]["mean"], _ci(d["loss"]["lo"], d["loss"]["hi"]), d["loss"]["n"],
                        d["unique_tokens"], d["epochs"]] for d in r["datasets"]]))
    if r.get("comparisons"):
        out.append(_table(["dataset", "vs", "paired loss difference", "95% CI", "seeds lower"],
                          [[c["name"], c["baseline"], c["diff"]["mean"], _ci(c["diff"]["lo"], c["diff"]["hi"]),
                            f"{c['wins']}/{c['seeds']}"] for c in r["comparisons"]]))
    for note in r.get("notes", []):
        out.append(f"<p class='note'>{html.escape(note)}</p>")
    curves = {d["name"]: d["curves"][0] for d in r["datasets"] if d.get("curves")}
    out.append(f"<div class='figs'>{_figure(plots.ablation, r, alt='ablation')}"
               f"{_figure(plots.loss_curves, curves, alt='curves') if curves else ''}</div>")
    out.append(f"<p class='note'>{_fmt(r['tokens'])} training tokens per run; "
               f"{_fmt(float(r.get('seconds', 0.0)))} s in all.</p>")
    return "".join(out)


def _collapse(path: Path, r: dict[str, Any]) -> str:
    out = [f"<h2>Model collapse <span class='note'>{html.escape(path.name)}</span></h2>"]
    gauss = r.get("gaussian") or []
    if gauss:
        out.append(_table(["mode", "generations", "M", "chains", "median σ_end/σ₀", "max |median σ/σ₀ − 1|",
                           "chains within 10% of σ₀ at end"],
                          [[g["mode"], g["generations"], g["samples"], g["chains"],
                            g["median_sigma_final_over_sigma0"], g["median_sigma_max_deviation"],
                            g["chains_within_10pct_at_end"]] for g in gauss]))
    lm = r.get("lm") or []
    if lm:
        out.append(_harness(lm[0].get("harness", {})))
        out.append(_table(["mode"] + [f"gen {g['generation']}" for g in lm[0]["generations"]],
                          [[m["mode"]] + [g["eval_loss"] for g in m["generations"]] for m in lm]))
    figs = []
    if gauss:
        figs.append(_figure(plots.gaussian_collapse, gauss, alt="gaussian collapse"))
    if lm:
        figs.append(_figure(plots.lm_collapse, lm, alt="lm collapse"))
    out.append(f"<div class='figs'>{''.join(figs)}</div>")
    return "".join(out)


_SECTIONS: dict[str, Callable[[Path, dict[str, Any]], str]] = {
    "ladder": _ladder, "fit": _fit, "ablation": _ablation, "collapse": _collapse}


def render(results: list[tuple[Path, dict[str, Any]]], title: str = "Assay lab report") -> str:
    order = {k: i for i, k in enumerate(KINDS)}
    parts = [_SECTIONS[r["kind"]](p, r) for p, r in sorted(results, key=lambda pr: (order[pr[1]["kind"]], pr[0]))]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(parts) if parts else "<p>No lab results found.</p>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>generated {stamp} from {len(results)} result files</p>{body}</body></html>")


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Render every lab result under ``folder`` into ``out`` (default ``folder/lab-report.html``)."""
    results = find_results(folder)
    path = Path(out) if out is not None else Path(folder) / "lab-report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results), encoding="utf-8")
    return path
