"""A loaded model as it travels between nodes: loaded on first use, released on request.

The loader node returns a ``ModelHandle``; ComfyUI's executor cache keeps it, so a second run
with the same inputs loads nothing, and dropping that cache (ComfyUI's "free memory") drops the
model. With ``keep_loaded`` off the model is closed after every run and loaded again on the next.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, TypeVar

log = logging.getLogger(__name__)

M = TypeVar("M")


class ModelHandle(Generic[M]):
    def __init__(self, describe: str, load: Callable[[], M], *, keep_loaded: bool = True, info: dict | None = None):
        self.describe = describe
        self.keep_loaded = keep_loaded
        self.info = dict(info or {})  # what the report records: model name, device settings
        self.last_run: dict = {}  # the last run: {"seconds": [per item, in batch order], ...details}
        self._load = load
        self._model: M | None = None
        self._lock = threading.Lock()
        self.loads = 0  # how many times the model was loaded (for tests and logs)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> M:
        with self._lock:
            if self._model is None:
                self._model = self._load()
                self.loads += 1
            return self._model

    def release(self) -> None:
        with self._lock:
            model, self._model = self._model, None
        if model is not None:
            close = getattr(model, "close", None)
            if close is not None:
                close()
            log.info("Released %s", self.describe)

    def done(self, seconds: list[float] | None = None, **details) -> None:
        """Call after a run, with its per-item seconds and settings (read by the report);
        releases the model unless it should stay loaded."""
        if seconds is not None:
            self.last_run = {"seconds": list(seconds), **details}
        if not self.keep_loaded:
            self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: nothing left to free
            pass

    def __repr__(self) -> str:
        return f"<{self.describe} {'loaded' if self.loaded else 'not loaded'}>"
