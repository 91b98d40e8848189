"""RunPod serverless client and the router that sends one image to the CPU or GPU endpoint.

Speaks RunPod's documented queue API (base URL configurable, ``Authorization: Bearer <key>``):
``POST {base}/{endpoint_id}/run`` and ``/runsync``, ``GET /status/{job_id}``,
``POST /cancel/{job_id}``, ``GET /health``. Standard library only (``http.client``), so it
imports without ComfyUI, torch or any HTTP package.

Retries (with exponential backoff and jitter) only where repeating cannot start a second job:
health checks, status polls and cancels are retried on connection errors, timeouts, 429 and 5xx;
``/run`` and ``/runsync`` are re-sent only when no job can have started: the connection failed
before anything was sent, or the API refused the request with 429 (rate limited).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn
from urllib.parse import quote, urlsplit

from ..core.errors import BadInput
from . import policy as policy_mod
from .errors import EndpointUnreachable, JobFailed, JobTimeout, MalformedOutput, PolicyError, RouterError
from .policy import Decision, Policy, Request
from .result import Result, Timings, report_image
from .workflow import load_workflow, payload

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REFUSED = 429  # the API turned the request away: no job was queued, so even a /run may be sent again
RUNNING = frozenset({"IN_QUEUE", "IN_PROGRESS"})
WORKER_STATES = ("idle", "running", "initializing")  # /health workers that can take a job now or soon
MAX_BODY = {"run": 10 * 1024 * 1024, "runsync": 20 * 1024 * 1024}  # RunPod's payload limits
USER_AGENT = "cutout-guard-router/1"


class _NotSent(Exception):
    """The connection failed before the request went out: safe to send again."""


class _ReadTimeout(EndpointUnreachable):
    """A request was sent but no answer came in time (the callers decide what that means)."""


class _DeadlinePassed(Exception):
    """The job's deadline passed while a status poll was being retried."""


@dataclass(frozen=True)
class JobState:
    """A job's final ``/status`` (or ``/runsync``) answer and the seconds it took here."""

    job_id: str
    state: dict
    wall_s: float


