"""``results.jsonl``: one JSON line per image event of a batch run, read back to resume.

The last line naming an ``output`` decides its state. A line without ``status`` is a finished
image: a success when its ``error`` is null, a failure otherwise (a later run tries it again). A
line with ``"status": "submitted"`` is a job sent to a RunPod endpoint and not collected yet; its
``job`` holds the id to poll instead of sending the image again. Damaged lines (a run killed in
the middle of writing one) are passed over.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from .text import encodable

RESULTS = "results.jsonl"
SUBMITTED = "submitted"


def new_entry(file: str, output: str, **fields) -> dict:
    """A finished image's line with every field a reader may expect (``null`` where nothing is
    known yet), the same for the local run and the run on endpoints: ``file``, ``output``,
    ``caption``, ``verdict`` ("safe" / "unsafe"), the report's ``image`` and ``text`` checks,
    per-stage ``seconds``, ``error`` and ``replaced_text`` (what could not be written as UTF-8); ``fields`` set some of them or add more (``job``)."""
    entry = {"file": file, "output": output, "caption": None, "verdict": None, "image": None, "text": None,
             "seconds": None, "error": None, "replaced_text": None}
    entry.update(fields)
    return entry


def last_entries(results_path: Path) -> dict[str, dict]:
    """The last readable line for each ``output`` in ``results_path`` (empty when it does not exist)."""
    last: dict[str, dict] = {}
    if not results_path.is_file():
        return last
    for line in results_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            last[entry["output"]] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return last


def is_done(entry: dict) -> bool:
    """A finished image without an error."""
    return entry.get("status") is None and entry.get("error") is None


def is_submitted(entry: dict) -> bool:
    """A job sent to an endpoint whose result was not collected (``entry["job"]`` says where)."""
    return entry.get("status") == SUBMITTED and isinstance(entry.get("job"), dict) and bool(entry["job"].get("id"))


def load_done(results_path: Path) -> set[str]:
    """Output names whose last line in ``results.jsonl`` is a success."""
    return {name for name, entry in last_entries(results_path).items() if is_done(entry)}


_lock = threading.Lock()


def append_result(results_path: Path, entry: dict) -> None:
    """Append one line and flush it (safe to call from several threads). Text that cannot be UTF-8
    (lone surrogates) becomes U+FFFD, and ``replaced_text`` says where; the rest of it is kept."""
    entry, replaced = encodable(entry)
    if replaced or "replaced_text" in entry:
        entry["replaced_text"] = {**(entry.get("replaced_text") or {}), **replaced} or None
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    with _lock, open(results_path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
