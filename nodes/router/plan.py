"""``cutout-guard plan``: what a day of traffic costs on CPU and GPU endpoints, and how long it waits.

Given a volume profile (images per hour for each hour of the day, or one constant rate), the
seconds one image takes on each endpoint (from ``cutout-guard bench --json`` or given), each
endpoint's price per second, worker limit, cold start and idle timeout, and a routing policy, it
simulates the day three times — every image on the CPU endpoint, every image on the GPU
endpoint, and each image where the policy sends it — and prints cost per image, cost per day
and latency percentiles, and the volume above which the CPU alone no longer keeps up.

The model (deterministic for a seed):

- Arrivals: a Poisson process whose rate is constant within each hour (``--arrivals even``:
  evenly spaced instead), hour 0 being midnight in the policy's time zone on ``--date``.
- An endpoint has at most ``workers`` workers. A job goes to the worker that can start it first:
  an idle warm worker, else a new worker (ready after its cold start) while under the limit,
  else the first worker to finish. Jobs wait in order of arrival. A worker that has been idle
  for ``idle_timeout_s`` stops. Per image the time is fixed (the benchmark's median).
- Billing: a worker is billed from the moment it starts (cold start included) until it stops,
  idle time included — as RunPod bills serverless workers.
- The policy sees each image as a request of ``--kind`` (default ``batch``) at its arrival time,
  with the endpoints' queue lengths (jobs arrived and not started, like ``/health``'s ``inQueue``).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import math
import random
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time as clock_time, timedelta
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import PolicyError
from .policy import ENDPOINTS, REQUEST_KINDS, Policy, Request, _zone, first_match, load_policy, overflow
from .stats import percentile

log = logging.getLogger(__name__)

HOURS = 24
DAY_S = HOURS * 3600.0
DEFAULT_WORKERS = 3          # RunPod's default max workers for an endpoint
DEFAULT_IDLE_TIMEOUT_S = 5.0  # RunPod's default idle timeout
DEFAULT_DATE = date(2026, 1, 7)  # a Wednesday: the same day every run unless --date says otherwise
ARRIVALS = ("poisson", "even")


@dataclass(frozen=True)
class EndpointModel:
    """What the simulation needs to know of one endpoint."""

    name: str
    seconds: float               # per image, once a worker is warm
    cold_start_s: float          # from a worker's start to its first job (container + model load)
    price_per_second: float      # USD per second a worker is billed
    workers: int = DEFAULT_WORKERS
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S


@dataclass
class Outcome:
    """One simulated day of one routing."""

    routing: str
    latencies_s: list[float] = field(default_factory=list)    # arrival → done, per image
    billed_s: dict[str, float] = field(default_factory=dict)  # per endpoint
    cost_usd: float = 0.0
    images: dict[str, int] = field(default_factory=dict)      # per endpoint
    cold_starts: int = 0
    max_queue: dict[str, int] = field(default_factory=dict)

    @property
    def total_images(self) -> int:
        return len(self.latencies_s)

    @property
    def cost_per_image(self) -> float | None:
        return self.cost_usd / self.total_images if self.total_images else None

    def summary(self) -> dict:
        n = self.total_images
        return {
            "routing": self.routing,
            "images": n,
            "images_per_endpoint": dict(self.images),
            "cost_per_image_usd": self.cost_per_image,
            "cost_per_day_usd": self.cost_usd,
            "latency_s": {f"p{q}": percentile(self.latencies_s, q) for q in (50, 95, 99)},
            "share_on_gpu": (self.images.get("gpu", 0) / n) if n else None,
            "billed_s": dict(self.billed_s),
            "cold_starts": self.cold_starts,
            "max_queue": dict(self.max_queue),
        }


# ----------------------------------------------------------------------------- the simulation


def arrival_times(profile: Sequence[float], *, seed: int = 0, kind: str = "poisson") -> list[float]:
    """Arrival times in seconds since midnight for ``profile`` (images per hour, one per hour).

    ``poisson``: exponential gaps at each hour's rate (memoryless, so restarting at each hour
    boundary is exact); ``even``: the k-th image (k = 0, 1, ...) when k images are expected, so
    4 an hour arrive at 0, 15, 30, 45 minutes and 0.5 an hour every other hour. Deterministic
    for a given ``seed``.
    """
    if len(profile) != HOURS:
        raise PolicyError(f"a volume profile has {HOURS} hourly rates, got {len(profile)}")
    if kind not in ARRIVALS:
        raise PolicyError(f"arrivals must be one of {list(ARRIVALS)}, got {kind!r}")
    rng = random.Random(seed)
    times: list[float] = []
    expected = 0.0  # images expected before this hour
    count = 0       # images placed so far (even arrivals)
    for hour, rate in enumerate(profile):
        if rate < 0:
            raise PolicyError(f"hour {hour}: a rate of {rate} images per hour is negative")
        if rate == 0:
            continue
        start, end = hour * 3600.0, (hour + 1) * 3600.0
        if kind == "even":  # the k-th image when k images are expected, so slow rates span hours
            while count < expected + rate:
                times.append(start + (count - expected) / rate * 3600.0)
                count += 1
            expected += rate
            continue
        t = start + rng.expovariate(rate / 3600.0)
        while t < end:
            times.append(t)
            t += rng.expovariate(rate / 3600.0)
    return times


@dataclass
class _Worker:
    index: int
    started: float               # billing starts
    free_at: float               # when its last job ends


class Pool:
    """The workers of one endpoint during the simulation."""

    def __init__(self, model: EndpointModel):
        self.model = model
        self.workers: list[_Worker] = []
        self.billed_s = 0.0
        self.cold_starts = 0
        self.spawned = 0
        self._starts: list[float] = []  # start times of jobs not started yet (a heap)
        self.max_queue = 0

    def queue_length(self, t: float) -> int:
        """Jobs that arrived by ``t`` and have not started (waiting for a worker or its cold start)."""
        while self._starts and self._starts[0] <= t:
            heapq.heappop(self._starts)
        return len(self._starts)

    def assign(self, t: float) -> float:
        """Take a job arriving at ``t``; the time it ends."""
        m = self.model
        for worker in [w for w in self.workers if w.free_at + m.idle_timeout_s < t]:  # idle too long: stopped
            self.billed_s += worker.free_at + m.idle_timeout_s - worker.started
            self.workers.remove(worker)
        idle = [w for w in self.workers if w.free_at <= t]
        first_free = min((w.free_at for w in self.workers), default=math.inf)
        if idle:
            worker = min(idle, key=lambda w: (w.free_at, w.index))
            start = t
        elif len(self.workers) < m.workers and first_free > t + m.cold_start_s:
            worker = _Worker(self.spawned, started=t, free_at=t)
            self.spawned += 1
            self.cold_starts += 1
            self.workers.append(worker)
            start = t + m.cold_start_s
        else:
            worker = min(self.workers, key=lambda w: (w.free_at, w.index))
            start = worker.free_at
        worker.free_at = start + m.seconds
        if start > t:
            heapq.heappush(self._starts, start)
        self.max_queue = max(self.max_queue, self.queue_length(t))
        return worker.free_at

    def close(self) -> float:
        """Stop every worker after its idle timeout; the seconds billed in all."""
        for worker in self.workers:
            self.billed_s += worker.free_at + self.model.idle_timeout_s - worker.started
        self.workers = []
        return self.billed_s


Route = Callable[[float, Mapping[str, int]], str]  # (arrival time, queue lengths) -> endpoint name


def simulate(arrivals: Sequence[float], models: Mapping[str, EndpointModel], route: Route, *, routing: str) -> Outcome:
    """One day: every arrival goes where ``route`` says; cost, latencies and counts come back."""
    pools = {name: Pool(model) for name, model in models.items()}
    outcome = Outcome(routing)
    for t in sorted(arrivals):
        queues = {name: pool.queue_length(t) for name, pool in pools.items()}
        name = route(t, queues)
        end = pools[name].assign(t)
        outcome.latencies_s.append(end - t)
        outcome.images[name] = outcome.images.get(name, 0) + 1
    for name, pool in pools.items():
        billed = pool.close()
        if billed or pool.spawned:
            outcome.billed_s[name] = billed
            outcome.cost_usd += billed * models[name].price_per_second
            outcome.max_queue[name] = pool.max_queue
        outcome.cold_starts += pool.cold_starts
    return outcome


def always(name: str) -> Route:
    return lambda t, queues: name


def policy_route(policy: Policy, request: Request, day: date) -> Route:
    """The policy's rules and overflow at each arrival's local time on ``day``."""
    midnight = datetime.combine(day, clock_time(0), tzinfo=_zone(policy.timezone))

    def route(t: float, queues: Mapping[str, int]) -> str:
        now = midnight + timedelta(seconds=t)
        return overflow(policy, first_match(policy, request, now), queues).endpoint

    return route


def switch_rate(models: Mapping[str, EndpointModel], *, target_s: float, seed: int = 0, kind: str = "poisson",
                steps: int = 40) -> float | None:
    """The lowest constant rate (images per hour) at which the CPU endpoint alone misses a p95
    latency of ``target_s``: above it the policy should send work to the GPU. None when even one
    image an hour misses it (the CPU is too slow for the target at any volume)."""
    cpu = {"cpu": models["cpu"]}

    def misses(rate: float) -> bool:
        outcome = simulate(arrival_times([rate] * HOURS, seed=seed, kind=kind), cpu, always("cpu"), routing="cpu")
        return (percentile(outcome.latencies_s, 95) or 0.0) > target_s

    low, high = 1.0, 2.0 * capacity(models["cpu"])
    if misses(low):
        return None
    while not misses(high):  # cannot happen past capacity for long, but stay bounded
        high *= 2
        if high > 1e7:
            return None
    for _ in range(steps):  # bisection, to well under one image per hour
        mid = (low + high) / 2
        if high - low < 0.5:
            break
        low, high = (low, mid) if misses(mid) else (mid, high)
    return high


def capacity(model: EndpointModel) -> float:
    """Images per hour the endpoint finishes with every worker busy."""
    return model.workers * 3600.0 / model.seconds


def suggested_max_queue(model: EndpointModel, target_s: float) -> int:
    """The queue length at which a new job's wait on ``model`` reaches ``target_s`` with every worker busy."""
    return max(0, math.floor((target_s - model.seconds) * model.workers / model.seconds))


