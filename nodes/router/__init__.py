"""Hybrid router: send one image to a CPU or a GPU RunPod serverless endpoint chosen by policy.

Importable without ComfyUI or torch (standard library, numpy and Pillow only)::

    from cutout_guard.router import Router, load_policy, Request
    result = Router(load_policy("policy.toml")).submit("photo.jpg", tier="free")
    result.caption, result.verdict, result.endpoint, result.reason, result.cost_usd
"""

from __future__ import annotations

from .client import EndpointClient, Router, submit
from .errors import EndpointUnreachable, JobFailed, JobTimeout, MalformedOutput, PolicyError, RouterError
from .policy import DEFAULT_POLICY, Decision, Policy, Request, load_policy, parse_policy, route
from .result import Category, Result, Timings

__all__ = [
    "Category", "DEFAULT_POLICY", "Decision", "EndpointClient", "EndpointUnreachable", "JobFailed",
    "JobTimeout", "MalformedOutput", "Policy", "PolicyError", "Request", "Result", "Router",
    "RouterError", "Timings", "load_policy", "parse_policy", "route", "submit",
]
