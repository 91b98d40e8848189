"""Local RunPod endpoints for the router's tests: the runpod SDK's own server plus a gateway.

Each endpoint is the runpod SDK's local API server (``--rp_serve_api``) running
``tests/runpod_handler.py``, which answers in worker-comfyui's format. The SDK's simulator serves
``POST /run``, ``POST /runsync``, ``POST /status/{id}`` and ``POST /stream/{id}`` at its root and
nothing else (and runs a job when its status is first asked for, then forgets it), while RunPod's
API lives under ``{base}/{endpoint_id}/`` with ``GET /status``. So a minimal gateway stands in
front of them and supplies only what the simulator lacks:

- the ``/{endpoint_id}/`` prefix and ``GET /status`` (passed on to the simulator's root routes
  unchanged — the jobs themselves run in the SDK's server);
- RunPod's memory of a finished job (its final status answers again, as RunPod keeps results
  for a while), workers that take one job at a time (``workers`` per endpoint, each job taking
  ``min_run_s``: its status says ``IN_QUEUE`` until a worker is free, then ``IN_PROGRESS``) and
  RunPod's ``delayTime`` / ``executionTime`` fields when a test sets them;
- ``GET /health`` job and worker counts (``inQueue``: the jobs waiting for a worker, or the
  number a test sets) and ``POST /cancel/{id}``;
- counts of what reached it: jobs in flight per endpoint and their maximum, the images sent
  (by content hash), cancels;
- endpoints whose jobs never finish (a job that outlives the deadline);
- the API key check, and network faults for the retry tests (a dropped ``/run``, 429 on /run,
  503 on /health);
- a bucket for the ``s3_url`` answer (the handler PUTs the PNG, the client GETs it).

``python tests/runpod_gateway.py --workers cpu=2,gpu=2`` serves two endpoints (``cpu-ep``,
``gpu-ep``) until interrupted (Ctrl-C or SIGTERM), printing the gateway's URL; ``GET /_stats`` shows the counts.
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HANDLER = Path(__file__).with_name("runpod_handler.py")
REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-123"
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_simulator(name: str, cwd: str | Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # never the real platform or a real bucket
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_"))}
    env["CUTOUT_GUARD_TEST_ENDPOINT"] = name
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(Path(__file__).resolve().parent)]))
    proc = subprocess.Popen(
        [sys.executable, str(HANDLER), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
         "--rp_api_port", str(port), "--rp_log_level", "ERROR"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,  # the worker's disk
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):  # up to ~30 s
        if proc.poll() is not None:
            raise RuntimeError(f"the runpod simulator for {name} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/docs", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"the runpod simulator for {name} did not start on port {port}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Gateway(ThreadingHTTPServer):
    """RunPod's URL layout in front of the simulators, plus what they lack (see the docstring)."""

    daemon_threads = True

    def __init__(self, simulators: dict[str, str]):
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.simulators = simulators          # endpoint id -> simulator root URL
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.held: set[str] = set()           # endpoint ids whose jobs never finish
            self.queue: dict[str, int] = {}       # endpoint id -> jobs.inQueue (else: in flight beyond the workers)
            self.workers: dict[str, int] = {}     # endpoint id -> workers (default 1)
            self.min_run_s: dict[str, float] = {}  # endpoint id -> seconds a job runs on its worker
            self.timing: dict[str, tuple[int, int]] = {}  # endpoint id -> (delayTime, executionTime) in ms
            self.health_faults: dict[str, list[int]] = {}  # endpoint id -> statuses to answer first
            self.status_faults: dict[str, list[int]] = {}  # likewise for GET /status
            self.run_faults: dict[str, list[int]] = {}     # likewise for POST /run (nothing is queued)
            self.drop_run: set[str] = set()       # endpoint ids whose /run is read, then the connection dropped
            self.log: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
            self.cancelled: list[str] = []
            self.held_jobs: dict[str, str] = {}   # job id -> status
            self.bucket: dict[str, bytes] = {}
            self.inflight: dict[str, dict[str, tuple[float, float]]] = {}  # endpoint id -> {job id: (start, end)}
            self.free_at: dict[str, list[float]] = {}  # endpoint id -> when each worker is free
            self.max_inflight: dict[str, int] = {}  # endpoint id -> most jobs in flight at once
            self.max_total_inflight = 0           # the same over all endpoints together
            self.final: dict[str, dict] = {}      # job id -> its final status answer
            self.sent: list[tuple[str, str]] = []  # (endpoint id, sha256 of the image) per job queued

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and p == path)

    def images_sent(self) -> dict[str, int]:
        """How many jobs each image (by content hash) became, over all endpoints."""
        counts: dict[str, int] = {}
        for _, sha in self.sent:
            counts[sha] = counts.get(sha, 0) + 1
        return counts

    def stats(self) -> dict:
        with self.lock:
            return {
                "max_inflight": dict(self.max_inflight),
                "max_total_inflight": self.max_total_inflight,
                "inflight": {eid: len(jobs) for eid, jobs in self.inflight.items()},
                "jobs_sent": {eid: sum(1 for e, _ in self.sent if e == eid) for eid in {e for e, _ in self.sent}},
                "images": len({sha for _, sha in self.sent}),
                "images_sent_twice": sum(1 for n in self.images_sent().values() if n > 1),
                "cancelled": len(self.cancelled),
            }

    # ------------------------------------------------------------------ bookkeeping (lock held)

    def _submitted(self, eid: str, job_id: str, sha: str) -> None:
        now = time.monotonic()
        free = self.free_at.setdefault(eid, [now] * self.workers.get(eid, 1))
        worker = min(range(len(free)), key=free.__getitem__)  # jobs wait in order for the first free worker
        start = max(now, free[worker])
        free[worker] = start + self.min_run_s.get(eid, 0.0)
        jobs = self.inflight.setdefault(eid, {})
        jobs[job_id] = (start, free[worker])
        self.sent.append((eid, sha))
        self.max_inflight[eid] = max(self.max_inflight.get(eid, 0), len(jobs))
        self.max_total_inflight = max(self.max_total_inflight, sum(len(j) for j in self.inflight.values()))

    def _ended(self, eid: str, job_id: str, state: dict) -> None:
        self.inflight.get(eid, {}).pop(job_id, None)
        self.final[job_id] = state


