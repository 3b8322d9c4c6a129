"""The dataset card (``README.md``) that ``assay push`` publishes with a run folder or an annotation export.

A run's card is :func:`assay.run.layout.readme_text` (front matter with ``configs``, the counts and the drop
reasons) with more metadata in the front matter (``license``, ``language``, ``size_categories``,
``task_categories``, ``pretty_name``) and more sections in the body: the run, its recipe and parameters, the
funnel of steps, input errors, languages and how to load the repo. An export's card says what the rows are
(SFT, DPO, ratings…), how many, from which projects and annotators, and the vote agreement of DPO rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import yaml

from assay.run import layout

#: the Hub's size_categories, as (upper bound, label)
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
          (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"))
#: annotation export formats: (what a row is, the Hub's task category)
EXPORT_FORMATS = {
    "sft": ("an SFT conversation (`messages`)", "text-generation"),
    "dpo": ("a preference pair (`prompt`, `chosen`, `rejected`)", "text-generation"),
    "ratings": ("a rating with a column per rubric dimension", "text-classification"),
    "critiques": ("a critique of a response", "text-generation"),
    "edit": ("an image edit (`before`, `after`, `instruction`, `mask`)", "image-to-image"),
    "trajectory": ("an annotated robot episode", "robotics"),
    "dialogue": ("an expert dialogue with corrections", "text-generation"),
    "labels": ("a text with its label(s)", "text-classification"),
    "spans": ("a text with labelled spans (`tokens`, `ner_tags`)", "token-classification"),
    "annotations": ("one annotation, its raw value as JSON text", None),
}
#: a language share below this is noise from language ID, not a language of the data set
_MIN_LANGUAGE_SHARE = 0.01
#: SPDX ids (lower case, as records' ``meta.license`` has them from the code ingest) that are Hub license ids too
_HUB_LICENSES = {"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "bsl-1.0", "isc", "unlicense", "zlib",
                 "mpl-2.0", "epl-2.0", "artistic-2.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "agpl-3.0",
                 "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "odc-by", "odbl", "pddl"}


def hub_license(licenses: Counter) -> str | None:
    """The card's ``license`` from the records' licenses (SPDX, counted): the Hub's id when they all have the same
    one the Hub knows, ``other`` when they differ or the Hub does not know it, None when no record names one."""
    named = {str(k).lower().removesuffix("-only").removesuffix("-or-later") for k in licenses if k}
    if not named:
        return None
    return named.pop() if len(named) == 1 and next(iter(named)) in _HUB_LICENSES else "other"


def size_category(n: int) -> str:
    for bound, label in _SIZES:
        if n < bound:
            return label
    return "n>1T"


def _merge_front_matter(text: str, extra: dict[str, Any]) -> str:
    """``text`` (a card with YAML front matter) with ``extra`` keys added to its front matter (placed first, the
    card's own keys after)."""
    _, front, body = text.split("---\n", 2)
    meta = {**{k: v for k, v in extra.items() if v not in (None, [], "")}, **(yaml.safe_load(front) or {})}
    if "tags" in extra:
        meta["tags"] = list(dict.fromkeys([*(yaml.safe_load(front) or {}).get("tags", []), *extra["tags"]]))
    return f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n{body}"


def _languages(stats: dict[str, Any]) -> list[str]:
    langs = {k: v for k, v in (stats.get("languages") or {}).items() if k and k not in ("unknown", "und", "None")}
    total = sum(langs.values())
    return [k for k, v in sorted(langs.items(), key=lambda kv: -kv[1]) if total and v / total >= _MIN_LANGUAGE_SHARE]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cell = lambda v: f"{v:,}" if isinstance(v, int) else str(v).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in rows], ""]


