"""Start a real ComfyUI (``--cpu`` unless asked for its GPU) with this pack installed, and drive it over its HTTP API.

Needs ``COMFYUI_DIR`` (a ComfyUI checkout); ``COMFYUI_PYTHON`` names the Python that runs it
(default: the current one); ``COMFYUI_FRONTEND_ROOT`` optionally serves another frontend build
(e.g. the one a given ComfyUI release pinned). ComfyUI gets a temporary ``--base-directory`` whose
``custom_nodes/cutout-guard`` links to this repository, so the checkout is never modified, and an
``extra_model_paths.yaml`` mapping the pack's model folders to ``models_root`` (where tests put
the tiny models they build).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from devtools.synthetic.tiny_set import TINY, build_tiny_models, with_tiny_models  # noqa: F401 (the workflow tests import them from here)

REPO = Path(__file__).resolve().parent.parent
FOLDER_KEYS = ("ben2", "florence2", "LLM", "image_guard")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyUI:
    def __init__(self, comfy_dir: Path, base: Path, *, python: str | None = None, start_timeout: float = 180, cpu: bool = True):
        self.comfy_dir = Path(comfy_dir)
        self.base = base
        self.models_root = base / "extra_models"
        self.output_dir = base / "output"
        self.input_dir = base / "input"
        for folder in (base / "custom_nodes", self.output_dir, self.input_dir, base / "user", base / "temp"):
            folder.mkdir(parents=True, exist_ok=True)
        for key in FOLDER_KEYS:
            (self.models_root / key).mkdir(parents=True, exist_ok=True)
        (base / "custom_nodes" / "cutout-guard").symlink_to(REPO, target_is_directory=True)
        config = base / "extra_model_paths.yaml"
        config.write_text(
            "cutout_guard_tests:\n"
            f"  base_path: {self.models_root}\n" + "".join(f"  {key}: {key}\n" for key in FOLDER_KEYS)
        )
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYUI_")}
        env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        command = [
            python or sys.executable, "main.py", *(["--cpu"] if cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(base), "--extra-model-paths-config", str(config),
            "--disable-auto-launch", "--dont-print-server",
        ]
        if os.environ.get("COMFYUI_FRONTEND_ROOT"):
            command += ["--front-end-root", os.environ["COMFYUI_FRONTEND_ROOT"]]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.comfy_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(start_timeout)

    # ------------------------------------------------------------------ process

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()

    def get(self, path: str):
        return json.loads(self._request("GET", path)[1])

    def post_json(self, path: str, payload: dict):
        try:
            status, body = self._request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        return status, json.loads(body or b"null")

    def object_info(self) -> dict:
        return self.get("/object_info")

    def upload_image(self, path: Path) -> str:
        boundary = uuid.uuid4().hex
        data = Path(path).read_bytes()
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{Path(path).name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
        _, response = self._request("POST", "/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return json.loads(response)["name"]

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        return self._request("GET", f"/view?{query}")[1]

    def submit(self, prompt: dict, extra_data: dict | None = None) -> tuple[int, dict]:
        """POST /prompt; returns (HTTP status, answer) without waiting. ``extra_data``: what the
        frontend sends beside the prompt (``{"extra_pnginfo": {"workflow": …}}``)."""
        body = {"prompt": prompt, "client_id": "cutout-guard-tests"}
        if extra_data is not None:
            body["extra_data"] = extra_data
        return self.post_json("/prompt", body)

    def run(self, prompt: dict, timeout: float = 300, extra_data: dict | None = None) -> dict:
        """Queue an API-format prompt and wait for it; the history entry, or AssertionError with the reason."""
        status, answer = self.submit(prompt, extra_data)
        assert status == 200, f"ComfyUI refused the prompt ({status}): {json.dumps(answer, indent=1)[:4000]}"
        prompt_id = answer["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"]["completed"] or entry["status"].get("status_str") == "error"
            ):
                if entry["status"].get("status_str") != "success":
                    messages = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                    raise AssertionError(f"prompt failed: {json.dumps(messages, indent=1)[:4000]}")
                return entry
            if self.process.poll() is not None:
                raise AssertionError(f"ComfyUI died:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log()[-4000:]}")

    def free_memory(self) -> None:
        self.post_json("/free", {"unload_models": True, "free_memory": True})