class _GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, body: dict | bytes) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self):  # the bucket: the handler uploads its PNG here
        self.server.bucket[self.path] = self._body()
        self._reply(200, {"ok": True})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        gw = self.server
        path = self.path.split("?")[0]
        with gw.lock:
            gw.log.append((method, path, self.headers.get("Authorization")))
        if path == "/_stats":
            return self._reply(200, gw.stats())
        if path.startswith("/bucket/"):
            data = gw.bucket.get(self.path)
            return self._reply(200, data) if data is not None else self._reply(404, {"error": "no such key"})
        parts = path.strip("/").split("/")
        eid, op, job = parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else None
        body = self._body() if method == "POST" else b""
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._reply(401, {"error": "Unauthorized"})
        if eid not in gw.simulators and eid not in gw.held:
            return self._reply(404, {"error": "endpoint not found"})
        if (method, op) == ("GET", "health"):
            return self._health(eid)
        if (method, op) == ("POST", "cancel") and job:
            return self._cancel(eid, job)
        if method == "POST" and op in ("run", "runsync"):
            return self._run(eid, op, body)
        if method == "GET" and op == "status" and job:
            return self._status(eid, job)
        return self._reply(404, {"error": f"no route {method} {path}"})

    def _health(self, eid: str) -> None:
        gw = self.server
        with gw.lock:
            faults = gw.health_faults.get(eid)
            if faults:
                return self._reply(faults.pop(0), {"error": "try again"})
            workers = gw.workers.get(eid, 1)
            now = time.monotonic()
            jobs = gw.inflight.get(eid, {}).values()
            waiting = sum(1 for start, _ in jobs if start > now)
            running = min(len(jobs) - waiting, workers)
            queued = gw.queue.get(eid, waiting)
        self._reply(200, {"jobs": {"completed": 0, "failed": 0, "inProgress": running, "inQueue": queued, "retried": 0},
                          "workers": {"idle": workers - running, "running": running}})

    def _cancel(self, eid: str, job: str) -> None:
        gw = self.server
        with gw.lock:
            gw.cancelled.append(job)
            if job in gw.held_jobs:
                gw.held_jobs[job] = "CANCELLED"
            if job in gw.inflight.get(eid, {}):
                gw._ended(eid, job, {"id": job, "status": "CANCELLED"})
        self._reply(200, {"id": job, "status": "CANCELLED"})

    def _run(self, eid: str, op: str, body: bytes) -> None:
        gw = self.server
        with gw.lock:
            faults = gw.run_faults.get(eid)
            if faults:  # refused before anything is queued
                return self._reply(faults.pop(0), {"error": "too many requests"})
        if eid in gw.drop_run:  # the request arrived; the answer never leaves
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        sha = _image_hash(body)
        if eid in gw.held:
            with gw.lock:
                job_id = f"held-{len(gw.held_jobs) + 1}"
                gw.held_jobs[job_id] = "IN_QUEUE"
                gw._submitted(eid, job_id, sha)
            return self._reply(200, {"id": job_id, "status": "IN_QUEUE"})
        status, answer = _forward(gw.simulators[eid] + "/" + op, body)
        if status == 200 and isinstance(answer, dict) and answer.get("id"):
            with gw.lock:
                gw._submitted(eid, answer["id"], sha)
                if op == "runsync" and answer.get("status") in FINAL:
                    gw._ended(eid, answer["id"], answer)
        self._reply(status, answer)

    def _status(self, eid: str, job: str) -> None:
        gw = self.server
        with gw.lock:
            faults = gw.status_faults.get(eid)
            if faults:
                return self._reply(faults.pop(0), {"error": "try again"})
            if job in gw.held_jobs:
                return self._reply(200, {"id": job, "status": gw.held_jobs[job]})
            if job in gw.final:  # RunPod answers a finished job's status again
                return self._reply(200, gw.final[job])
            times = gw.inflight.get(eid, {}).get(job)
            now = time.monotonic()
            if times is not None and now < times[1]:
                return self._reply(200, {"id": job, "status": "IN_QUEUE" if now < times[0] else "IN_PROGRESS"})
        status, answer = _forward(gw.simulators[eid] + "/status/" + job, b"")  # the simulator's is POST
        if status == 200 and isinstance(answer, dict) and answer.get("status") in FINAL:
            with gw.lock:
                if eid in gw.timing:
                    answer["delayTime"], answer["executionTime"] = gw.timing[eid]
                gw._ended(eid, job, answer)
        self._reply(status, answer)


