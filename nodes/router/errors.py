"""Errors of the router. Each says which endpoint, what happened, and what to do about it."""

from __future__ import annotations

from ..core.errors import CutoutGuardError


class RouterError(CutoutGuardError):
    """Base class of everything the router raises on purpose."""


class PolicyError(RouterError):
    """The routing policy (file, environment or request) cannot be used as given."""


class EndpointUnreachable(RouterError):
    """The endpoint did not answer, or refused the request (connection, HTTP 4xx/5xx)."""

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None):
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class JobFailed(RouterError):
    """The worker ran the job and reported failure; ``errors`` is the worker's error list."""

    def __init__(self, message: str, *, endpoint: str | None = None, job_id: str | None = None,
                 errors: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.endpoint = endpoint
        self.job_id = job_id
        self.errors = tuple(errors)


class JobTimeout(RouterError):
    """The job did not finish before the deadline; ``cancelled`` says whether it was cancelled."""

    def __init__(self, message: str, *, endpoint: str | None = None, job_id: str | None = None,
                 cancelled: bool = False):
        super().__init__(message)
        self.endpoint = endpoint
        self.job_id = job_id
        self.cancelled = cancelled


class MalformedOutput(RouterError):
    """The job finished but its output is not a Cutout Guard result (no report PNG, bad JSON)."""

    def __init__(self, message: str, *, endpoint: str | None = None, job_id: str | None = None):
        super().__init__(message)
        self.endpoint = endpoint
        self.job_id = job_id
