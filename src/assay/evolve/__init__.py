"""Stage IV, the human-machine loop: machines check machines where they can (code in a sandbox, LLM judges,
constitutional critique), people check where the machines are least sure (active learning into the annotation
app), and collapse metrics with a human-data floor keep synthetic data from washing out the real thing.

Modules: :mod:`.sandbox` (bubblewrap), :mod:`.seccomp`, :mod:`.escapes`, :mod:`.execution` (RLEF, behaviour
clustering), :mod:`.critique`, :mod:`.judges`, :mod:`.active`, :mod:`.collapse`, :mod:`.mixer`, :mod:`.loop`,
:mod:`.report`, :mod:`.cli`; :mod:`.steps` registers the pipeline steps. See ``docs/evolve.md``.
"""