def _forward(url: str, body: bytes) -> tuple[int, dict | bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _image_hash(body: bytes) -> str:
    try:
        image = json.loads(body)["input"]["images"][0]["image"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "no image"
    return hashlib.sha256(image.encode()).hexdigest()


@contextlib.contextmanager
def serve(names: tuple[str, ...] = ("cpu", "gpu")):
    """Simulators for ``names`` (endpoint ids ``<name>-ep``) behind one gateway; all stopped after."""
    started: list[subprocess.Popen] = []
    gateway = None
    disks = tempfile.TemporaryDirectory(prefix="runpod-workers-")  # each worker's working folder
    try:
        simulators = {}
        for name in names:
            disk = Path(disks.name) / name
            disk.mkdir()
            proc, url = start_simulator(name, disk)
            started.append(proc)
            simulators[f"{name}-ep"] = url
        gateway = Gateway(simulators)
        thread = threading.Thread(target=gateway.serve_forever, daemon=True)
        thread.start()
        yield gateway
    finally:
        if gateway is not None:
            gateway.shutdown()
            gateway.server_close()
        for proc in started:
            stop(proc)
        disks.cleanup()


@pytest.fixture(scope="module")
def servers():
    """Both endpoints, started once per test module."""
    with serve() as gateway:
        yield gateway


@pytest.fixture
def gateway(servers):
    """The endpoints with the gateway's settings and counts reset for one test."""
    servers.reset()
    return servers


# ----------------------------------------------------------------------------- test data

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)    # a Wednesday, peak hours
NIGHT = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)  # inside the default 22:00-07:00 window
FAST = {"retries": 2, "backoff_s": 0.02, "poll_interval_s": 0.05, "poll_max_s": 0.2, "request_timeout_s": 10.0}



def api_workflow(provider: str, precision: str, n_gpu_layers: int, mode: str | None = None, **mode_inputs) -> dict:
    """A small API-format workflow with the pack's node ids and a LoadImage node."""
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "CutoutGuardLoadBEN2", "inputs": {"model": "BEN2_Base.onnx", "provider": provider}},
        "3": {"class_type": "CutoutGuardRemoveBackground", "inputs": {"ben2": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "CutoutGuardLoadFlorence2", "inputs": {"model": "Florence-2-base", "precision": precision}},
        "5": {"class_type": "CutoutGuardLoadLlamaGuard", "inputs": {"model": "Llama-Guard-3-8B.gguf",
                                                                    "n_gpu_layers": n_gpu_layers}},
        "6": {"class_type": "CutoutGuardSaveReport", "inputs": {"image": ["3", 0], "filename_prefix": "cutout_guard"}},
    }
    if mode or mode_inputs:
        workflow["99"] = {"class_type": "CutoutGuardTestMode", "inputs": {"mode": mode or "ok", **mode_inputs}}
    return workflow


def photo(width: int = 24, height: int = 16, shade: int = 40) -> bytes:
    """A PNG with a square subject on a flat background (``shade`` makes images differ)."""
    rgb = np.full((height, width, 3), shade, np.uint8)
    rgb[4:12, 6:14] = (200, 120, 30)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve two local RunPod endpoints (cpu-ep, gpu-ep) behind one gateway.")
    parser.add_argument("--workers", default="cpu=1,gpu=1", help="workers per endpoint, e.g. cpu=2,gpu=2")
    parser.add_argument("--min-run-s", default="", help="seconds a job runs on a worker, e.g. cpu=0.3,gpu=0.1")
    parser.add_argument("--timing", default="", help="delayTime:executionTime in ms per endpoint, e.g. cpu=200:2500")
    args = parser.parse_args(argv)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # `kill` stops the simulators too
    with serve() as gateway:
        for item in filter(None, args.workers.split(",")):
            name, value = item.split("=")
            gateway.workers[f"{name}-ep"] = int(value)
        for item in filter(None, args.min_run_s.split(",")):
            name, value = item.split("=")
            gateway.min_run_s[f"{name}-ep"] = float(value)
        for item in filter(None, args.timing.split(",")):
            name, value = item.split("=")
            delay, execution = value.split(":")
            gateway.timing[f"{name}-ep"] = (int(delay), int(execution))
        print(gateway.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
