"""Llama Guard 3 on llama-cpp-python: ``LlamaGuard.load(path, n_gpu_layers=...).check(text) -> Verdict``.

How a check runs:

1. The prompt is Meta's Llama Guard 3 template (:mod:`.llama_guard_prompt`), tokenized by the pack:
   the text under check with special tokens disabled, so it can never close the user turn.
   llama-cpp-python's chat-completion path is not used (it tokenizes the rendered prompt with
   special tokens enabled, and its template guessing can silently pick another format).
2. The prefix (everything before the text) is evaluated once per loaded model; each check removes
   the KV cells after it and evaluates only the text and the closing part of the template.
3. ``p_unsafe = P(unsafe) / (P(safe) + P(unsafe))`` from the next-token distribution at the answer
   position, using the first token of each word (one token each in Llama 3's vocabulary).
4. Greedy decoding then writes the answer: when the first token is "safe" (and ``p_unsafe`` is
   below the threshold) only the end of turn is read; when it is "unsafe", or it is "safe" but
   ``p_unsafe`` reaches the threshold, the answer is continued from "unsafe" to get the category
   line. Any other first token is not decoded further.
5. Blank text (empty or whitespace only) is never checked and never safe: the verdict is unsafe,
   ``p_unsafe`` is None and the reason says the text was empty.
6. Fail closed: an answer that does not parse as ``safe`` or ``unsafe\\nS<n>[,S<n>...]`` gives an
   unsafe verdict with the reason. Verdict: unsafe when ``p_unsafe >= threshold`` or the answer
   says unsafe; safe only when the answer is "safe" and ``p_unsafe < threshold``. The policy (which
   categories count) applies after generation: an unsafe answer whose listed categories all lie
   outside the policy is safe; one without a parsed category list stays unsafe.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.cpu import resolve_threads
from ..core.errors import BadInput, DeviceUnavailable, MissingDependency, ModelCorrupt
from ..core.vocab import DEFAULT_THRESHOLD, LLAMA_SOURCE_BUILD_MINUTES, LLAMA_SOURCE_COMMAND
from ..core.text import encodable_text
from .llama_guard_prompt import HAZARDS, Template, parse_policy, template_for, tokenize_body, tokenize_prefix

log = logging.getLogger(__name__)

SAFE_END_TOKENS = 4  # "safe" then at most this many tokens before the end of turn
CATEGORY_TOKENS = 48  # enough for "unsafe\nS1,S2,...,S14"
BLANK_REASON = "the text is empty (an empty caption): nothing was checked, so it is not safe"

INSTALL_CPU = "pip install llama-cpp-python"
INSTALL_CUDA = 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'


def import_llama_cpp():
    """The ``llama_cpp`` module, or MissingDependency saying what to install."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency(
            f"Llama Guard needs llama-cpp-python, which is not installed — run `{LLAMA_SOURCE_COMMAND}` in the "
            f"Cutout Guard folder (it builds the CPU or CUDA build, {LLAMA_SOURCE_BUILD_MINUTES} min, showing progress), or `{INSTALL_CPU}` "
            f"for a prebuilt CPU wheel (`{INSTALL_CUDA}` for NVIDIA GPUs)"
        ) from None
    return llama_cpp


@dataclass(frozen=True)
class Verdict:
    """The result of one check. ``categories`` are the violated codes that count under the policy."""

    safe: bool
    categories: tuple[str, ...] = ()
    p_unsafe: float | None = None  # P(unsafe)/(P(safe)+P(unsafe)) at the first answer token
    answer: str = ""  # what the model wrote (forced to start with "unsafe" when p_unsafe >= threshold)
    reason: str = ""  # how the verdict was reached, in words
    model_categories: tuple[str, ...] = ()  # every code the model listed, before the policy
    threshold: float = DEFAULT_THRESHOLD
    policy: tuple[str, ...] = field(default_factory=lambda: tuple(HAZARDS))
    prompt_tokens: int = 0  # prompt tokens evaluated by this check (the cached prefix not counted)
    generated_tokens: int = 0  # answer tokens fed back to the model

    def named_categories(self, hazards=HAZARDS) -> list[dict]:
        return [{"code": code, "name": hazards.get(code, code)} for code in self.categories]

    def to_dict(self, hazards=HAZARDS) -> dict:
        return {
            "safe": self.safe,
            "p_unsafe": self.p_unsafe,
            "threshold": self.threshold,
            "categories": self.named_categories(hazards),
            "model_categories": list(self.model_categories),
            "policy": list(self.policy),
            "answer": self.answer,
            "reason": self.reason,
            "tokens": {"prompt": self.prompt_tokens, "generated": self.generated_tokens},
        }


