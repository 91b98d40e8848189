"""Per-image run data that apply nodes emit as an output (their ``report``), and Save Cutout Report reads.

Each apply node (Remove Background, Image Check, Caption, Safety Check) returns, per image, a JSON
object with its ``index``, the ``stage`` it ran, the model and device settings from its loader's
handle and the ``seconds`` it took. Run data never rides in the model handle: one loader may feed
several apply nodes, and each Save node must get the data of the nodes that fed it.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


def run_report(index: int, stage: str, seconds: float, info: dict, **fields) -> str:
    """One image's run data as JSON: index, stage, the loader's info (model, device settings), fields, seconds."""
    data = {"index": index, "stage": stage, **info, **fields, "seconds": round(float(seconds), 4)}
    return json.dumps(data, ensure_ascii=False)


def read_run(text, what: str) -> dict:
    """Run data from an apply node's report; ``{}`` (logged) when it cannot be read — run data is
    informative, never a verdict (verdicts go through ``core.report.read_verdict``)."""
    try:
        data = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.warning("Save Cutout Report: the %s is not a JSON object; its model and timings are left out", what)
        return {}
    return data
