"""The routing policy: which endpoint (``cpu`` or ``gpu``) serves a request, and why.

A policy is a TOML file (format below, and in the README). Evaluating it is pure: the request,
the time and the queue lengths go in, a ``Decision`` (endpoint + reason) comes out; the client
does the network calls. Order of evaluation:

1. ``rules`` in file order; the first whose ``when`` conditions all hold picks the endpoint
   (conditions: ``urgent``, ``tier`` (a name or a list), ``off_peak``, ``kind`` (``interactive``,
   one image sent by ``submit``, or ``batch``, an image of ``run --endpoint``)); no match → ``default``.
2. Overflow: if the chosen endpoint has ``max_queue`` (the matching rule's own ``max_queue``
   when it sets one) and its ``/health`` ``jobs.inQueue`` is over it, and the other endpoint's
   queue is within its own limit (or it has none), use the other.

The time a decision is made at is an input like the request: ``now`` (``utc_now()``, the wall
clock, only where a caller leaves it out; ``parse_time`` reads the ``--at`` form).

Endpoint ids and the API key come from the environment (``id_env``, ``api_key_env``). What a
file leaves out comes from ``DEFAULT_POLICY``; an ``[endpoints.*]`` table the file writes replaces
the built-in one (its optional keys ``max_queue``, ``price_per_second``, ``id``, ``url``,
``image_node``, ``workers`` are off unless set), and ``rules`` the file writes replace the built-in rules.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from .errors import PolicyError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

ENDPOINTS = ("cpu", "gpu")
DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
WAIT_MODES = ("run", "runsync")
FALLBACK_CAUSES = ("unreachable", "failed", "timeout")
REQUEST_KINDS = ("interactive", "batch")  # one image from `submit`; an image of a `run --endpoint` batch
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The built-in policy's folder: the router package, which ships its workflows as package data
# (workflows_cpu/, workflows_gpu/ here; written by ``python -m cutout_guard.workflows``).
BUILTIN_DIR = Path(__file__).resolve().parent

DEFAULT_POLICY = """\
# Cutout Guard routing policy (the built-in default).
base_url = "https://api.runpod.ai/v2"   # RunPod's serverless API
api_key_env = "RUNPOD_API_KEY"          # environment variable holding the API key
default = "cpu"                         # endpoint when no rule matches
wait = "run"                            # "run" (+ /status polling) or "runsync"

[endpoints.cpu]
id_env = "CUTOUT_GUARD_CPU_ENDPOINT_ID"
workflow = "workflows_cpu/cutout_caption_safety.api.json"
timeout_s = 600
# max_queue = 20                        # set to overflow CPU → GPU when the CPU queue is long
# price_per_second = 0.0                # USD per second of execution, for the cost estimate
# workers = 3                           # the endpoint's max workers: batch concurrency and `plan`

[endpoints.gpu]
id_env = "CUTOUT_GUARD_GPU_ENDPOINT_ID"
workflow = "workflows_gpu/cutout_caption_safety.api.json"
timeout_s = 300
max_queue = 10                          # over 10 queued jobs → overflow to CPU
# price_per_second = 0.0

[off_peak]
timezone = "UTC"
windows = ["22:00-07:00"]

[fallback]
gpu = "cpu"                             # a failed GPU call is retried once on CPU
on = ["unreachable", "failed", "timeout"]

[[rules]]
name = "batch"                          # images of `cutout-guard run --endpoint auto`
when = { kind = "batch" }
use = "cpu"
max_queue = 20                          # over 20 queued CPU jobs → overflow to GPU

[[rules]]
name = "urgent"
when = { urgent = true }
use = "gpu"

[[rules]]
name = "paid"
when = { tier = "paid" }
use = "gpu"

[[rules]]
name = "off-peak"
when = { off_peak = true }
use = "cpu"

