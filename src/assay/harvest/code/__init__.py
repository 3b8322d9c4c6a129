"""Stage I for code: The Stack-style harvest of source repositories, with repository-level context.

Steps (importing this package registers them):

* ``code_ingest`` (:mod:`.ingest`): records naming repositories → one record per file, with repo, path, commit,
  size, language and license in ``meta``; vendored, generated and binary files dropped with reasons.
* ``code_license_filter`` (:mod:`.license_filter`): keep permissively licensed code (configurable allowlist).
* ``code_filter`` (:mod:`.filters`): The Stack / StarCoder filters with their published defaults.
* ``code_minhash_dedup`` (:mod:`.dedup`): near-duplicate files, MinHash-LSH with code-aware shingles.
* ``code_secrets`` (:mod:`.secrets`): keys, tokens, private keys, passwords, emails → placeholders.
* ``code_decontaminate`` (:mod:`.decontam`): exact-substring matches of benchmark prompts/solutions (the word
  n-gram test is the ``decontaminate`` step).
* ``repo_pack`` (:mod:`.packing`): repository-level samples, files in dependency order, within a token budget.

``recipes/stack-code.yaml`` ties them together; ``docs/code.md`` explains the choices.
"""

from assay.harvest.code.decontam import CodeDecontaminate
from assay.harvest.code.dedup import CodeMinHashDedup
from assay.harvest.code.filters import CodeFilter
from assay.harvest.code.ingest import CodeIngest
from assay.harvest.code.license_filter import CodeLicenseFilter
from assay.harvest.code.packing import RepoPack
from assay.harvest.code.secrets import CodeSecrets

__all__ = ["CodeDecontaminate", "CodeFilter", "CodeIngest", "CodeLicenseFilter", "CodeMinHashDedup", "CodeSecrets",
           "RepoPack"]
