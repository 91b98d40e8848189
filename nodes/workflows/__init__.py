"""The workflow templates, written once as specs and rendered to ComfyUI's two formats.

``specs.py`` declares each workflow (nodes, links, groups, the note); ``render.py`` turns a spec
into the API format (what ``/prompt`` and the RunPod worker take) and the UI format (what a user
drags onto the canvas), for the CPU or the GPU. ``python -m cutout_guard.workflows`` rewrites
``workflows_cpu/``, ``workflows_gpu/`` and ``example_workflows/``; a test fails when a committed
file differs from what it writes.
"""

from .render import DEVICES, render_api, render_ui, write_all
from .specs import WORKFLOWS

__all__ = ["DEVICES", "WORKFLOWS", "render_api", "render_ui", "write_all"]
