"""``cutout-guard submit``: send one image to the CPU or GPU endpoint the policy picks.

Writes the cutout PNG (report inside) and the report as JSON beside it, prints where it ran,
why, the caption and the verdict. Exit status: 0 done, 2 bad policy or input, 3 endpoint
unreachable, 4 job failed, 5 timed out, 6 malformed output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from ..core.errors import BadInput
from .client import Router
from .errors import EndpointUnreachable, JobFailed, JobTimeout, MalformedOutput, PolicyError
from .policy import WAIT_MODES, Request, load_policy, parse_time

EXIT = ((PolicyError, 2), (BadInput, 2), (JobTimeout, 5), (JobFailed, 4), (EndpointUnreachable, 3),
        (MalformedOutput, 6))


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="cutout-guard submit",
        description="Send one image to the CPU or GPU RunPod endpoint the routing policy picks; write the "
                    "cutout PNG (report inside) and its report JSON.",
        epilog="Environment: RUNPOD_API_KEY, CUTOUT_GUARD_CPU_ENDPOINT_ID, CUTOUT_GUARD_GPU_ENDPOINT_ID (names "
               "as the policy sets them). Exit status: 0 done, 2 bad policy or input, 3 endpoint unreachable, "
               "4 job failed, 5 timed out, 6 malformed output.")
    parser.add_argument("image", type=Path, help="photo to process (PNG, JPEG or WebP)")
    parser.add_argument("--tier", required=True, help="user tier as the policy names it (default policy: free, paid)")
    parser.add_argument("--urgent", action="store_true", help="mark the request urgent (default policy: GPU)")
    parser.add_argument("--policy", type=Path, help="routing policy TOML file (default: the built-in policy)")
    parser.add_argument("--out", type=Path,
                        help="where to write the cutout PNG (default: <image stem>_cutout.png here); "
                             "the report JSON goes beside it")
    parser.add_argument("--wait", choices=WAIT_MODES, help="run + status polling, or runsync (default: the policy's)")
    parser.add_argument("--base-url", help="RunPod API base URL (default: the policy's, https://api.runpod.ai/v2)")
    parser.add_argument("--at", metavar="TIME",
                        help="decide as if it were TIME, ISO 8601 (2026-11-25T23:30, UTC without an offset; "
                             "default: now) — for a reproducible decision")
    parser.add_argument("--route-only", action="store_true", help="print the routing decision and stop")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the routing steps")
    return parser


def submit_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        policy = load_policy(args.policy)
        if args.base_url:
            policy = dataclasses.replace(policy, base_url=args.base_url.rstrip("/"))
        router = Router(policy, now=parse_time(args.at) if args.at else None)
        if args.route_only:
            decision = router.decide(Request(tier=args.tier, urgent=args.urgent))
            if args.json:
                print(json.dumps({"endpoint": decision.endpoint, "reason": decision.reason,
                                  "route": list(decision.steps), "at": decision.at.isoformat()},
                                 ensure_ascii=False, indent=2))
            else:
                print(f"{decision.endpoint}: " + "; ".join(decision.steps))
            return 0
        if not args.image.is_file():
            raise BadInput(f"no image at {args.image}")
        result = router.submit(args.image, tier=args.tier, urgent=args.urgent, wait=args.wait)
    except tuple(cls for cls, _ in EXIT) as exc:
        print(f"error: {exc}", file=sys.stderr)
        for line in getattr(exc, "errors", ())[:20]:
            print(f"  worker: {line}", file=sys.stderr)
        return next(code for cls, code in EXIT if isinstance(exc, cls))

    out = args.out or Path(f"{args.image.stem}_cutout.png")
    _write(out, result.png)
    _write(out.with_suffix(".json"), (json.dumps(result.report, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    if args.json:
        print(json.dumps({**result.summary(), "png": str(out)}, ensure_ascii=False, indent=2))
        return 0
    cost = f", ~${result.cost_usd:.5f} ({result.cost_basis})" if result.cost_usd is not None else ""
    print(f"{out}: served by {result.endpoint} in {result.timings.wall_s:.1f} s{cost}")
    print(f"  why: {'; '.join(result.route)}")
    print(f"  caption: {result.caption!r}")
    verdict = result.verdict or "not checked"
    if result.categories:
        verdict += " (" + ", ".join(f"{c.code} {c.name}" for c in result.categories) + ")"
    if result.p_unsafe is not None:
        verdict += f", p_unsafe {result.p_unsafe:.3f}"
    print(f"  verdict: {verdict}")
    for name, check in (("image check", result.image_check), ("text check", result.text_check)):
        if check is not None:
            p = "-" if check.get("p_unsafe") is None else f"{check['p_unsafe']:.3f}"
            print(f"    {name}: {'safe' if check.get('safe') is True else 'UNSAFE'} (p_unsafe {p}) {check.get('reason') or ''}".rstrip())
    for warning in result.warnings:
        print(f"  worker warning: {warning}")
    return 0


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(submit_main())
