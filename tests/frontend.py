"""ComfyUI's own frontend in headless Chromium, for tests that load UI workflows the way a user does."""

from __future__ import annotations

import contextlib
import shutil

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def browser_page(comfyui):
    """(page with ComfyUI's app loaded, list collecting the page's errors); skipped without Chromium."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian package 'chromium')")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(comfyui.url, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            yield page, errors
        finally:
            browser.close()


def load_and_convert(page, workflow: dict) -> dict:
    """Load a UI workflow in the frontend: ``{"prompt": {id: {class_type, inputs}}, "missing": [...], "count": n}``."""
    converted = page.evaluate(
        """async (workflow) => {
            await window.app.loadGraphData(workflow);
            const missing = window.app.graph._nodes.filter(n => n.has_errors || n.type === undefined).map(n => n.type);
            const { output } = await window.app.graphToPrompt();
            return { output, missing, count: window.app.graph._nodes.length };
        }""",
        workflow,
    )
    prompt = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in converted["output"].items()}
    return {"prompt": prompt, "missing": converted["missing"], "count": converted["count"]}


def api_inputs(api: dict) -> dict:
    """An API-format file as ``{id: {class_type, inputs}}`` (``_meta`` dropped), to compare with a conversion."""
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