class EndpointClient:
    """One RunPod serverless endpoint. ``url`` is ``{base_url}/{endpoint_id}``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        name: str = "endpoint",
        retries: int = 3,
        backoff_s: float = 0.5,
        request_timeout_s: float = 30.0,
        poll_interval_s: float = 1.0,
        poll_max_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url.rstrip("/")
        self.name = name
        self._key = api_key
        self.retries = retries
        self.backoff_s = backoff_s
        self.request_timeout_s = request_timeout_s
        self.poll_interval_s = poll_interval_s
        self.poll_max_s = poll_max_s
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:  # never shows the key
        return f"EndpointClient({self.name!r}, {self.url!r})"

    # ------------------------------------------------------------------ operations

    def health(self) -> dict:
        """``GET /health``: ``{"jobs": {"inQueue", "inProgress", ...}, "workers": {...}}``."""
        return self._json("GET", "/health", safe=True, what="health check")

    def queue_length(self) -> int:
        """``jobs.inQueue`` from ``/health``."""
        return self._health_count("jobs", ("inQueue",))

    def worker_count(self) -> int:
        """Workers that are up or starting, from ``/health`` (``workers.idle + running + initializing``)."""
        return self._health_count("workers", WORKER_STATES)

    def _health_count(self, group: str, keys: tuple[str, ...]) -> int:
        answer = self.health()
        table = answer.get(group) if isinstance(answer, dict) else None
        values = [table.get(key, 0) for key in keys] if isinstance(table, dict) else [None]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise MalformedOutput(f"{self.name} endpoint: /health has no {group}.{'/'.join(keys)} count: {answer!r}"[:300],
                                  endpoint=self.name)
        return sum(values)

    def run(self, body: dict) -> str:
        """``POST /run``: the new job's id."""
        answer = self._json("POST", "/run", body, safe=False, what="job submission")
        return self._job_id(answer, "/run")

    def runsync(self, body: dict, *, wait_s: float) -> dict:
        """``POST /runsync?wait=ms``: the final state, or a running one (then poll ``status``)."""
        wait_ms = int(min(max(wait_s, 1.0), 300.0) * 1000)
        return self._json("POST", f"/runsync?wait={wait_ms}", body, safe=False, what="job submission",
                          timeout=wait_ms / 1000 + self.request_timeout_s)

    def status(self, job_id: str, *, deadline: float | None = None) -> dict:
        """``GET /status/{job_id}`` (retries stop at ``deadline``, a ``clock()`` value)."""
        return self._json("GET", f"/status/{quote(job_id, safe='')}", safe=True, what="status poll",
                          deadline=deadline)

    def cancel(self, job_id: str) -> dict:
        """``POST /cancel/{job_id}`` (idempotent, so retried like a read)."""
        return self._json("POST", f"/cancel/{quote(job_id, safe='')}", safe=True, what="cancel")

    def execute(self, body: dict, *, timeout_s: float, wait: str = "run") -> JobState:
        """Submit ``body`` and wait until the job ends or ``timeout_s`` passes.

        Returns the COMPLETED state; raises JobFailed, JobTimeout (after cancelling the job),
        EndpointUnreachable or MalformedOutput.
        """
        start = self._clock()
        deadline = start + timeout_s
        if wait == "runsync":
            try:
                state = self.runsync(body, wait_s=timeout_s)
            except _ReadTimeout:
                raise JobTimeout(
                    f"{self.name} endpoint: /runsync gave no answer within {timeout_s:g} s and no job id came "
                    "back, so the job could not be cancelled — check the endpoint's requests in the RunPod console",
                    endpoint=self.name, cancelled=False) from None
            job_id = self._job_id(state, "/runsync")
            if state.get("status") in RUNNING:
                state = self.wait(job_id, deadline)
            else:
                self._check_final(job_id, state)
        else:
            job_id = self.run(body)
            state = self.wait(job_id, deadline)
        return JobState(job_id, state, self._clock() - start)

    def wait(self, job_id: str, deadline: float) -> dict:
        """Poll ``/status`` until the job ends; at ``deadline`` cancel it and raise JobTimeout."""
        interval = self.poll_interval_s
        while True:
            if deadline - self._clock() <= 0:
                self._time_out(job_id)
            try:
                state = self.status(job_id, deadline=deadline)
            except _DeadlinePassed:
                self._time_out(job_id)
            if not isinstance(state, dict):
                raise MalformedOutput(f"{self.name} endpoint: /status answered {state!r}"[:300],
                                      endpoint=self.name, job_id=job_id)
            status = state.get("status")
            if status in RUNNING:
                self._sleep(max(0.0, min(interval, deadline - self._clock())))
                interval = min(self.poll_max_s, interval * 1.5)
                continue
            self._check_final(job_id, state)
            return state

    # ------------------------------------------------------------------ helpers

    def _check_final(self, job_id: str, state: dict) -> None:
        status = state.get("status")
        if status == "COMPLETED":
            return
        if status == "FAILED":
            errors = worker_errors(state)
            raise JobFailed(f"{self.name} endpoint: job {job_id} failed: " + ("; ".join(errors) or "no error given"),
                            endpoint=self.name, job_id=job_id, errors=errors)
        if status == "CANCELLED":
            raise JobFailed(f"{self.name} endpoint: job {job_id} was cancelled (not by this client)",
                            endpoint=self.name, job_id=job_id, errors=["cancelled"])
        if status == "TIMED_OUT":
            raise JobTimeout(f"{self.name} endpoint: job {job_id} hit the endpoint's execution timeout "
                             "(RunPod stopped it) — raise the timeout in the endpoint's settings",
                             endpoint=self.name, job_id=job_id, cancelled=True)
        raise MalformedOutput(f"{self.name} endpoint: job {job_id} has an unknown status {status!r}",
                              endpoint=self.name, job_id=job_id)

    def _time_out(self, job_id: str) -> NoReturn:
        try:
            answer = self.cancel(job_id)
        except RouterError as exc:
            raise JobTimeout(f"{self.name} endpoint: job {job_id} did not finish in time and cancelling it "
                             f"failed ({exc}) — cancel it in the RunPod console", endpoint=self.name,
                             job_id=job_id, cancelled=False) from None
        log.info("cancelled %s job %s after its deadline: %s", self.name, job_id, answer.get("status"))
        raise JobTimeout(f"{self.name} endpoint: job {job_id} did not finish in time; it was cancelled",
                         endpoint=self.name, job_id=job_id, cancelled=True)

    def _job_id(self, answer: Any, op: str) -> str:
        job_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise MalformedOutput(f"{self.name} endpoint: {op} answered without a job id: {answer!r}"[:300],
                                  endpoint=self.name)
        return job_id

    def _json(self, method: str, path: str, body: Any = None, *, safe: bool, what: str,
              timeout: float | None = None, deadline: float | None = None) -> Any:
        status, raw = self._request(method, self.url + path, body, safe=safe, what=what, timeout=timeout,
                                    deadline=deadline)
        if status in (401, 403):
            raise EndpointUnreachable(f"{self.name} endpoint refused the API key (HTTP {status}) — check the key "
                                      "and that it may use this endpoint", endpoint=self.name, status=status)
        if status == 404:
            raise EndpointUnreachable(f"{self.name} endpoint: {what} got HTTP 404 from {self.url}{path.split('?')[0]} "
                                      "— check the endpoint id and base_url", endpoint=self.name, status=status)
        if status >= 400:
            text = raw[:300].decode("utf-8", "replace")
            raise EndpointUnreachable(f"{self.name} endpoint: {what} failed with HTTP {status}: {text}",
                                      endpoint=self.name, status=status)
        try:
            return json.loads(raw)
        except ValueError:
            raise MalformedOutput(f"{self.name} endpoint: {what} answered with non-JSON: "
                                  f"{raw[:200].decode('utf-8', 'replace')!r}", endpoint=self.name) from None

    def download(self, url: str) -> bytes:
        """GET an output image's URL (worker-comfyui's S3 upload), without the RunPod key."""
        status, raw = self._request("GET", url, None, safe=True, what="image download", auth=False)
        if status != 200:
            raise MalformedOutput(f"{self.name} endpoint: the output image URL answered HTTP {status}",
                                  endpoint=self.name)
        return raw

    def _request(self, method: str, url: str, body: Any, *, safe: bool, what: str,
                 timeout: float | None = None, deadline: float | None = None,
                 auth: bool = True) -> tuple[int, bytes]:
        """One HTTP exchange, repeated only where that is safe; ``(status, body)``."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        timeout = timeout or self.request_timeout_s
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
            limit = timeout
            if deadline is not None:
                limit = min(timeout, deadline - self._clock())
                if limit <= 0:
                    raise _DeadlinePassed()
            try:
                status, headers, raw = _send(method, url, data, self._key if auth else None, limit)
            except _NotSent as exc:
                last = f"could not connect ({exc})"
                continue  # nothing reached the server: repeating is safe for every method
            except (OSError, http.client.HTTPException) as exc:
                if not safe:
                    cls = _ReadTimeout if isinstance(exc, TimeoutError) else EndpointUnreachable
                    raise cls(f"{self.name} endpoint: the {what} was sent but no answer came back ({exc!r}); "
                              "not sent again because a job may already be queued", endpoint=self.name) from None
                last = f"no answer ({exc!r})"
                continue
            if status in RETRY_STATUSES and (safe or status == REFUSED) and attempt < self.retries:
                last = f"HTTP {status}"
                retry_after = headers.get("Retry-After", "")
                if retry_after.isdigit():
                    self._sleep(min(float(retry_after), 10.0))
                continue
            return status, raw
        if deadline is not None and deadline - self._clock() <= 0:
            raise _DeadlinePassed()
        raise EndpointUnreachable(f"{self.name} endpoint unreachable at {self.url}: {what} failed after "
                                  f"{self.retries + 1} tries, last: {last}", endpoint=self.name)


def _send(method: str, url: str, data: bytes | None, api_key: str | None, timeout: float):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyError(f"not an http(s) URL: {url!r} — check base_url / url in the policy")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        try:
            conn.connect()
        except OSError as exc:
            raise _NotSent(exc) from None
        conn.request(method, target, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def worker_errors(state: Mapping) -> list[str]:
    """The worker's error list from a FAILED state: ``error`` (a string, or the SDK's JSON record
    of a handler exception) plus worker-comfyui's ``output.details``."""
    errors: list[str] = []
    error = state.get("error")
    if isinstance(error, str) and error:
        try:
            record = json.loads(error)
        except ValueError:
            record = None
        if isinstance(record, dict) and "error_message" in record:
            kind = str(record.get("error_type", "")).removeprefix("<class '").removesuffix("'>")
            errors.append(f"{kind}: {record['error_message']}" if kind else str(record["error_message"]))
        else:
            errors.append(error)
    elif error:
        errors.append(json.dumps(error))
    output = state.get("output")
    if isinstance(output, Mapping):
        for key in ("details", "errors"):
            if isinstance(output.get(key), list):
                errors.extend(str(e) for e in output[key])
    return errors