# ----------------------------------------------------------------------------- inputs


def bench_times(path: Path) -> dict[str, dict[str, float]]:
    """Per device (``cpu``, ``gpu``): ``seconds`` (median total per image) and ``cold_start_s``
    (cold load) from a ``cutout-guard bench --json`` document."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        results = doc["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{path}: not a `cutout-guard bench --json` document ({exc})") from None
    times = {}
    for device, name in (("cpu", "cpu"), ("cuda", "gpu")):
        if device in results:
            try:
                times[name] = {"seconds": float(results[device]["stages"]["total"]["median_s"]),
                               "cold_start_s": float(results[device]["cold_load_s"])}
            except (KeyError, TypeError, ValueError) as exc:
                raise PolicyError(f"{path}: results.{device} lacks stages.total.median_s / cold_load_s ({exc})") from None
    return times


def parse_profile(text: str) -> list[float]:
    """``"100"`` (every hour) or 24 comma-separated hourly rates, or a JSON list in a file (``@FILE``)."""
    if text.startswith("@"):
        try:
            values = json.loads(Path(text[1:]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PolicyError(f"--profile {text}: cannot read a JSON list of {HOURS} hourly rates ({exc})") from None
    else:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise PolicyError(f"--profile {text!r}: give one rate or {HOURS} comma-separated rates (images per hour)") from None
    if len(values) == 1:
        values = values * HOURS
    if len(values) != HOURS or not all(isinstance(v, (int, float)) and v >= 0 for v in values):
        raise PolicyError(f"--profile: expected 1 or {HOURS} rates ≥ 0 (images per hour), got {len(values)}")
    return [float(v) for v in values]


def _pairs(items: Sequence[str], flag: str, cast) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in ENDPOINTS:
            raise PolicyError(f"{flag} {item!r}: expected cpu=VALUE or gpu=VALUE")
        try:
            out[name] = cast(value)
        except ValueError:
            raise PolicyError(f"{flag} {item!r}: {value!r} is not a number") from None
    return out


def endpoint_models(policy: Policy, args: argparse.Namespace) -> dict[str, EndpointModel]:
    """Both endpoints' models from the bench file, the policy and the flags (flags win)."""
    measured = bench_times(Path(args.bench)) if args.bench else {}
    seconds = _pairs(args.seconds, "--seconds", float)
    cold = _pairs(args.cold_start, "--cold-start", float)
    prices = _pairs(args.price, "--price", float)
    workers = _pairs(args.workers, "--workers", int)
    models = {}
    for name in ENDPOINTS:
        endpoint = policy.endpoints[name]
        per_image = seconds.get(name, measured.get(name, {}).get("seconds"))
        if per_image is None or per_image <= 0:
            raise PolicyError(f"no seconds per image for the {name} endpoint — pass --bench FILE "
                              f"(`cutout-guard bench --json`) or --seconds {name}=S")
        price = prices.get(name, endpoint.price_per_second)
        if price is None:
            raise PolicyError(f"no price for the {name} endpoint — set price_per_second under [endpoints.{name}] "
                              f"in the policy or pass --price {name}=USD_PER_SECOND")
        limit = int(workers.get(name, endpoint.workers or DEFAULT_WORKERS))
        if limit < 1:
            raise PolicyError(f"--workers {name}={limit}: an endpoint needs at least one worker")
        models[name] = EndpointModel(
            name=name, seconds=per_image,
            cold_start_s=cold.get(name, measured.get(name, {}).get("cold_start_s", 0.0)),
            price_per_second=price, workers=limit, idle_timeout_s=args.idle_timeout)
    return models


