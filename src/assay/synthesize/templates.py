"""Prompt templates: plain text files a user can read and edit, with ``$name`` placeholders.

The built-in templates live in ``assay/synthesize/templates/*.txt`` (package data). A step's ``templates`` parameter
maps a template name to a file of the user's own, e.g. ``templates: {evolve_deepen: my/deepen.txt}``. Placeholders
use :class:`string.Template` syntax (``$instruction`` or ``${instruction}``; ``$$`` for a literal dollar), so the
braces of JSON and code inside a template need no escaping. Each template's short hash goes into the lineage of the
records it produced, so a changed prompt is visible in the data. Trailing newlines of a template file are removed
(a completion prompt such as ``...\n9.`` must end exactly where the model should continue).
"""

from __future__ import annotations

import importlib.resources
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import xxhash


class TemplateError(ValueError):
    """A template is missing or uses placeholders its step does not provide."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    source: str = "builtin"
    _compiled: string.Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", string.Template(self.text))

    @property
    def hash(self) -> str:
        """A short hash of the template text (what ``meta["synth"]`` records)."""
        return xxhash.xxh3_64_hexdigest(self.text.encode())[:12]

    @property
    def placeholders(self) -> set[str]:
        return set(self._compiled.get_identifiers())

    def check(self, provided: set[str]) -> None:
        """Raise :class:`TemplateError` if the template needs a placeholder not in ``provided``."""
        if not self._compiled.is_valid():
            raise TemplateError(f"template {self.name!r} ({self.source}) has an invalid `$` placeholder; "
                                f"write $$ for a literal dollar sign")
        unknown = self.placeholders - provided
        if unknown:
            raise TemplateError(f"template {self.name!r} ({self.source}) uses unknown placeholder(s) "
                                f"{sorted(unknown)}; available: {sorted(provided)}")

    def render(self, **values: object) -> str:
        return self._compiled.substitute({k: str(v) for k, v in values.items()})


def builtin_template_names(package: str = "assay.synthesize") -> list[str]:
    folder = importlib.resources.files(package).joinpath("templates")
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def load_template(name: str, overrides: Mapping[str, str] | None = None,
                  placeholders: set[str] | None = None, package: str = "assay.synthesize") -> PromptTemplate:
    """The template ``name``: the user's file from ``overrides[name]`` if given, else the built-in one from
    ``package``'s ``templates/`` folder.

    With ``placeholders``, also check that the template uses only those.
    """
    override = (overrides or {}).get(name)
    if override:
        path = Path(override).expanduser()
        try:
            template = PromptTemplate(name, path.read_text(encoding="utf-8").rstrip("\n"), str(path))
        except OSError as e:
            raise TemplateError(f"cannot read template {name!r} from {path}: {e}") from None
    else:
        resource = importlib.resources.files(package).joinpath("templates", f"{name}.txt")
        try:
            template = PromptTemplate(name, resource.read_text(encoding="utf-8").rstrip("\n"))
        except FileNotFoundError:
            raise TemplateError(f"no built-in template {name!r}; built-in: {builtin_template_names(package)}") from None
    if placeholders is not None:
        template.check(placeholders)
    return template
