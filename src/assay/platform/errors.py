"""The errors of the web services' actions: what a request asked cannot be carried out, with the HTTP status an API
answers with. The annotation workflow raises these (``WorkflowError`` is :class:`RequestError`); the knowledge layer
derives its own from :class:`RequestError` (``KnowledgeError``), so a shell or a server catches one type."""

from __future__ import annotations


class RequestError(Exception):
    """A request that cannot be carried out; ``status`` is the HTTP status an API answers with."""

    status = 400


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409