# ----------------------------------------------------------------------------- the plan


def make_plan(policy: Policy, models: Mapping[str, EndpointModel], profile: Sequence[float], *, seed: int = 0,
              arrivals: str = "poisson", request: Request = Request(None, kind="batch"), day: date = DEFAULT_DATE,
              target_s: float = 600.0) -> dict:
    """The three simulated days and the switch volume, as a JSON-ready document."""
    times = arrival_times(profile, seed=seed, kind=arrivals)
    runs = [
        simulate(times, models, always("cpu"), routing="CPU only"),
        simulate(times, models, always("gpu"), routing="GPU only"),
        simulate(times, models, policy_route(policy, request, day), routing="policy"),
    ]
    rate = switch_rate(models, target_s=target_s, seed=seed, kind=arrivals)
    return {
        "inputs": {
            "profile_images_per_hour": list(profile), "images": len(times), "seed": seed, "arrivals": arrivals,
            "date": day.isoformat(), "timezone": policy.timezone, "request": {"kind": request.kind, "tier": request.tier},
            "policy": policy.source, "latency_target_s": target_s,
            "endpoints": {name: dataclasses.asdict(m) for name, m in models.items()},
        },
        "runs": [r.summary() for r in runs],
        "switch": {
            "cpu_capacity_per_hour": capacity(models["cpu"]),
            "rate_per_hour": rate,
            "suggested_cpu_max_queue": suggested_max_queue(models["cpu"], target_s),
        },
    }


