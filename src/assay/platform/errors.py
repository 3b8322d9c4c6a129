"""The one error type of the web services' actions: what a request asked cannot be carried out. The annotation
workflow (``WorkflowError``) and the knowledge layer (``KnowledgeError``) derive their errors from it, so a shell or a
server built on both catches one type."""

from __future__ import annotations


class RequestError(Exception):
    """A request that cannot be carried out; ``status`` is the HTTP status an API answers with."""

    status = 400
