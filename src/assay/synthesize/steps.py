"""Registers the synthesis steps (the step registry imports this module): ``self_instruct``, ``evol_instruct``,
``oss_instruct`` and ``textbook``. Importing them is cheap: models load when a step is set up."""

from assay.synthesize import evol_instruct, oss_instruct, self_instruct, textbook  # noqa: F401
from assay.synthesize import magpie  # noqa: F401
from assay.synthesize import ultrafeedback  # noqa: F401