[[rules]]
name = "free"
when = { tier = "free" }
use = "cpu"
"""


@dataclass(frozen=True)
class Endpoint:
    """One RunPod serverless endpoint as the policy describes it."""

    name: str                           # "cpu" or "gpu"
    workflow: Path                      # API-format workflow sent to this endpoint
    id_env: str                         # environment variable holding the endpoint id
    id: str | None = None               # literal endpoint id (overrides id_env)
    url: str | None = None              # full endpoint URL (default: base_url/<id>)
    image_node: str | None = None       # LoadImage node id (default: the only LoadImage node)
    timeout_s: float = 600.0            # deadline for one job, seconds
    max_queue: int | None = None        # overflow away when jobs.inQueue exceeds this
    price_per_second: float | None = None  # USD per second of execution
    workers: int | None = None          # the endpoint's max workers (batch concurrency, `plan`)

    def endpoint_id(self, env: Mapping[str, str] | None = None) -> str:
        env = os.environ if env is None else env
        value = self.id or env.get(self.id_env, "").strip()
        if not value:
            raise PolicyError(
                f"no RunPod endpoint id for the {self.name} endpoint — set {self.id_env} "
                f"(or 'id' under [endpoints.{self.name}] in the policy file)"
            )
        return value


@dataclass(frozen=True)
class Window:
    """A daily time window in minutes since midnight; ``end`` ≤ ``start`` wraps past midnight."""

    start: int
    end: int
    days: frozenset[int] | None = None  # 0 = Monday; for a wrapping window, the day it starts

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        on = (lambda d: True) if self.days is None else (lambda d: d in self.days)  # noqa: E731
        if self.start < self.end:
            return self.start <= minute < self.end and on(day)
        return (minute >= self.start and on(day)) or (minute < self.end and on((day - 1) % 7))

    def __str__(self) -> str:
        text = f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        if self.days is not None:
            text += " " + ",".join(DAYS[d] for d in sorted(self.days))
        return text


@dataclass(frozen=True)
class Rule:
    name: str
    use: str
    urgent: bool | None = None
    tiers: frozenset[str] | None = None
    off_peak: bool | None = None
    kind: str | None = None
    max_queue: int | None = None        # overflow limit for what this rule picks (else the endpoint's)

    def matches(self, request: "Request", off_peak_now: bool) -> bool:
        return (
            (self.urgent is None or request.urgent == self.urgent)
            and (self.tiers is None or request.tier in self.tiers)
            and (self.off_peak is None or off_peak_now == self.off_peak)
            and (self.kind is None or request.kind == self.kind)
        )

    def describe(self) -> str:
        parts = []
        if self.urgent is not None:
            parts.append("urgent" if self.urgent else "not urgent")
        if self.tiers is not None:
            parts.append("tier " + " or ".join(repr(t) for t in sorted(self.tiers)))
        if self.off_peak is not None:
            parts.append("off-peak" if self.off_peak else "peak hours")
        if self.kind is not None:
            parts.append(f"{self.kind} request")
        return " and ".join(parts) or "always"


@dataclass(frozen=True)
class Policy:
    endpoints: Mapping[str, Endpoint]
    rules: tuple[Rule, ...]
    default: str = "cpu"
    windows: tuple[Window, ...] = ()
    timezone: str = "UTC"
    fallback: Mapping[str, str] = field(default_factory=dict)
    fallback_on: frozenset[str] = frozenset(FALLBACK_CAUSES)
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "RUNPOD_API_KEY"
    wait: str = "run"
    source: str = "built-in default"
    extra_tiers: frozenset[str] = frozenset()  # the file's ``tiers`` list

    @property
    def tiers(self) -> frozenset[str]:
        """The tiers requests may name: the ``tiers`` list plus every tier a rule names (another
        tier is refused as a likely typo; with neither, any tier goes)."""
        return self.extra_tiers | frozenset(t for rule in self.rules if rule.tiers for t in rule.tiers)

    def other(self, name: str) -> str:
        return "cpu" if name == "gpu" else "gpu"


@dataclass(frozen=True)
class Request:
    tier: str | None                    # None: no tier (a batch run given none); tier rules never match
    urgent: bool = False
    kind: str = "interactive"           # one of REQUEST_KINDS


@dataclass(frozen=True)
class Decision:
    endpoint: str                 # "cpu" or "gpu"
    reason: str                   # the last step, in words
    rule: str | None = None       # name of the rule that matched, None for the default
    steps: tuple[str, ...] = ()   # every step taken, in order
    at: datetime | None = None    # the time the rules were evaluated at (UTC)
    max_queue: int | None = None  # the rule's own overflow limit, when it sets one

    def then(self, endpoint: str, reason: str) -> "Decision":
        return replace(self, endpoint=endpoint, reason=reason, steps=self.steps + (reason,))


# --------------------------------------------------------------------------- evaluation


def utc_now() -> datetime:
    """The wall clock in UTC: the decision time when a caller gives none."""
    return datetime.now(timezone.utc)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-25T23:30``, ``…+01:00``, ``…Z``) as an aware datetime; one
    without an offset is UTC, as everywhere in the policy."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PolicyError(f"time {text!r} is not ISO 8601 — write e.g. 2026-11-25T23:30 (UTC) "
                          "or 2026-11-25T23:30+01:00") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def as_utc(now: datetime) -> datetime:
    """``now`` as an aware UTC time (a naive ``now`` is taken as UTC, never as the host's zone)."""
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


def local_time(policy: Policy, now: datetime) -> datetime:
    """``now`` in the policy's time zone (a naive ``now`` is taken as UTC)."""
    return as_utc(now).astimezone(_zone(policy.timezone))


def is_off_peak(policy: Policy, now: datetime) -> bool:
    local = local_time(policy, now)
    return any(window.contains(local) for window in policy.windows)


def first_match(policy: Policy, request: Request, now: datetime) -> Decision:
    """Step 1: the first rule that matches, else the default endpoint."""
    check_request(policy, request)
    at = as_utc(now)
    off_peak_now = is_off_peak(policy, at)
    for rule in policy.rules:
        if rule.matches(request, off_peak_now):
            reason = f"rule '{rule.name}' ({rule.describe()}) → {rule.use}"
            return Decision(rule.use, reason, rule.name, (reason,), at, rule.max_queue)
    reason = f"no rule matched → default {policy.default}"
    return Decision(policy.default, reason, None, (reason,), at)


def queue_limit(policy: Policy, decision: Decision) -> int | None:
    """The chosen endpoint's overflow limit: the rule's ``max_queue``, else the endpoint's."""
    if decision.max_queue is not None:
        return decision.max_queue
    return policy.endpoints[decision.endpoint].max_queue


def queues_needed(policy: Policy, decision: Decision) -> tuple[str, ...]:
    """The endpoints whose queue length ``overflow`` needs (none when no limit applies)."""
    chosen = policy.endpoints[decision.endpoint]
    if queue_limit(policy, decision) is None:
        return ()
    other = policy.endpoints[policy.other(chosen.name)]
    return (chosen.name,) if other.max_queue is None else (chosen.name, other.name)


def overflow(policy: Policy, decision: Decision, queues: Mapping[str, int | None]) -> Decision:
    """Step 2: move to the other endpoint when the chosen one's queue is over its limit.

    ``queues`` maps endpoint names to ``jobs.inQueue``; ``None`` (unknown) never overflows.
    """
    chosen = policy.endpoints[decision.endpoint]
    limit = queue_limit(policy, decision)
    if limit is None:
        return decision
    length = queues.get(chosen.name)
    if length is None:
        return replace(decision, steps=decision.steps + (f"{chosen.name} queue length unknown: no overflow",))
    if length <= limit:
        return decision
    other = policy.endpoints[policy.other(chosen.name)]
    other_length = queues.get(other.name)
    if other.max_queue is not None:
        if other_length is None:
            return replace(decision, steps=decision.steps + (
                f"{chosen.name} queue {length} > {limit} but {other.name} queue length unknown: no overflow",))
        if other_length > other.max_queue:
            return replace(decision, steps=decision.steps + (
                f"{chosen.name} queue {length} > {limit} but {other.name} queue "
                f"{other_length} > {other.max_queue} too: no overflow",))
        within = f"{other.name} queue {other_length} ≤ {other.max_queue}"
    else:
        within = f"{other.name} has no queue limit"
    return decision.then(other.name, f"overflow: {chosen.name} queue {length} > {limit}, {within} → {other.name}")


def route(policy: Policy, request: Request, *, now: datetime, queues: Mapping[str, int | None]) -> Decision:
    """Both steps at once (``queues`` as for ``overflow``)."""
    return overflow(policy, first_match(policy, request, now), queues)


def fallback_for(policy: Policy, endpoint: str, cause: str) -> str | None:
    """The endpoint to retry on after ``cause`` (one of FALLBACK_CAUSES), or None."""
    if cause not in policy.fallback_on:
        return None
    return policy.fallback.get(endpoint)


def check_request(policy: Policy, request: Request) -> None:
    if request.kind not in REQUEST_KINDS:
        raise PolicyError(f"unknown request kind {request.kind!r}: use one of {list(REQUEST_KINDS)}")
    known = policy.tiers
    if known and request.tier is not None and request.tier not in known:
        raise PolicyError(
            f"unknown tier {request.tier!r}: the policy ({policy.source}) knows "
            + ", ".join(repr(t) for t in sorted(known))
        )


# --------------------------------------------------------------------------- loading


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in ``path`` (TOML), or the built-in default when ``path`` is None.

    Relative workflow paths resolve against the policy file's folder; those of the built-in
    default against ``BUILTIN_DIR`` (the package), so an installed package needs no checkout.
    """
    if path is None:
        return parse_policy(DEFAULT_POLICY, base_dir=BUILTIN_DIR, source="built-in default")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file {path}: {exc.strerror or exc}") from None
    return parse_policy(text, base_dir=path.resolve().parent, source=str(path))


def parse_policy(text: str, *, base_dir: str | Path = ".", source: str = "policy") -> Policy:
    """A routing policy from TOML text; a table or key left out takes the built-in default's.

    Relative workflow paths resolve against ``base_dir``."""
    data = _toml(text, source)
    defaults = tomllib.loads(DEFAULT_POLICY)
    where = _Where(source)
    where.keys(data, "top level", {"base_url", "api_key_env", "default", "wait", "tiers", "endpoints",
                                   "off_peak", "fallback", "rules"})
    zone, windows = _off_peak(where, data.get("off_peak", defaults["off_peak"]))
    fallback, causes = _fallback(where, data.get("fallback", defaults["fallback"]))
    rules_data = data["rules"] if "rules" in data else defaults["rules"]
    return Policy(
        endpoints=_endpoints(where, data.get("endpoints", {}), defaults["endpoints"], Path(base_dir)),
        rules=tuple(_rule(where, i, r) for i, r in enumerate(where.list(rules_data, "rules"), 1)),
        default=where.choice(data.get("default", defaults["default"]), "default", ENDPOINTS),
        windows=windows,
        timezone=zone,
        fallback=fallback,
        fallback_on=causes,
        base_url=where.string(data.get("base_url", defaults["base_url"]), "base_url").rstrip("/"),
        api_key_env=where.string(data.get("api_key_env", defaults["api_key_env"]), "api_key_env"),
        wait=where.choice(data.get("wait", defaults["wait"]), "wait", WAIT_MODES),
        source=source,
        extra_tiers=frozenset(where.string(t, "tiers") for t in where.list(data.get("tiers", []), "tiers")),
    )


def _toml(text: str, source: str) -> dict:
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise PolicyError("reading a policy file on Python 3.10 needs the 'tomli' package — pip install tomli")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None


def _endpoints(where: "_Where", tables: dict, defaults: dict, base_dir: Path) -> dict[str, Endpoint]:
    """Every endpoint: a table you write (optional keys left out are off) or the built-in one."""
    where.keys(tables, "[endpoints]", set(ENDPOINTS))
    endpoints = {}
    for name in ENDPOINTS:
        if name in tables:
            required = {k: defaults[name][k] for k in ("id_env", "timeout_s")}
            required["workflow"] = str(BUILTIN_DIR / defaults[name]["workflow"])
            endpoints[name] = _endpoint(where, name, {**required, **tables[name]}, base_dir)
        else:  # a table you leave out is the built-in one (its workflow from the package)
            endpoints[name] = _endpoint(where, name, defaults[name], BUILTIN_DIR)
    return endpoints


def _off_peak(where: "_Where", table: dict) -> tuple[str, tuple[Window, ...]]:
    """(time zone, off-peak windows) from the [off_peak] table."""
    where.keys(table, "[off_peak]", {"timezone", "windows"})
    zone = where.string(table.get("timezone", "UTC"), "off_peak.timezone")
    try:
        _zone(zone)
    except Exception:
        raise PolicyError(f"{where.source}: off_peak.timezone {zone!r} is not a known time zone (e.g. 'Europe/Berlin')") from None
    return zone, tuple(_window(where, w) for w in where.list(table.get("windows", []), "off_peak.windows"))


def _fallback(where: "_Where", table: dict) -> tuple[dict[str, str], frozenset[str]]:
    """({endpoint: its fallback}, the causes that trigger one) from the [fallback] table."""
    where.keys(table, "[fallback]", {"on", *ENDPOINTS})
    fallback = {}
    for name in ENDPOINTS:
        if name in table:
            target = where.choice(table[name], f"fallback.{name}", ENDPOINTS)
            if target == name:
                raise PolicyError(f"{where.source}: fallback.{name} points at itself")
            fallback[name] = target
    causes = frozenset(where.choice(c, "fallback.on", FALLBACK_CAUSES)
                       for c in where.list(table.get("on", list(FALLBACK_CAUSES)), "fallback.on"))
    return fallback, causes


def _endpoint(where: "_Where", name: str, entry: dict, base_dir: Path) -> Endpoint:
    where.keys(entry, f"[endpoints.{name}]", {"id", "id_env", "url", "workflow", "image_node", "timeout_s",
                                              "max_queue", "price_per_second", "workers"})
    workflow = Path(where.string(entry["workflow"], f"endpoints.{name}.workflow")).expanduser()
    if not workflow.is_absolute():
        workflow = base_dir / workflow
    max_queue = where.count(entry.get("max_queue"), f"endpoints.{name}.max_queue", minimum=0)
    workers = where.count(entry.get("workers"), f"endpoints.{name}.workers", minimum=1)
    price = entry.get("price_per_second")
    if price is not None:
        price = where.number(price, f"endpoints.{name}.price_per_second", minimum=0.0)
    timeout = where.number(entry.get("timeout_s", 600), f"endpoints.{name}.timeout_s", minimum=1.0)
    return Endpoint(
        name=name,
        workflow=workflow,
        id_env=where.string(entry["id_env"], f"endpoints.{name}.id_env"),
        id=where.string(entry["id"], f"endpoints.{name}.id") if "id" in entry else None,
        url=where.string(entry["url"], f"endpoints.{name}.url").rstrip("/") if "url" in entry else None,
        image_node=str(entry["image_node"]) if "image_node" in entry else None,
        timeout_s=timeout,
        max_queue=max_queue,
        price_per_second=price,
        workers=workers,
    )


def _rule(where: "_Where", index: int, entry: Any) -> Rule:
    label = f"rules[{index}]"
    if not isinstance(entry, dict):
        raise PolicyError(f"{where.source}: {label} must be a table ([[rules]])")
    where.keys(entry, label, {"name", "when", "use", "max_queue"})
    if "use" not in entry:
        raise PolicyError(f"{where.source}: {label} has no 'use' (\"cpu\" or \"gpu\")")
    use = where.choice(entry["use"], f"{label}.use", ENDPOINTS)
    when = entry.get("when", {})
    if not isinstance(when, dict):
        raise PolicyError(f"{where.source}: {label}.when must be a table, e.g. when = {{ tier = \"paid\" }}")
    where.keys(when, f"{label}.when", {"urgent", "tier", "off_peak", "kind"})
    tiers = None
    if "tier" in when:
        raw = when["tier"] if isinstance(when["tier"], list) else [when["tier"]]
        tiers = frozenset(where.string(t, f"{label}.when.tier") for t in raw)
    return Rule(
        name=where.string(entry.get("name", f"rule {index}"), f"{label}.name"),
        use=use,
        urgent=where.boolean(when["urgent"], f"{label}.when.urgent") if "urgent" in when else None,
        tiers=tiers,
        off_peak=where.boolean(when["off_peak"], f"{label}.when.off_peak") if "off_peak" in when else None,
        kind=where.choice(when["kind"], f"{label}.when.kind", REQUEST_KINDS) if "kind" in when else None,
        max_queue=where.count(entry.get("max_queue"), f"{label}.max_queue", minimum=0),
    )


_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _window(where: "_Where", entry: Any) -> Window:
    days = None
    if isinstance(entry, dict):
        where.keys(entry, "off_peak.windows[]", {"start", "end", "days"})
        span = f"{where.string(entry.get('start', '00:00'), 'off_peak.windows.start')}-" \
               f"{where.string(entry.get('end', '24:00'), 'off_peak.windows.end')}"
        if "days" in entry:
            names = [where.string(d, "off_peak.windows.days").lower()[:3] for d in where.list(entry["days"], "days")]
            bad = [d for d in names if d not in DAYS]
            if bad:
                raise PolicyError(f"{where.source}: unknown day(s) {bad} in off_peak.windows (use mon … sun)")
            days = frozenset(DAYS.index(d) for d in names)
    else:
        span = where.string(entry, "off_peak.windows[]")
    match = _HHMM.match(span)
    if not match:
        raise PolicyError(f"{where.source}: off-peak window {span!r} is not 'HH:MM-HH:MM' (e.g. '22:00-07:00')")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
        raise PolicyError(f"{where.source}: off-peak window {span!r} has an impossible time")
    if start == end:
        raise PolicyError(f"{where.source}: off-peak window {span!r} is empty (for all day write 00:00-24:00)")
    return Window(start, end, days)


def _zone(name: str):
    if name.upper() == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


@dataclass(frozen=True)
class _Where:
    """Validation helpers whose errors name the file and the key."""

    source: str

    def keys(self, table: Any, label: str, allowed: set[str]) -> None:
        if not isinstance(table, dict):
            raise PolicyError(f"{self.source}: {label} must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise PolicyError(f"{self.source}: unknown key(s) {unknown} in {label} (known: {sorted(allowed)})")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise PolicyError(f"{self.source}: {key} must be a non-empty string, got {value!r}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise PolicyError(f"{self.source}: {key} must be true or false, got {value!r}")
        return value

    def number(self, value: Any, key: str, *, minimum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise PolicyError(f"{self.source}: {key} must be a number ≥ {minimum:g}, got {value!r}")
        return float(value)

    def count(self, value: Any, key: str, *, minimum: int) -> int | None:
        """A whole number ≥ ``minimum``, or None when the key is absent."""
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise PolicyError(f"{self.source}: {key} must be a whole number ≥ {minimum}, got {value!r}")
        return value

    def list(self, value: Any, key: str) -> list:
        if not isinstance(value, list):
            raise PolicyError(f"{self.source}: {key} must be a list, got {value!r}")
        return value

    def choice(self, value: Any, key: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise PolicyError(f"{self.source}: {key} must be one of {list(allowed)}, got {value!r}")
        return value