def run_card(stats: dict[str, Any], recipe: dict[str, Any], repo_id: str, *, kind: str, data_files: str,
             rejected_files_glob: str | None, license: str | None = None,
             licenses: Counter | None = None) -> str:
    """The card of a run folder. ``kind`` is ``harvest`` or ``synthesis``; the globs are the repo paths of the
    kept and (when pushed) rejected files; ``license`` (given) wins over the one ``licenses`` (the kept records'
    ``meta.license``, counted) implies."""
    licenses = licenses or Counter()
    body: list[str] = ["## The run", ""]
    out = stats.get("output", {})
    body += [f"- kind: {kind} ({'records generated by a model' if kind == 'synthesis' else 'records filtered from '}"
             f"{'' if kind == 'synthesis' else 'the input'})",
             f"- executor: {stats.get('executor', '?')}, workers: {stats.get('workers', '?')}, "
             f"{stats.get('seconds', 0):,.1f} s (started {stats.get('started', '?')})",
             f"- output format: {out.get('format', '?')}"
             + ("" if rejected_files_glob else " (the rejected records are not in this repo)"), ""]
    steps = stats.get("steps", [])
    if steps:
        body += ["## Funnel", ""]
        rows = []
        for s in steps:
            n_in, dropped = s.get("records_in", 0), s.get("dropped", 0)
            share = f"{dropped / n_in:.1%}" if n_in else "-"
            rows.append([s["name"], n_in, s.get("records_out", 0), dropped, share, f"{s.get('seconds', 0):.2f}"])
        body += _table(["step", "in", "out", "dropped", "dropped share", "seconds"], rows)
    counted = [(s["name"], k, v) for s in steps for k, v in sorted((s.get("counters") or {}).items())]
    if counted:  # what steps count besides drops: a model's requests and retries, candidates rejected, clusters…
        body += ["## Step counters", ""] + _table(["step", "counter", "value"], [list(c) for c in counted])
    if recipe.get("steps"):
        body += ["## Recipe", "", "The steps and their parameters as run (the whole recipe, input and "
                 "output included, is `recipe.yaml`):", "", "```yaml",
                 yaml.safe_dump({"steps": recipe["steps"]}, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    errors = stats.get("errors") or {}
    body += ["## Input errors", ""]
    if errors:
        body += ["Inputs skipped while reading (counted, the run went on):", ""]
        body += _table(["error", "records"], [[k, v] for k, v in sorted(errors.items(), key=lambda kv: -kv[1])])
    else:
        body += ["None: every input record was read.", ""]
    langs = stats.get("languages") or {}
    if langs:
        body += ["## Languages of the kept records", ""]
        body += _table(["language", "records"], [[k, v] for k, v in sorted(langs.items(), key=lambda kv: -kv[1])])
    if licenses:
        body += ["## Licenses of the kept records", "", "From each record's `meta.license`:", ""]
        body += _table(["license", "records"], [[k or "(none)", v] for k, v in licenses.most_common()])
    notes = stats.get("notes") or []
    if notes:
        body += ["## Notes", "", *[f"- {n}" for n in notes], ""]

    text = layout.readme_text(stats, recipe, data_files=data_files, rejected_files_glob=rejected_files_glob,
                              body="\n".join(body))
    text = text.replace('"path/to/this/folder"', f'"{repo_id}"')
    if not rejected_files_glob:
        text = "\n".join(line for line in text.split("\n") if not line.startswith("rejected = load_dataset("))
    task = ["text-generation"]
    tags = ["synthetic"] if kind == "synthesis" else []
    return _merge_front_matter(text, {
        "pretty_name": recipe.get("name") or stats.get("recipe"), "license": license or hub_license(licenses),
        "language": _languages(stats), "size_categories": [size_category(out.get("records", 0))],
        "task_categories": task, "tags": tags})


def export_card(rows: list[dict[str, Any]], export_format: str, repo_id: str, data_files: str, *,
                source_name: str, license: str | None = None) -> str:
    """The card of an annotation export (``assay annotate export``) of ``rows`` in ``export_format``."""
    what, task = EXPORT_FORMATS.get(export_format, ("a row", None))
    projects = Counter(str(r.get("project")) for r in rows if r.get("project") is not None)
    annotators: set[str] = set()
    for r in rows:
        a = r.get("annotator") if r.get("annotator") is not None else r.get("annotators")
        annotators.update(a if isinstance(a, list) else [a] if a is not None else [])
    front = yaml.safe_dump({"configs": [{"config_name": "default", "default": True,
                                         "data_files": [{"split": layout.SPLIT, "path": data_files}]}]},
                           sort_keys=False)
    lines = [f"---\n{front}---", "", f"# {source_name}", "",
             f"Annotations exported by Assay (`assay annotate export --format {export_format}`): each row is "
             f"{what}, with its provenance (`record_id`, `project`, annotator, `lineage`).", ""]
    lines += _table(["", ""], [["rows", len(rows)], ["format", export_format],
                               ["projects", ", ".join(f"{p} ({n:,} rows)" for p, n in projects.most_common()) or "-"],
                               ["annotators", len(annotators)]])
    if export_format == "dpo":
        lines += _dpo_agreement(rows)
    lines += ["## Loading", "", "```python", "from datasets import load_dataset", "",
              f'rows = load_dataset("{repo_id}", split="train")', "```", ""]
    return _merge_front_matter("\n".join(lines), {
        "pretty_name": source_name, "license": license, "size_categories": [size_category(len(rows))],
        "task_categories": [task] if task else [],
        "tags": ["assay", "annotations", export_format, *(["preference"] if export_format == "dpo" else [])]})


def _dpo_agreement(rows: list[dict[str, Any]]) -> list[str]:
    """The annotators' agreement on the pairs: the share of the votes that went to the chosen answer."""
    votes = [r["votes"] for r in rows if isinstance(r.get("votes"), dict)]
    if not votes:
        return []
    with_winner = [max(v.get("a", 0), v.get("b", 0)) for v in votes]
    cast = [sum(v.values()) for v in votes]
    unanimous = sum(1 for w, c in zip(with_winner, cast) if c and w == c)
    share = sum(with_winner) / sum(cast) if sum(cast) else 0.0
    return ["## Agreement", "",
            f"{sum(cast):,} votes on {len(votes):,} pairs; {share:.1%} of the votes went to the chosen answer; "
            f"unanimous pairs: {unanimous:,} ({unanimous / len(votes):.1%}).", ""]
