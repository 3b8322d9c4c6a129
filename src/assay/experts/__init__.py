"""The expert network: who knows what (profiles and declared domains, :mod:`.reputation`), how far each expert is
trusted (reputation measured from annotation gold, peer agreement and knowledge reviews), routing work to them
(:mod:`.routing`) and paying them (peer-prediction rewards and an append-only ledger, :mod:`.rewards`); its tables
are in :mod:`.models`, its commands under ``assay knowledge`` (:mod:`.cli`).

It reads both the annotation app's labels and the knowledge layer's reviews, so it sits on top of both; neither of
them imports it.
"""