@dataclass(frozen=True)
class Answer:
    """A parsed answer: ``label`` is "safe", "unsafe" or None (unparseable, with ``error``)."""

    label: str | None
    categories: tuple[str, ...] = ()
    error: str = ""


def parse_answer(text: str, template: Template) -> Answer:
    """Parse Llama Guard's output: ``safe`` or ``unsafe`` + a line of comma-separated codes."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or not lines[0]:
        return Answer(None, error="empty answer")
    if lines[0] == "safe" and len(lines) == 1:
        return Answer("safe")
    if lines[0] != "unsafe":
        return Answer(None, error=f"answer {text.strip()[:80]!r} is neither 'safe' nor 'unsafe'")
    if len(lines) == 1 or not lines[1]:
        return Answer(None, error="answer says unsafe but lists no category")
    if len(lines) > 2:
        return Answer(None, error=f"answer {text.strip()[:80]!r} has more than two lines")
    codes = tuple(code.strip().upper() for code in lines[1].split(","))
    unknown = [code for code in codes if code not in template.hazards]
    if unknown:
        return Answer(None, error=f"answer lists unknown categories {', '.join(unknown)!s}")
    return Answer("unsafe", tuple(dict.fromkeys(codes)))


def decide(
    answer: Answer,
    p_unsafe: float,
    *,
    threshold: float,
    policy: tuple[str, ...],
) -> tuple[bool, tuple[str, ...], str]:
    """(safe, counted categories, reason) from a parsed answer, p_unsafe and the policy."""
    if answer.label is None:
        return False, (), f"unparseable answer ({answer.error}): unsafe by default"
    if answer.label == "safe":
        if p_unsafe >= threshold:
            return False, (), f"p_unsafe {p_unsafe:.3f} >= threshold {threshold} though the answer was 'safe'"
        return True, (), "answer 'safe'"
    counted = tuple(code for code in answer.categories if code in policy)
    if not counted:
        return True, (), f"unsafe only in categories outside the policy ({', '.join(answer.categories)})"
    if p_unsafe >= threshold:
        return False, counted, f"answer 'unsafe', p_unsafe {p_unsafe:.3f} >= threshold {threshold}"
    return False, counted, f"answer 'unsafe' (p_unsafe {p_unsafe:.3f} is below threshold {threshold})"


def llama_class(llama_cpp, repack: bool | None):
    """``llama_cpp.Llama``, or a subclass whose models load with llama.cpp's weight repacking on or off.

    On AVX2 CPUs llama.cpp keeps a second, repacked copy of Q4_0/Q4_K weights for faster kernels
    (``llama_model_params.use_extra_bufts``, its "CPU_REPACK" buffer): for the 8B guard that is
    about 3 GiB more resident memory, and the benchmark (``cutout-guard bench --repack``) measured
    no gain in check time on 2 cores. llama-cpp-python 0.3.x has no keyword for it. ``Llama``
    starts its ``model_params`` from ``llama_model_default_params()`` and loads the model from
    them; the subclass sets the field on its own instance's copy as that copy is made, so nothing
    shared changes and other packs' loads in the same process keep llama.cpp's default.
    """
    if repack is None:
        return llama_cpp.Llama
    if not hasattr(llama_cpp.llama_model_default_params(), "use_extra_bufts"):
        log.warning("llama-cpp-python %s has no use_extra_bufts parameter; repacking left as is", llama_cpp.__version__)
        return llama_cpp.Llama

    class Llama(llama_cpp.Llama):
        @property
        def model_params(self):
            return self.__dict__["model_params"]

        @model_params.setter
        def model_params(self, params):
            params.use_extra_bufts = repack
            self.__dict__["model_params"] = params

    return Llama


class LlamaGuard:
    """A loaded Llama Guard GGUF. Create with :meth:`load`; free with :meth:`close`."""

    def __init__(self, llm, path: Path, template: Template, n_gpu_layers: int):
        self._llm = llm
        self.path = path
        self.template = template
        self.n_gpu_layers = n_gpu_layers
        self._lock = threading.Lock()
        llama_cpp = import_llama_cpp()
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._logits_ith = llama_cpp.llama_get_logits_ith
        self.n_vocab = llm.n_vocab()
        if len(self.tokenize("<|eot_id|>", True)) != 1:
            raise ModelCorrupt(
                f"Llama Guard: {path} has no Llama 3 <|eot_id|> token, so it is not a Llama Guard 3 model — "
                "choose a Llama Guard 3 GGUF (for example the default Llama-Guard-3-8B.Q4_K_M.gguf)"
            )
        self.safe_token = self._first_token("safe")
        self.unsafe_token = self._first_token("unsafe")
        if self.safe_token == self.unsafe_token:
            raise ModelCorrupt(f"Llama Guard: {path} does not tell 'safe' from 'unsafe' at the first token — choose a Llama Guard 3 GGUF")
        self.prefix_tokens = tokenize_prefix(self.tokenize, template)
        self.prefix_evaluations = 0  # how many times the prefix was evaluated (once per load when cached)
        self._prefix_ready = False

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        n_gpu_layers: int = 0,
        n_ctx: int = 2048,
        threads: int | None = None,
        n_batch: int = 512,
        repack: bool | None = None,
    ) -> "LlamaGuard":
        """Load a GGUF (memory-mapped) and evaluate the prompt prefix once.

        ``repack``: llama.cpp's repacked weight copy; None = off on the CPU (it costs memory and
        bought no speed here, see :func:`llama_class`), llama.cpp's default with GPU layers.
        """
        llama_cpp = import_llama_cpp()
        path = Path(path)
        if n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
            raise DeviceUnavailable(
                f"Llama Guard: n_gpu_layers={n_gpu_layers} asks for the GPU, but the installed llama-cpp-python "
                f"is a CPU-only build — install the CUDA build (`python install.py`, or `{INSTALL_CUDA}`), "
                "or set n_gpu_layers to 0 (the CPU workflow)"
            )
        if not path.is_file():
            raise ModelCorrupt(f"Llama Guard: {path} is not a file")
        n_threads = resolve_threads(threads)
        if repack is None and n_gpu_layers == 0:
            repack = False
        try:
            llm = llama_class(llama_cpp, repack)(
                model_path=str(path),
                n_gpu_layers=n_gpu_layers,
                n_ctx=n_ctx,
                n_batch=min(n_batch, n_ctx),
                n_ubatch=min(n_batch, n_ctx),
                n_threads=n_threads,
                n_threads_batch=n_threads,
                use_mmap=True,
                logits_all=False,
                verbose=False,
            )
        except ValueError as exc:
            raise ModelCorrupt(f"Llama Guard: llama.cpp could not load {path} ({exc}) — is it a complete GGUF file?") from None
        metadata = dict(getattr(llm, "metadata", {}) or {})
        template = template_for(metadata, path.name)
        log.info("Loaded Llama Guard %s (%s, %d threads, n_gpu_layers=%d)", path.name, template.name, n_threads, n_gpu_layers)
        try:
            guard = cls(llm, path, template, n_gpu_layers)
        except Exception:
            llm.close()
            raise
        try:
            with guard._lock:
                guard.evaluate_prefix()
        except Exception:
            guard.close()
            raise
        return guard

    def tokenize(self, text: str, special: bool) -> list[int]:
        return self.llm.tokenize(encodable_text(text).encode("utf-8"), add_bos=False, special=special)

    def detokenize(self, tokens) -> str:
        return self.llm.detokenize(list(tokens), special=False).decode("utf-8", errors="replace")

    def _first_token(self, word: str) -> int:
        tokens = self.tokenize(word, False)
        if len(tokens) > 1:
            log.warning("Llama Guard: %r is %d tokens in this vocabulary; using its first token", word, len(tokens))
        return tokens[0]

    # ------------------------------------------------------------------ evaluation

    @property
    def llm(self):
        if self._llm is None:
            raise RuntimeError("Llama Guard model is closed")
        return self._llm

    def evaluate_prefix(self) -> int:
        """Evaluate the prompt prefix now (done at load; again only after an uncached check)."""
        llm = self.llm
        llm.n_tokens = 0
        llm.eval(list(self.prefix_tokens))
        self.prefix_evaluations += 1
        self._prefix_ready = True
        return len(self.prefix_tokens)

    def _last_logits(self) -> np.ndarray:
        pointer = self._logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float64)

    def _feed(self, token: int) -> np.ndarray:
        self.llm.eval([token])
        return self._last_logits()

    def prompt_logits(self, text: str, *, reuse_prefix: bool = True) -> tuple[np.ndarray, int]:
        """Next-token logits at the answer position and the number of prompt tokens evaluated."""
        body = tokenize_body(self.tokenize, self.template, text)
        total = len(self.prefix_tokens) + len(body)
        if total + CATEGORY_TOKENS > self.llm.n_ctx():
            raise BadInput(
                f"Llama Guard: the text is too long ({total} prompt tokens, n_ctx {self.llm.n_ctx()}) — raise n_ctx "
                "on Load Llama Guard or shorten the text"
            )
        evaluated = 0
        if reuse_prefix and not self._prefix_ready:
            evaluated += self.evaluate_prefix()
        llm = self.llm
        if reuse_prefix:
            llm.n_tokens = len(self.prefix_tokens)  # eval() drops the KV cells after this point
            llm.eval(list(body))
            evaluated += len(body)
        else:
            llm.n_tokens = 0
            self._prefix_ready = False
            llm.eval(list(self.prefix_tokens) + list(body))
            evaluated += total
        return self._last_logits(), evaluated

    def p_unsafe(self, logits: np.ndarray) -> float:
        """P(unsafe)/(P(safe)+P(unsafe)) from logits: a logistic of their difference (stable)."""
        diff = float(logits[self.safe_token] - logits[self.unsafe_token])
        if not math.isfinite(diff):
            return 1.0  # broken logits: fail closed
        if diff > 700:
            return 0.0
        return 1.0 / (1.0 + math.exp(diff))

    def _continue(self, first: int, logits: np.ndarray, limit: int) -> tuple[list[int], int, bool]:
        """Greedy continuation after ``first``: (tokens before the end of turn, tokens fed, ended)."""
        tokens, fed = [first], 0
        while fed < limit:
            logits = self._feed(tokens[-1])
            fed += 1
            nxt = int(np.argmax(logits))
            if self._is_eog(self._vocab, nxt):
                return tokens, fed, True
            tokens.append(nxt)
        return tokens, fed, False

    def check(
        self,
        text: str,
        *,
        policy: str | tuple[str, ...] | list[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        reuse_prefix: bool = True,
    ) -> Verdict:
        """Check one text (a caption) as the User turn. ``policy``: the category codes that count
        (``"all"``, ``"S1,S10-S12"`` or a list of codes; default all)."""
        if not isinstance(text, str):
            raise BadInput(f"Llama Guard checks text, got {type(text).__name__}")
        if not 0.0 <= threshold <= 1.0:
            raise BadInput(f"threshold must be between 0 and 1, got {threshold}")
        if policy is None or isinstance(policy, str):
            try:
                policy = parse_policy(policy, self.template)
            except ValueError as exc:
                raise BadInput(f"Llama Guard policy: {exc}") from None
        else:
            unknown = [c for c in policy if c not in self.template.hazards]
            if unknown:
                raise BadInput(f"Llama Guard policy: unknown codes {unknown}; known {list(self.template.hazards)}")
            policy = tuple(c for c in self.template.hazards if c in policy)
        if not text.strip():  # nothing to judge is never judged safe
            return Verdict(safe=False, p_unsafe=None, reason=BLANK_REASON, threshold=threshold, policy=policy)

        with self._lock:
            logits, evaluated = self.prompt_logits(text, reuse_prefix=reuse_prefix)
            p = self.p_unsafe(logits)
            first = int(np.argmax(logits))
            forced = False
            if first == self.safe_token and p < threshold:
                tokens, fed, ended = self._continue(first, logits, SAFE_END_TOKENS)
            elif first == self.unsafe_token or first == self.safe_token:  # "safe" here means p >= threshold
                forced = first == self.safe_token
                tokens, fed, ended = self._continue(self.unsafe_token, logits, CATEGORY_TOKENS)
            else:
                tokens, fed, ended = [first], 0, None  # neither word: fail closed without decoding further
            answer_text = self.detokenize(tokens)

        if ended is None:
            parsed = Answer(None, error=f"answer starts with token {first} ({answer_text!r}), neither 'safe' nor 'unsafe'")
        elif not ended:
            parsed = Answer(None, error=f"no end of turn after {answer_text.strip()[:80]!r}")
        else:
            parsed = parse_answer(answer_text, self.template)
        safe, counted, reason = decide(parsed, p, threshold=threshold, policy=policy)
        if forced:
            reason += "; answer continued from 'unsafe' because p_unsafe reached the threshold"
        return Verdict(
            safe=safe,
            categories=counted,
            p_unsafe=p,
            answer=answer_text,
            reason=reason,
            model_categories=parsed.categories,
            threshold=threshold,
            policy=policy,
            prompt_tokens=evaluated,
            generated_tokens=fed,
        )

    def close(self) -> None:
        """Free the context and unmap the model."""
        llm, self._llm = self._llm, None
        self._prefix_ready = False
        if llm is not None:
            llm.close()
            del llm