# ---------------------------------------------------------------------------- router


class Router:
    """Sends one image to the endpoint the policy picks and returns a ``Result``.

    ``api_key`` and the endpoint ids default to the environment (``env``, default ``os.environ``)
    under the names the policy gives. ``now`` is the time rules are evaluated at: a datetime
    (every decision at that time), a function returning one (asked at each decision), or None
    for the wall clock; ``decide``/``submit`` take a ``now`` of their own too. Client options (``retries``, ``backoff_s``,
    ``poll_interval_s``, ...) pass through to each ``EndpointClient``.
    """

    def __init__(self, policy: Policy | None = None, *, api_key: str | None = None,
                 env: Mapping[str, str] | None = None, now: datetime | Callable[[], datetime] | None = None,
                 **client_options: Any):
        self.policy = policy or policy_mod.load_policy()
        self.env = os.environ if env is None else env
        self._now = now
        self._api_key = api_key
        self._options = client_options
        self._clients: dict[str, EndpointClient] = {}
        self._workflows: dict[str, dict] = {}

    def client(self, name: str) -> EndpointClient:
        if name not in self._clients:
            endpoint = self.policy.endpoints[name]
            url = endpoint.url or f"{self.policy.base_url}/{endpoint.endpoint_id(self.env)}"
            self._clients[name] = EndpointClient(url, self._key(), name=name, **self._options)
        return self._clients[name]

    def endpoint_id(self, name: str) -> str:
        endpoint = self.policy.endpoints[name]
        if endpoint.url and not (endpoint.id or self.env.get(endpoint.id_env)):
            return endpoint.url
        return endpoint.endpoint_id(self.env)

    def now(self) -> datetime:
        """The time a decision made now is made at (the ``now`` given, else the wall clock)."""
        if self._now is None:
            return policy_mod.utc_now()
        return self._now() if callable(self._now) else self._now

    def decide(self, request: Request, *, now: datetime | None = None) -> Decision:
        """The endpoint for ``request`` at ``now`` (default: the router's ``now``): first matching
        rule, then overflow by queue length."""
        decision = policy_mod.first_match(self.policy, request, now or self.now())
        queues: dict[str, int | None] = {}
        for name in policy_mod.queues_needed(self.policy, decision):
            client = self.client(name)  # a missing endpoint id or key is an error, not an unknown queue
            try:
                queues[name] = client.queue_length()
            except (EndpointUnreachable, MalformedOutput) as exc:
                log.warning("queue length of the %s endpoint unknown: %s", name, exc)
                queues[name] = None
        return policy_mod.overflow(self.policy, decision, queues)

    def submit(self, image: bytes | str | Path, *, tier: str, urgent: bool = False,
               now: datetime | None = None, wait: str | None = None) -> Result:
        """Route ``image`` (file bytes or a path; PNG, JPEG or WebP), run it, return the Result."""
        data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
        wait = wait or self.policy.wait
        if wait not in policy_mod.WAIT_MODES:
            raise PolicyError(f"wait must be one of {policy_mod.WAIT_MODES}, got {wait!r}")
        start = time.monotonic()
        decision = self.decide(Request(tier=tier, urgent=urgent), now=now)
        log.info("routing to %s: %s", decision.endpoint, "; ".join(decision.steps))
        try:
            job = self._attempt(decision.endpoint, data, wait)
        except (EndpointUnreachable, JobFailed, JobTimeout) as exc:
            cause = "timeout" if isinstance(exc, JobTimeout) else "failed" if isinstance(exc, JobFailed) else "unreachable"
            target = policy_mod.fallback_for(self.policy, decision.endpoint, cause)
            if target is None:
                raise
            decision = decision.then(target, f"fallback: {decision.endpoint} {cause} ({exc}) → {target}")
            log.warning("%s", decision.reason)
            job = self._attempt(target, data, wait)
        return self._result(decision, job, time.monotonic() - start)

    # ------------------------------------------------------------------ helpers

    def body(self, name: str, data: bytes, wait: str = "run") -> dict:
        """The request body that runs image ``data`` on endpoint ``name`` (its workflow + the image);
        BadInput when it is not an image ComfyUI loads or is over RunPod's size limit for ``wait``."""
        endpoint = self.policy.endpoints[name]
        if name not in self._workflows:
            self._workflows[name] = load_workflow(endpoint.workflow)
        body = payload(self._workflows[name], data, endpoint.image_node, source=str(endpoint.workflow))
        size = len(json.dumps(body))
        if size > MAX_BODY[wait]:
            raise BadInput(f"the request is {size / 2**20:.1f} MiB; RunPod's /{wait} takes at most "
                           f"{MAX_BODY[wait] / 2**20:.0f} MiB — send a smaller image"
                           + (" or use wait = \"runsync\" (20 MiB)" if wait == "run" else ""))
        return body

    def _attempt(self, name: str, data: bytes, wait: str) -> JobState:
        body = self.body(name, data, wait)
        return self.client(name).execute(body, timeout_s=self.policy.endpoints[name].timeout_s, wait=wait)

    def _result(self, decision: Decision, job: JobState, wall_s: float) -> Result:
        name = decision.endpoint
        image = report_image(job.state.get("output"), endpoint=name, job_id=job.job_id,
                             fetch=self.client(name).download)
        queue_s = _seconds(job.state.get("delayTime"))
        execution_s = _seconds(job.state.get("executionTime"))
        price = self.policy.endpoints[name].price_per_second
        cost = basis = None
        if price is not None:
            billed, basis = billed_seconds(job.state, job.wall_s)
            cost = round(billed * price, 6)
        return Result(
            png=image.png,
            report=image.report,
            endpoint=name,
            endpoint_id=self.endpoint_id(name),
            reason=decision.reason,
            route=decision.steps,
            job_id=job.job_id,
            filename=image.filename,
            timings=Timings(wall_s=wall_s, queue_s=queue_s, execution_s=execution_s,
                            stages=dict(image.report.get("seconds") or {})),
            cost_usd=cost,
            cost_basis=basis,
            warnings=image.warnings,
        )

    def _key(self) -> str:
        key = self._api_key or self.env.get(self.policy.api_key_env, "").strip()
        if not key:
            raise PolicyError(f"no RunPod API key — set {self.policy.api_key_env}")
        return key


def _seconds(ms: Any) -> float | None:
    return None if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0 else ms / 1000.0


def billed_seconds(state: Mapping, wall_s: float) -> tuple[float, str]:
    """The seconds a job is charged for and what they are based on: RunPod's ``executionTime``
    plus ``delayTime`` (queue and cold start) when the answer carries them, else the wall time
    measured here. ``delayTime`` also counts waiting for a free worker, which is not billed, so
    with a long queue this is an upper bound."""
    execution_s = _seconds(state.get("executionTime"))
    if execution_s is None:
        return wall_s, "wall time"
    delay_s = _seconds(state.get("delayTime"))
    if delay_s is None:
        return execution_s, "executionTime"
    return execution_s + delay_s, "executionTime + delayTime"


def submit(image: bytes | str | Path, *, tier: str, urgent: bool = False, policy: str | Path | Policy | None = None,
           **options: Any) -> Result:
    """One-call form: load ``policy`` (a path, a Policy, or None for the default) and submit."""
    loaded = policy if isinstance(policy, Policy) else policy_mod.load_policy(policy)
    return Router(loaded, **options).submit(image, tier=tier, urgent=urgent)
