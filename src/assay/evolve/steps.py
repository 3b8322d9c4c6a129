"""Registers the evolve steps (the step registry imports this module): ``critique_revise``,
``execution_feedback``, ``behaviour_clustering``, ``judge_score``, ``judge_pairwise`` and ``human_floor``.
Importing them is cheap: models load and sandboxes start when a step is set up."""

from assay.evolve import critique, execution, judges, mixer  # noqa: F401
