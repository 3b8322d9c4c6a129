"""``code_license_filter``: keep files whose license is on an allowlist (permissive licenses by default).

The license comes from ``code_ingest`` (``meta.license``: the repository's SPDX expression or ``unknown``). A file
with its own ``SPDX-License-Identifier`` header (``meta.spdx``) is judged by that header when
``use_file_headers`` is on: the header is the most specific statement about that file (a GPL file inside an MIT
repository, or an Apache-2.0 file in a repository without a LICENSE file).

Expressions are evaluated as SPDX says: ``A OR B`` passes if either is allowed, ``A AND B`` only if both are,
``A WITH exception`` as ``A``; ``-only``/``-or-later`` suffixes are compared on the base id.

Reasons: ``license_not_allowed``, ``license_unknown``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Filter, FilterParams
from assay.harvest.code.licenses import PERMISSIVE, expression_allowed


class CodeLicenseParams(FilterParams):
    #: SPDX ids that may be kept (The Stack's permissive policy by default)
    allow: list[str] = Field(default_factory=lambda: list(PERMISSIVE))
    #: a file's own SPDX header overrides its repository's license
    use_file_headers: bool = True
    #: keep files whose license could not be determined
    keep_unknown: bool = False


class CodeLicenseFilter(Filter):
    """Keep code whose (repository or file-header) license is on the allowlist."""

    name = "code_license_filter"
    version = "1"
    Params: ClassVar = CodeLicenseParams

    def __init__(self, params: object = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)  # type: ignore[arg-type]
        self._cache: dict[str, bool] = {}

    def _allowed(self, expression: str) -> bool:
        ok = self._cache.get(expression)
        if ok is None:
            ok = self._cache[expression] = expression_allowed(expression, self.params.allow)  # type: ignore[attr-defined]
        return ok

    def decide(self, record: Record) -> str | None:
        p: CodeLicenseParams = self.params  # type: ignore[assignment]
        header = record.meta.get("spdx") if p.use_file_headers else None
        expression = header if isinstance(header, str) and header else record.meta.get("license")
        if not isinstance(expression, str) or not expression or expression == "unknown":
            self.count("license:unknown")
            return None if p.keep_unknown else "license_unknown"
        if self._allowed(expression):
            self.count(f"license:{expression}")
            return None
        return "license_not_allowed"
