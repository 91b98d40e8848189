"""``cutout-guard run PHOTOS --endpoint NAME|auto``: every photo a job on a RunPod endpoint.

The same outputs as the local run: ``<out>/<name>.png`` (the worker's report PNG), its ``.json``,
and ``results.jsonl``. Each image is submitted with ``/run`` to the endpoint named, or with
``auto`` to the one the policy picks for a ``batch`` request (the default policy: CPU, overflowing
to GPU when the CPU queue is over 20), then polled with ``/status``. At most ``concurrency`` jobs
are in flight (default: the workers of the endpoints the run may use — the policy's ``workers``,
else the count ``/health`` reports).

Nothing is sent twice: the moment ``/run`` answers, a ``"status": "submitted"`` line with the job
id goes to ``results.jsonl``; a later run polls that job again instead of sending the image (a
run killed between ``/run`` answering and that line being written — microseconds — is the one
case that sends an image again). ``/run`` is repeated only where no job can have started (the
connection failed before the request went out, or HTTP 429). On Ctrl-C every job in flight is
cancelled with ``/cancel`` and recorded as cancelled (the next run sends it again); a job whose
cancel fails keeps its submitted line, so the next run collects it. On SIGTERM (``kill``) no new
job is sent, the ``/run`` requests on their way are answered and recorded, and the jobs in
flight are left running for the next run to collect. Only a run killed outright (SIGKILL, a
power cut) while a ``/run`` is on its way can leave a job whose id was never recorded — at most
one per job slot (``concurrency``): the next run sends those images again.

Cost per image: RunPod's ``executionTime + delayTime`` when the answer carries them, else the
wall time measured here (the line says which), times the endpoint's ``price_per_second``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..core.errors import BadInput, CutoutGuardError
from ..core.report import write_encoded
from ..core.results import RESULTS, SUBMITTED, append_result, is_done, is_submitted, last_entries, new_entry
from .client import EndpointClient, Router, billed_seconds, _seconds
from .errors import EndpointUnreachable, MalformedOutput, PolicyError, RouterError
from .policy import ENDPOINTS, Policy, Request
from .result import report_image, verdict_of
from .stats import percentile

log = logging.getLogger(__name__)

AUTO = "auto"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_TERMINATED = 128 + 15  # as a shell reports a process ended by SIGTERM
CANCELLED = "cancelled when the run was interrupted — run the same command again to send it again"


class Photo(Protocol):
    """One input image (the command line's ``Item``): its file, its name as given, its output name."""

    source: Path
    label: str
    output: str


class Stopped(Exception):
    """The run was interrupted: stop polling."""


class Terminated(Exception):
    """SIGTERM arrived: stop sending, leave the jobs in flight for the next run."""


@dataclass
class EndpointTotals:
    """What one endpoint did in this run."""

    name: str
    images: int = 0
    failures: int = 0
    latencies_s: list[float] = field(default_factory=list)  # submit → collected, successful images
    billed_s: float = 0.0
    cost_usd: float | None = None       # None: the policy gives this endpoint no price

    def row(self) -> list[str]:
        median, p95 = percentile(self.latencies_s, 50), percentile(self.latencies_s, 95)
        cost = "no price" if self.cost_usd is None else f"{self.cost_usd:.5f}"
        return [self.name, str(self.images), str(self.failures), _s(median), _s(p95), f"{self.billed_s:.1f}", cost]


@dataclass
class BatchReport:
    """The run's outcome: counts, and totals per endpoint."""

    done: int = 0
    failed: int = 0
    skipped: int = 0                    # done by an earlier run
    resumed: int = 0                    # jobs of an earlier run collected by this one
    interrupted: bool = False
    endpoints: dict[str, EndpointTotals] = field(default_factory=dict)

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd or 0.0 for t in self.endpoints.values())

    def table(self) -> str:
        header = ["endpoint", "images", "failures", "median s", "p95 s", "billed s", "cost $"]
        rows = [t.row() for t in self.endpoints.values()]
        if len(rows) > 1:
            everything = EndpointTotals("all")
            for t in self.endpoints.values():
                everything.images += t.images
                everything.failures += t.failures
                everything.latencies_s += t.latencies_s
                everything.billed_s += t.billed_s
                if t.cost_usd is not None:
                    everything.cost_usd = (everything.cost_usd or 0.0) + t.cost_usd
            rows.append(everything.row())
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class Batch:
    """Runs photos as jobs on the policy's endpoints; ``run`` writes outputs and returns a BatchReport.

    ``endpoint`` is an endpoint name of the policy or ``"auto"``; ``tier`` (optional) is the tier
    the policy's rules see; ``now`` is the time they see (as ``Router``'s ``now``: a datetime, a
    function returning one, or None for the wall clock at each decision). Client options
    (``retries``, ``poll_interval_s``, ...) pass through to each ``EndpointClient``.
    """

    def __init__(self, policy: Policy, out_dir: str | Path, *, endpoint: str = AUTO, concurrency: int | None = None,
                 tier: str | None = None, now: datetime | Callable[[], datetime] | None = None,
                 env: Mapping[str, str] | None = None,
                 api_key: str | None = None, **client_options: Any):
        if endpoint != AUTO and endpoint not in policy.endpoints:
            raise PolicyError(f"--endpoint {endpoint!r}: the policy has the endpoints {', '.join(ENDPOINTS)}, or use 'auto'")
        if concurrency is not None and concurrency < 1:
            raise PolicyError(f"--concurrency must be at least 1, got {concurrency}")
        self.policy = policy
        self.out_dir = Path(out_dir)
        self.results = self.out_dir / RESULTS
        self.endpoint = endpoint
        self.tier = tier
        self._options = client_options
        self._stop = threading.Event()
        self.router = Router(policy, env=env, api_key=api_key, now=now, sleep=self._pause, **client_options)
        self._key = self.router._key()  # a missing API key is an error before anything is sent
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple[Photo, dict]] = {}  # job id -> (photo, job record)
        self._cancel_on_stop = False                        # Ctrl-C cancels; SIGTERM leaves jobs running
        self._clients: dict[str, EndpointClient] = {}       # url -> client, for jobs of an earlier run
        self._report = BatchReport()

    # ------------------------------------------------------------------ the run

    def run(self, photos: Sequence[Photo], *, progress: bool = True) -> BatchReport:
        """Send, poll and collect every photo not done yet. Ctrl-C cancels the jobs in flight,
        then raises KeyboardInterrupt again."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        last = last_entries(self.results)
        pending, todo = [], []
        for photo in photos:
            entry = last.get(photo.output)
            if entry is not None and is_done(entry):
                self._report.skipped += 1
            elif entry is not None and is_submitted(entry):
                pending.append((photo, entry["job"]))
            else:
                todo.append((photo, None))
        if self._report.skipped:
            log.info("%d of %d images already done in %s: skipping them", self._report.skipped, len(photos), self.results)
        if pending:
            log.info("%d jobs of an earlier run were not collected: polling them again instead of sending them", len(pending))
        work = pending + todo
        if not work:
            return self._report
        limit = self.concurrency or self.default_concurrency()
        log.info("at most %d jobs in flight", limit)
        executor = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="cutout-guard-job")
        bar = _bar(len(work), progress)
        try:
            futures = [executor.submit(self._one, photo, job) for photo, job in work]
            for future in as_completed(futures):
                future.result()
                bar.update(1)
                bar.set_postfix_str(f"in flight {len(self._inflight)}, failed {self._report.failed}, "
                                    f"${self._report.cost_usd:.4f}", refresh=False)
        except KeyboardInterrupt:
            self._report.interrupted = True
            self.interrupt()
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        except Terminated:
            self._report.interrupted = True
            self.stop()
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()
            executor.shutdown(wait=True)
        return self._report

    def interrupt(self) -> None:
        """Stop polling, and cancel every job in flight (recorded so that the next run sends it again)."""
        with self._lock:
            self._cancel_on_stop = True
            self._stop.set()
            claimed, self._inflight = self._inflight, {}
        for job_id, (photo, job) in claimed.items():
            self._cancel(photo, job)

    def stop(self) -> None:
        """Send nothing more and stop polling; jobs in flight keep running (their ids are recorded)."""
        with self._lock:
            self._stop.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def default_concurrency(self) -> int:
        """The workers of the endpoints this run may use: the policy's ``workers``, else ``/health``'s count."""
        names = ENDPOINTS if self.endpoint == AUTO else (self.endpoint,)
        total = 0
        for name in names:
            workers = self.policy.endpoints[name].workers
            if workers is None:
                try:
                    workers = self.router.client(name).worker_count()
                except (EndpointUnreachable, MalformedOutput) as exc:
                    log.warning("worker count of the %s endpoint unknown: %s", name, exc)
                    workers = 0
            total += workers
        if total < 1:
            log.warning("no endpoint reports a worker up (they scale from zero): running one job at a time — "
                        "set --concurrency, or workers = N under [endpoints.*] in the policy")
            total = 1
        return total

    # ------------------------------------------------------------------ one image

    def _one(self, photo: Photo, job: dict | None) -> None:
        start = time.monotonic()
        earlier = job is not None
        try:
            if job is None:
                client, job = self._submit(photo)
            else:
                client = self._client_for(job)
                with self._lock:
                    self._inflight[job["id"]] = (photo, job)
                self._report.resumed += 1
            name = job["endpoint"]
            deadline = client._clock() + self.policy.endpoints[name].timeout_s
            try:
                state = client.wait(job["id"], deadline)
            except EndpointUnreachable as exc:
                if exc.status == 404:
                    raise EndpointUnreachable(
                        f"{name} endpoint: job {job['id']} is no longer known (RunPod keeps a job's result for a "
                        "limited time after it ends) — run the same command again to send the image again",
                        endpoint=name, status=404) from None
                raise
            image = report_image(state.get("output"), endpoint=name, job_id=job["id"], fetch=client.download)
            wall_s = _wall(job, start, earlier)
            entry = self._success(photo, job, state, image.report, wall_s)
            if self._claim(job["id"]):
                png_path = self.out_dir / photo.output
                png_path.parent.mkdir(parents=True, exist_ok=True)
                write_encoded(png_path, image.png, image.report)
                self._record(entry, job, ok=True)
        except Stopped:
            return
        except (RouterError, CutoutGuardError) as exc:
            self._failure(photo, job, str(exc))
        except Exception as exc:  # one bad image must not end an overnight batch
            log.debug("failure on %s", photo.label, exc_info=True)
            self._failure(photo, job, f"{type(exc).__name__}: {exc}")

    def _submit(self, photo: Photo) -> tuple[EndpointClient, dict]:
        try:
            data = photo.source.read_bytes()
        except OSError as exc:
            raise BadInput(f"{photo.label}: cannot read the file ({exc.strerror or exc})") from None
        if self.endpoint == AUTO:
            decision = self.router.decide(Request(tier=self.tier, kind="batch"))
            name, reason = decision.endpoint, decision.reason
        else:
            name, reason = self.endpoint, "--endpoint " + self.endpoint
        try:
            body = self.router.body(name, data)
        except BadInput as exc:
            raise BadInput(f"{photo.label}: {exc}") from None
        client = self.router.client(name)
        if self._stop.is_set():
            raise Stopped()
        job_id = client.run(body)
        job = {"id": job_id, "endpoint": name, "url": client.url, "reason": reason, "submitted_at": round(time.time(), 3)}
        with self._lock:
            stopping, cancel = self._stop.is_set(), self._cancel_on_stop
            if not stopping:
                self._inflight[job_id] = (photo, job)
        append_result(self.results, {"file": photo.label, "output": photo.output, "status": SUBMITTED, "job": job})
        if stopping:  # stopped while /run was on its way: the Ctrl-C sweep missed this job
            if cancel:
                self._cancel(photo, job)
            raise Stopped()
        return client, job

    def _success(self, photo: Photo, job: dict, state: Mapping, report: dict, wall_s: float) -> dict:
        billed, basis = billed_seconds(state, wall_s)
        price = self.policy.endpoints[job["endpoint"]].price_per_second
        return new_entry(
            photo.label, photo.output, caption=report.get("caption"), verdict=verdict_of(report),
            image=report.get("image"), text=report.get("text"), seconds=report.get("seconds"),
            job={**_job_fields(job), "wall_s": round(wall_s, 3), "delay_s": _seconds(state.get("delayTime")),
                 "execution_s": _seconds(state.get("executionTime")), "billed_s": round(billed, 3),
                 "cost_basis": basis, "cost_usd": None if price is None else round(billed * price, 6)},
        )

    def _failure(self, photo: Photo, job: dict | None, error: str) -> None:
        if job is not None and not self._claim(job["id"]):
            return  # the interrupt sweep owns this job now
        log.warning("%s: %s", photo.label, error)
        entry = new_entry(photo.label, photo.output, error=error, job=None if job is None else _job_fields(job))
        self._record(entry, job, ok=False)

    def _record(self, entry: dict, job: dict | None, *, ok: bool) -> None:
        append_result(self.results, entry)
        name = job["endpoint"] if job else "not sent"
        with self._lock:
            totals = self._report.endpoints.setdefault(name, EndpointTotals(name))
            if ok:
                self._report.done += 1
                totals.images += 1
                totals.latencies_s.append(entry["job"]["wall_s"])
                totals.billed_s += entry["job"]["billed_s"]
                if entry["job"]["cost_usd"] is not None:
                    totals.cost_usd = (totals.cost_usd or 0.0) + entry["job"]["cost_usd"]
            else:
                self._report.failed += 1
                totals.failures += 1

    def _claim(self, job_id: str) -> bool:
        """Take the job out of the in-flight set; False when the interrupt sweep took it first."""
        with self._lock:
            return self._inflight.pop(job_id, None) is not None

    def _cancel(self, photo: Photo, job: dict) -> None:
        client = EndpointClient(job["url"], self._key, name=job["endpoint"],
                                **{k: v for k, v in self._options.items() if k != "sleep"})
        try:
            client.cancel(job["id"])
        except RouterError as exc:
            log.warning("could not cancel %s job %s (%s): its id stays in %s, the next run collects it",
                        job["endpoint"], job["id"], exc, self.results)
            return
        log.info("cancelled %s job %s (%s)", job["endpoint"], job["id"], photo.label)
        append_result(self.results, new_entry(photo.label, photo.output, error=CANCELLED, job=_job_fields(job)))

    def _client_for(self, job: dict) -> EndpointClient:
        name = job.get("endpoint")
        if name not in self.policy.endpoints or not isinstance(job.get("url"), str):
            raise MalformedOutput(f"results.jsonl names a job {job.get('id')!r} on an unknown endpoint {name!r}")
        try:
            current = self.router.client(name)
            if current.url == job["url"]:
                return current
        except PolicyError:
            pass  # the policy no longer names this endpoint's id: poll it where it was sent
        if job["url"] not in self._clients:
            self._clients[job["url"]] = EndpointClient(job["url"], self._key, name=name, sleep=self._pause, **self._options)
        return self._clients[job["url"]]

    def _pause(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped()


def _job_fields(job: dict) -> dict:
    return {k: job[k] for k in ("id", "endpoint", "url", "reason") if k in job}


def _wall(job: dict, start: float, earlier: bool) -> float:
    """Submit → collected; for a job of an earlier run, from the submission time it recorded."""
    submitted = job.get("submitted_at")
    if earlier and isinstance(submitted, (int, float)) and 0 <= time.time() - submitted:
        return time.time() - submitted
    return time.monotonic() - start


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="cutout-guard", dynamic_ncols=True, disable=not enabled)


# ----------------------------------------------------------------------------- command line


def run_remote(args, photos: Sequence[Photo]) -> int:
    """``cutout-guard run ... --endpoint NAME|auto``: the exit status (0 all done, 1 some failed,
    2 could not start; Ctrl-C raises KeyboardInterrupt after cancelling the jobs in flight)."""
    from .policy import load_policy, parse_time

    try:
        policy = load_policy(args.routing_policy)
        batch = Batch(policy, args.out, endpoint=args.endpoint, concurrency=args.concurrency, tier=args.tier,
                      now=parse_time(args.at) if args.at else None)
    except RouterError as exc:
        log.error("%s", exc)
        return EXIT_USAGE

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        report = batch.run(photos)
    except Terminated:
        log.error("stopped by SIGTERM: %d jobs in flight keep running — run the same command again to collect "
                  "them (their ids are in %s)", batch.in_flight, batch.results)
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{report.done} done, {report.failed} failed, {report.skipped} skipped (done before), "
          f"{report.resumed} collected from an earlier run — reports in {args.out}, one line per image in "
          f"{batch.results}")
    if report.endpoints:
        print(report.table())
    return EXIT_FAILED if report.failed else EXIT_OK
