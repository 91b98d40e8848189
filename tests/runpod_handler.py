"""A RunPod serverless handler that answers like worker-comfyui, for the router's tests.

Run it with the runpod SDK's local API server::

    python tests/runpod_handler.py --rp_serve_api --rp_api_port 8000 --rp_api_host 127.0.0.1

It checks the request the way worker-comfyui and ComfyUI would (``input.workflow`` in API format,
``input.images[]`` of ``{name, image}``, the LoadImage node naming an uploaded image), then stands
in for running the workflow: the "cutout" keeps the pixels that differ from the top-left corner's
colour, the caption names the image size, and the report (written with ``report.encode_png``)
records the ``provider`` / ``precision`` / ``n_gpu_layers`` found in the workflow. The answer is
worker-comfyui's: ``{"images": [{"filename", "type": "base64", "data"}]}`` or ``{"error", "details"}``,
its error texts those of worker-comfyui 5.4.1 (validation errors as it formats ComfyUI's
``node_errors``; warnings in ``errors`` only of the kinds it puts there — it logs unhandled output
keys, it does not return them).

A node ``{"class_type": "CutoutGuardTestMode", "inputs": {"mode": ...}}`` in the workflow picks
another answer: ``unsafe``, ``fail``, ``raise``, ``warn``, ``no_report``, ``bad_base64``,
``not_images``, ``s3`` (the image PUT to the node's ``url`` input and answered as ``type: s3_url``,
as with ``BUCKET_ENDPOINT_URL`` and its keys set), ``s3_no_keys`` (``BUCKET_ENDPOINT_URL`` without
keys: the runpod SDK's ``upload_image`` keeps the file in ``simulated_uploaded/`` on the worker and
that relative path comes back as the "URL"); its ``by_width`` input (``{"13": "fail"}``) picks a
mode for the images of one width only.
``CUTOUT_GUARD_TEST_ENDPOINT`` (cpu / gpu) prefixes the output file name, so a test can tell
which server answered.
"""

from __future__ import annotations

import base64
import binascii
import io
import os

import numpy as np
from PIL import Image

from cutout_guard.core import report

ENDPOINT = os.environ.get("CUTOUT_GUARD_TEST_ENDPOINT", "test")


def validation_failed(workflow: dict, node_id: str, details: str) -> dict:
    """What worker-comfyui answers when ComfyUI's /prompt refuses a node's input: each field of
    ComfyUI's ``node_errors[node_id]`` on a bullet line."""
    error = {"type": "custom_validation_failed", "message": "Custom validation failed for node",
             "details": details, "extra_info": {"input_name": details.split(" - ", 1)[0]}}
    fields = {"errors": [error], "dependent_outputs": outputs_depending_on(workflow, node_id),
              "class_type": workflow[node_id]["class_type"]}
    return {"error": "Workflow validation failed:\n" + "\n".join(
        f"• Node {node_id} ({key}): {value}" for key, value in fields.items())}


def outputs_depending_on(workflow: dict, node_id: str) -> list[str]:
    """The output nodes (Save Cutout Report) whose inputs lead back to ``node_id``."""
    def reaches(nid: str, seen: set) -> bool:
        if nid == node_id:
            return True
        seen.add(nid)
        links = [v[0] for v in workflow.get(nid, {}).get("inputs", {}).values() if isinstance(v, list) and v]
        return any(reaches(str(link), seen) for link in links if str(link) not in seen)

    return [nid for nid, node in workflow.items()
            if node.get("class_type") == "CutoutGuardSaveReport" and reaches(nid, set())]


