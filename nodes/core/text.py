"""Text that cannot be written as UTF-8, made writable the same way everywhere.

A Python ``str`` can hold lone surrogates (``"a cat \\ud800 on a mat"``: an API client can send
one as a STRING input; a file name with bytes that are not UTF-8 decodes to them). Each such
code point becomes U+FFFD (the replacement character) and everything else is kept, so the rest
of a caption survives; :func:`encodable` also says which code points were replaced where, for
the report's ``replaced_text`` field. The report, its sidecar, the PNG chunk, the command line's
``results.jsonl`` and the text Llama Guard checks all go through this one function.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def _clean(text: str) -> tuple[str, list[str]]:
    try:
        text.encode("utf-8")
        return text, []
    except UnicodeEncodeError:
        pass
    replaced = [f"U+{ord(ch):04X}" for ch in text if 0xD800 <= ord(ch) <= 0xDFFF]
    return "".join(REPLACEMENT if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text), replaced


def encodable_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD."""
    return _clean(text)[0]


def encodable(value: Any, path: str = "") -> tuple[Any, dict[str, list[str]]]:
    """A JSON-like value (dicts, lists, strings, numbers) with its text made UTF-8-writable.

    Returns the cleaned value (a new container only where something changed) and
    ``{field path: ["U+D800", ...]}`` for each string that had code points replaced, e.g.
    ``{"caption": ["U+D800"], "categories[0].name": ["U+DC80"]}`` (dict keys are cleaned too).
    """
    replaced: dict[str, list[str]] = {}
    if isinstance(value, str):
        clean, codes = _clean(value)
        if codes:
            replaced[path or "text"] = codes
        return clean, replaced
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            key_text, key_codes = _clean(key) if isinstance(key, str) else (key, [])
            child = f"{path}.{key_text}" if path else str(key_text)
            if key_codes:
                replaced[f"{child} (name)"] = key_codes
            out[key_text], inner = encodable(item, child)
            replaced.update(inner)
        return (out if replaced else value), replaced
    if isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            clean, inner = encodable(item, f"{path}[{index}]")
            items.append(clean)
            replaced.update(inner)
        return (type(value)(items) if replaced else value), replaced
    return value, replaced
