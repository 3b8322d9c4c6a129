"""SuperBrain: many experts, one mind (Stage IV, text).

Experts converse with a model in the annotation app (the ``dialogue`` task: :mod:`.dialogue`), correcting its turns
and marking a final answer; each transcript becomes a record with its lineage. From every transcript
:mod:`.signatures` extracts the expert's atomic claims (their own edits first, then LLM-extracted claims checked
against a JSON schema, else sentences), normalised per domain, and clusters equivalent claims across experts.
:mod:`.aggregate` estimates each expert's reliability per domain (one-coin Dawid-Skene with gold items and the
expert network's reputation as prior) and finds *schools*: groups of reliable experts who coherently hold other
answers. Each question gets a reliability-weighted consensus, or school-labelled alternatives where reliable experts
genuinely disagree. :mod:`.distill` exports SFT rows, preference pairs and knowledge patches (into the review
workflow); :mod:`.simulate` is the proof by simulation (``benchmarks/superbrain.py``). See ``docs/superbrain.md``.
"""
