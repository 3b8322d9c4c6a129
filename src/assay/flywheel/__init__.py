"""The flywheel: one closed loop through all four stages (harvest → annotate → synthesize → evolve), round after
round, with every record's history kept and each round's data placed on the lab's quality ladder.

``assay flywheel run RECIPE -o OUT`` runs it (:mod:`assay.flywheel.loop`); ``assay flywheel report OUT`` shows it
(:mod:`assay.flywheel.report`). The loop spans every stage, so it lives in its own package and only *uses* the
stages' public pieces: the harvest steps and the quality classifier, the annotation app (over HTTP), the synthesis
and evolve steps, the active-learning router, the mixer and collapse metrics, the knowledge store, and the lab's
quality ladder.
"""
