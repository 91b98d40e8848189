"""Node adapters for Llama Guard 3: Load Llama Guard and Safety Check (Llama Guard).

Safety Check takes its inputs as lists (ComfyUI ``INPUT_IS_LIST``): N captions give N verdicts in
the same order, each output a list matched by index to the images the captions came from. It is an
output node: it runs even when nothing consumes its outputs, and its JSON reports appear in the UI
and in the prompt's history (``outputs[node]["text"]``) for API callers.
"""

from __future__ import annotations

import logging
import time

from . import host
from ..core import vocab
from ..core.errors import BadInput
from ..core.models import get_kind
from .handle import ModelHandle
from .runs import run_report

log = logging.getLogger(__name__)

LLAMA_GUARD_TYPE = "CUTOUT_GUARD_LLAMA_GUARD"
KIND = "llama_guard"


class LoadLlamaGuard:
    """Loads a Llama Guard 3 GGUF with llama-cpp-python, on the CPU or (n_gpu_layers -1) the GPU."""

    DESCRIPTION = (
        "Loads a Llama Guard 3 safety classifier (GGUF, memory-mapped). The default 8B Q4_K_M model "
        "downloads on first use (4.9 GB). Needs llama-cpp-python (install.py installs it)."
    )
    CATEGORY = host.CATEGORY
    RETURN_TYPES = (LLAMA_GUARD_TYPE,)
    RETURN_NAMES = ("llama_guard",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        default = get_kind(KIND).defaults[0]
        return {
            "required": {
                "model": (
                    host.model_choices(KIND),
                    {
                        "default": default.name,
                        "tooltip": f"GGUF file in models/LLM. {default.name} downloads from {default.repo_id} when missing.",
                    },
                ),
                "n_gpu_layers": (
                    "INT",
                    {
                        "default": 0,
                        "min": -1,
                        "max": 1000,
                        "tooltip": "0 = CPU only. -1 = every layer on the GPU (needs a CUDA build of llama-cpp-python). N = the first N layers.",
                    },
                ),
                "n_ctx": (
                    "INT",
                    {
                        "default": 2048,
                        "min": 512,
                        "max": 131072,
                        "step": 256,
                        "tooltip": "Context length in tokens: the prompt (about 250 tokens) plus the text. Raise it for very long captions.",
                    },
                ),
                "threads": host.threads_input("the CPUs this process may use (container quota aware)"),
            },
            "optional": {
                "keep_loaded": host.KEEP_LOADED,
            },
        }

    def load(self, model, n_gpu_layers, n_ctx, threads, keep_loaded=True):
        from ..engines.llama_guard import LlamaGuard, import_llama_cpp

        import_llama_cpp()  # say what to install before downloading gigabytes
        path = host.model_path(KIND, model)
        device = "CPU" if n_gpu_layers == 0 else f"GPU, n_gpu_layers={n_gpu_layers}"
        handle = ModelHandle(
            f"Llama Guard {model} ({device})",
            lambda: LlamaGuard.load(path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, threads=threads),
            keep_loaded=keep_loaded,
            info={"model": model, "n_gpu_layers": n_gpu_layers},
        )
        handle.get()  # load now, so a bad file or device is reported on this node
        handle.done()
        return (handle,)


def _per_item(values, count: int, name: str) -> list:
    """One value for every text: a single value is repeated; N values are matched by index."""
    values = list(values)
    if len(values) == 1:
        return values * count
    if len(values) == count:
        return values
    raise BadInput(f"Safety Check (Llama Guard): {len(values)} values for '{name}' but {count} texts — give one, or one per text")


def category_text(verdict, hazards) -> str:
    """``"S1: Violent Crimes, S10: Hate"``, or ``""`` when no category counts."""
    return ", ".join(f"{c['code']}: {c['name']}" for c in verdict.named_categories(hazards))


class SafetyCheck:
    """Checks each text (caption) with Llama Guard 3 and returns one verdict per text."""

    DESCRIPTION = (
        "Checks text with Llama Guard 3 (as the User turn of Meta's template). Unsafe when the model says so "
        "or P(unsafe) reaches the threshold; an answer that cannot be read, and blank text (an empty caption), "
        "count as unsafe."
    )
    CATEGORY = host.CATEGORY
    INPUT_IS_LIST = True
    OUTPUT_NODE = True  # always runs, and shows each verdict in the UI and in the prompt's history
    RETURN_TYPES = ("BOOLEAN", "STRING", "FLOAT", "STRING")
    RETURN_NAMES = ("safe", "categories", "p_unsafe", "report")
    OUTPUT_IS_LIST = (True, True, True, True)
    OUTPUT_TOOLTIPS = (
        "True when the text is safe under the policy and threshold (one per text).",
        "Violated categories that count, as 'S1: Violent Crimes, S10: Hate'; empty when safe.",
        "P(unsafe) / (P(safe) + P(unsafe)) at the model's first answer token, 0..1; 1.0 for blank text, which is never checked.",
        "JSON: safe, p_unsafe, threshold, categories [{code, name}], the model's answer and the reason.",
    )
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "llama_guard": (LLAMA_GUARD_TYPE, {"tooltip": "From Load Llama Guard."}),
                "text": ("STRING", {"multiline": True, "default": "", "tooltip": "The text to check, e.g. a caption. A list of N texts gives N verdicts in order."}),
            },
            # Optional so that API prompts saved before 'categories' became 'policy' still validate;
            # in this order so that the UI's saved widget values (by position) still fit.
            "optional": {
                "policy": (
                    "STRING",
                    {
                        "default": vocab.ALL_CATEGORIES,
                        "tooltip": "Hazard categories that count: 'all', or codes and ranges like 'S1,S3,S10-S12'. "
                        "The model always sees S1-S14; an answer naming only other categories counts as safe.",
                    },
                ),
                "threshold": (
                    "FLOAT",
                    {
                        "default": vocab.DEFAULT_THRESHOLD,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Unsafe when P(unsafe) >= threshold (or the model answers unsafe). Lower = stricter.",
                    },
                ),
            },
            "hidden": {"categories": ("STRING", {"tooltip": "Deprecated: the old name of 'policy'."})},
        }

    def run(self, llama_guard, text, policy=None, threshold=None, categories=None):
        handle = llama_guard[0]
        texts = list(text)
        count = len(texts)
        policy = host.renamed(policy, categories, "Safety Check (Llama Guard)", "categories", "policy", [vocab.ALL_CATEGORIES])
        policies = _per_item(policy, count, "policy")
        thresholds = _per_item(threshold if threshold is not None else [vocab.DEFAULT_THRESHOLD], count, "threshold")
        model = handle.get()
        progress = host.Progress(count)
        safe_out, categories_out, p_out, reports = [], [], [], []
        try:
            for index, (item, counted, limit) in enumerate(zip(texts, policies, thresholds)):
                host.check_interrupt()
                start = time.perf_counter()
                verdict = model.check(str(item), policy=str(counted), threshold=float(limit))
                hazards = model.template.hazards
                info = {"model": handle.info.get("model", model.path.name), "n_gpu_layers": handle.info.get("n_gpu_layers", model.n_gpu_layers)}
                reports.append(run_report(index, "safety_check", time.perf_counter() - start, info, text=item, **verdict.to_dict(hazards)))
                safe_out.append(bool(verdict.safe))
                categories_out.append(category_text(verdict, hazards))
                p_out.append(1.0 if verdict.p_unsafe is None else float(verdict.p_unsafe))
                log.info("Llama Guard [%d]: %s (p_unsafe %s) %s", index, "safe" if verdict.safe else "UNSAFE",
                         "-" if verdict.p_unsafe is None else f"{verdict.p_unsafe:.3f}", verdict.reason)
                progress.step()
        finally:
            handle.done()
        return {"ui": {"text": reports}, "result": (safe_out, categories_out, p_out, reports)}