def format_plan(doc: dict) -> str:
    inputs, m = doc["inputs"], doc["inputs"]["endpoints"]
    profile = inputs["profile_images_per_hour"]
    volume = f"constant {profile[0]:g}/hour" if len(set(profile)) == 1 else f"{sum(profile):g}/day over a profile"
    lines = [
        f"{inputs['images']} images in a day ({volume}, {inputs['arrivals']} arrivals, seed {inputs['seed']}); "
        f"policy: {inputs['policy']} ({inputs['request']['kind']} requests, {inputs['date']} {inputs['timezone']})",
    ]
    for name in ENDPOINTS:
        e = m[name]
        lines.append(f"  {name}: {e['seconds']:.2f} s per image, cold start {e['cold_start_s']:.1f} s, "
                     f"${e['price_per_second']:.7f}/s, {e['workers']} workers, idle timeout {e['idle_timeout_s']:g} s")
    header = ["routing", "images", "on GPU", "$ per image", "$ per day", "p50 s", "p95 s", "p99 s", "cold starts", "billed s"]
    rows = []
    for run in doc["runs"]:
        lat = run["latency_s"]
        rows.append([
            run["routing"], str(run["images"]),
            "-" if run["share_on_gpu"] is None else f"{100 * run['share_on_gpu']:.0f} %",
            "-" if run["cost_per_image_usd"] is None else f"{run['cost_per_image_usd']:.6f}",
            f"{run['cost_per_day_usd']:.4f}",
            *("-" if lat[k] is None else f"{lat[k]:.1f}" for k in ("p50", "p95", "p99")),
            str(run["cold_starts"]), f"{sum(run['billed_s'].values()):.0f}",
        ])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    lines += ["", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows), ""]
    cpu, gpu = doc["runs"][0], doc["runs"][1]
    if cpu["cost_per_image_usd"] and gpu["cost_per_image_usd"] and cpu["latency_s"]["p50"] and gpu["latency_s"]["p50"]:
        lines.append(f"CPU vs GPU at this volume: the GPU costs {gpu['cost_per_image_usd'] / cpu['cost_per_image_usd']:.1f}× "
                     f"the CPU per image; the CPU takes {cpu['latency_s']['p50'] / gpu['latency_s']['p50']:.1f}× "
                     "as long (p50 latency).")
    switch = doc["switch"]
    target = inputs["latency_target_s"]
    if switch["rate_per_hour"] is None:
        lines.append(f"Switch: the CPU endpoint alone misses p95 ≤ {target:g} s at any volume: send such work to the GPU.")
    else:
        lines.append(
            f"Switch: the CPU endpoint alone keeps p95 ≤ {target:g} s up to about {switch['rate_per_hour']:.0f} images/hour "
            f"(its capacity: {switch['cpu_capacity_per_hour']:.0f}/hour); above that, overflow to the GPU — "
            f"a CPU max_queue of {switch['suggested_cpu_max_queue']} keeps a queued image's wait under {target:g} s.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cutout-guard plan",
        description="Simulate a day of traffic on the CPU and GPU endpoints: cost per image, cost per day and latency "
                    "percentiles for CPU only, GPU only and the routing policy, and the volume at which to switch.")
    parser.add_argument("--profile", default="100", metavar="RATE|R0,...,R23|@FILE",
                        help="images per hour: one constant rate, 24 hourly rates (hour 0 = midnight in the policy's "
                             "time zone), or @FILE with a JSON list of 24 (default: %(default)s)")
    parser.add_argument("--bench", metavar="FILE", help="per-image seconds and cold starts from `cutout-guard bench --json` "
                                                        "(cpu; cuda → the gpu endpoint)")
    parser.add_argument("--seconds", action="append", default=[], metavar="cpu=S|gpu=S", help="seconds per image (overrides --bench)")
    parser.add_argument("--cold-start", action="append", default=[], metavar="cpu=S|gpu=S",
                        help="seconds from a worker's start to its first job (default: the bench's cold load, else 0)")
    parser.add_argument("--price", action="append", default=[], metavar="cpu=USD|gpu=USD",
                        help="USD per second a worker is billed (default: the policy's price_per_second)")
    parser.add_argument("--workers", action="append", default=[], metavar="cpu=N|gpu=N",
                        help=f"max workers (default: the policy's workers, else {DEFAULT_WORKERS}, RunPod's default)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, metavar="S",
                        help="seconds an idle worker stays up, billed (default: %(default)s, RunPod's default)")
    parser.add_argument("--policy", type=Path, help="routing policy TOML (default: the built-in policy)")
    parser.add_argument("--kind", choices=REQUEST_KINDS, default="batch", help="the request kind the policy sees (default: %(default)s)")
    parser.add_argument("--tier", help="the tier the policy sees (default: none)")
    parser.add_argument("--urgent", action="store_true", help="requests are urgent")
    parser.add_argument("--latency-target", type=float, default=600.0, metavar="S",
                        help="p95 latency the switch volume is computed for (default: %(default)s)")
    parser.add_argument("--arrivals", choices=ARRIVALS, default="poisson", help="random (Poisson) or evenly spaced arrivals")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the arrivals (default: %(default)s)")
    parser.add_argument("--date", type=date.fromisoformat, default=DEFAULT_DATE, metavar="YYYY-MM-DD",
                        help="the day simulated, for the policy's off-peak windows (default: %(default)s, a Wednesday)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def plan_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        policy = load_policy(args.policy)
        models = endpoint_models(policy, args)
        request = Request(tier=args.tier, urgent=args.urgent, kind=args.kind)
        doc = make_plan(policy, models, parse_profile(args.profile), seed=args.seed, arrivals=args.arrivals,
                        request=request, day=args.date, target_s=args.latency_target)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2) if args.json else format_plan(doc))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(plan_main())