def handler(job: dict) -> dict:
    job_input = job.get("input")
    if job_input is None:
        return {"error": "Please provide input"}
    if not isinstance(job_input, dict) or not isinstance(job_input.get("workflow"), dict):
        return {"error": "Missing 'workflow' parameter"}
    workflow = job_input["workflow"]
    images = job_input.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, dict) and "name" in i and "image" in i for i in images):
        return {"error": "'images' must be a list of objects with 'name' and 'image' keys"}
    uploaded, upload_errors = {}, []
    for item in images:
        try:
            uploaded[item["name"]] = base64.b64decode(item["image"], validate=True)
        except (binascii.Error, ValueError) as exc:
            upload_errors.append(f"Error decoding base64 for {item['name']}: {exc}")
    if upload_errors:
        return {"error": "Failed to upload one or more input images", "details": upload_errors}

    mode, url, by_width = "ok", None, {}
    for node in workflow.values():
        if node.get("class_type") == "CutoutGuardTestMode":
            mode = node["inputs"].get("mode", "ok")
            url = node["inputs"].get("url")
            by_width = node["inputs"].get("by_width") or {}
    for node in workflow.values():  # a mode for images of one width: some jobs of a batch differ
        name = node.get("inputs", {}).get("image") if node.get("class_type") == "LoadImage" else None
        if name in uploaded:
            mode = by_width.get(str(Image.open(io.BytesIO(uploaded[name])).width), mode)
    if mode == "raise":
        raise ValueError("the test handler was asked to raise")
    if mode == "fail":
        return {"error": "Job processing failed", "details": [
            "Workflow execution error: Node Type: CutoutGuardSafetyCheck, Node ID: 5, Message: test failure"]}
    if mode == "not_images":
        return {"text": "worker-comfyui never answers like this"}

    loaders = [(nid, n.get("inputs", {}).get("image")) for nid, n in workflow.items() if n.get("class_type") == "LoadImage"]
    if not loaders:
        return {"error": "Job processing failed", "details": [f"No outputs found in history for prompt {job.get('id')}."]}
    for node_id, name in loaders:
        if name not in uploaded:  # ComfyUI's LoadImage.VALIDATE_INPUTS refuses a file that is not there
            return validation_failed(workflow, node_id, f"image - Invalid image file: {name}")
    name = loaders[0][1]

    rgb = np.asarray(Image.open(io.BytesIO(uploaded[name])).convert("RGB"), dtype=np.float32) / 255.0
    alpha = (np.abs(rgb - rgb[0, 0]).sum(axis=-1) > 1e-3).astype(np.float32)
    cutout = np.concatenate([rgb, alpha[..., None]], axis=-1)
    devices = {}
    for node in workflow.values():
        for key in ("provider", "precision", "n_gpu_layers"):
            if key in node.get("inputs", {}):
                devices[key] = node["inputs"][key]
    unsafe = mode == "unsafe"
    text = {"model": "Llama-Guard-3-8B", "safe": not unsafe, "p_unsafe": 0.91 if unsafe else 0.02, "threshold": 0.5,
            "reason": "answer 'unsafe'" if unsafe else "answer 'safe'",
            "categories": [{"code": "S1", "name": "Violent Crimes"}] if unsafe else []}
    image = {"model": "nsfw_image_detection", "safe": True, "p_unsafe": 0.03, "threshold": 0.5, "label": "normal",
             "reason": "p_unsafe 0.030 < threshold 0.5"}
    record = report.make_report(
        caption=f"a picture {rgb.shape[1]} pixels wide and {rgb.shape[0]} high",
        task="<CAPTION>",
        image=report.read_verdict(image, what="image"),
        text=report.read_verdict(text, what="text"),
        unsafe_action="keep",
        models={"ben2": "BEN2_Base.onnx", "florence2": "Florence-2-base", "llama_guard": "Llama-Guard-3-8B",
                "image_guard": "nsfw_image_detection"},
        devices=devices,
        seconds={"cutout": 0.5, "image_check": 0.2, "caption": 1.25, "safety_check": 0.75},
    )
    png = report.encode_png(cutout, record)
    filename = f"{ENDPOINT}_cutout_guard_00001_.png"
    if mode == "no_report":
        plain = io.BytesIO()
        Image.fromarray((rgb * 255).astype(np.uint8)).save(plain, format="PNG")
        return {"images": [{"filename": filename, "type": "base64", "data": base64.b64encode(plain.getvalue()).decode()}]}
    if mode == "bad_base64":
        return {"images": [{"filename": filename, "type": "base64", "data": "%%% not base64 %%%"}]}
    if mode == "s3":  # worker-comfyui with BUCKET_ENDPOINT_URL: upload, answer with the URL
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(url, data=png, method="PUT"), timeout=10).close()
        return {"images": [{"filename": filename, "type": "s3_url", "data": url}]}
    if mode == "s3_no_keys":  # the same without BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY
        import tempfile

        from runpod.serverless.utils import rp_upload

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, filename)
            with open(path, "wb") as file:
                file.write(png)
            location = rp_upload.upload_image(job.get("id"), path)
        return {"images": [{"filename": filename, "type": "s3_url", "data": location}]}
    result = {"images": [{"filename": filename, "type": "base64", "data": base64.b64encode(png).decode()}]}
    if mode == "warn":  # a second image whose /view fetch failed: the worker lists it and goes on
        result["errors"] = [f"Failed to fetch image data for {ENDPOINT}_cutout_guard_00002_.png from /view endpoint."]
    return result


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler})
