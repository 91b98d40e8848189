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
        self.info = dict(info or {})  # the model name and device settings, copied into each run's report
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

    def done(self) -> None:
        """Call after a run: releases the model unless it should stay loaded. (Run data — timings,
        settings — travels in the apply node's own outputs, never in the handle: one loader may feed
        several apply nodes.)"""
        if not self.keep_loaded:
            self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: nothing left to free
            pass

    def __repr__(self) -> str:
        return f"<{self.describe} {'loaded' if self.loaded else 'not loaded'}>"


def load_torch_model(label: str, model: str, precision: str, device: str, load: Callable[[str], M], *, keep_loaded: bool) -> ModelHandle[M]:
    """A loaded handle for a torch engine (Florence-2, the image guard), loaded now so a bad folder,
    precision or device is reported on the loader node. ``device`` ``default`` is ComfyUI's device;
    ``load(torch_device)`` builds the engine. ``info`` records the precision and device that run."""
    from . import host

    torch_device = str(host.torch_device()) if device == "default" else device
    handle = ModelHandle(f"{label} {model} ({precision} on {torch_device})", lambda: load(torch_device), keep_loaded=keep_loaded)
    loaded = handle.get()
    handle.info = {"model": model, "precision": loaded.running_precision, "device": str(loaded.device)}
    handle.done()
    return handle
