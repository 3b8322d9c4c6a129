"""The shared layer of Assay's web services: users, logins and the audit log (:mod:`.auth`, :mod:`.models`), the one
database and its migrations (:mod:`.db`, :mod:`.migrations`), and what sits in front of every route (:mod:`.http`,
:mod:`.limits`). The annotation app (:mod:`assay.annotate`) and the knowledge server (:mod:`assay.knowledge`) both
build on it and on nothing of each other."""
