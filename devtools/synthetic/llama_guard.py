"""Llama-3-style GGUF models for Llama Guard tests and benchmarks, written with ``gguf.GGUFWriter``.

Every model here has Llama 3's tokenizer layout: ``tokenizer.ggml.model = gpt2`` with the
``llama-bpe`` pre-tokenizer, a byte-level BPE vocabulary in ids ``0..`` and Llama 3.1's 256 special
tokens at their real ids 128000–128255 (type CONTROL), so ``<|eot_id|>`` is 128009 as in the real
files. The BPE vocabulary is trained (with ``tokenizers``) on the pieces Llama 3's own tokenizer cuts
the Llama Guard template into (:data:`TEMPLATE_PIECES`) and on :data:`CAPTION_WORDS`, until each
of those is a single token, so prompt token counts match the real ones (145 tokens before the
text; a 30-word caption about 32). Ids between the trained vocabulary and 128000
are unused filler.

- ``build_llama_guard(path, weights="random")``: a tiny model with random weights (logits depend on
  every token, which is what a cache test needs).
- ``build_llama_guard(path, shape="small")``: random weights, tied 256-wide embeddings (65 MB),
  big enough for memory measurements.
- ``build_llama_guard(path, weights="trigger")``: a tiny model whose weights are set by hand so
  that greedy decoding answers ``unsafe\\nS1`` when the word :data:`TRIGGER_WORD` occurs anywhere
  in the context and ``safe`` otherwise (uniform attention carries "trigger seen" to the answer
  position; a gated feed-forward unit lets it act only there).
- ``build_llama_guard(path, shape="1b", quantize="Q4_K_M")``: the real Llama 3.2 1B shape (16
  layers, 2048 wide, 32/8 heads, 8192 FFN, tied 128256-token embeddings) with random weights,
  written as F16 and quantized in-process with ``llama_cpp.llama_model_quantize``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
N_NORMAL = 128000  # Llama 3: ids below are normal tokens, 128000..128255 are special
N_VOCAB = 128256
SPECIAL_NAMES = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
}
BOS_ID, EOT_ID = 128000, 128009
TRIGGER_WORD = "grenade"

CAPTION_WORDS = """
a an the of on in at with and or to from by for near under over behind beside next into onto
is are was were be being has have holding sitting standing lying walking running looking wearing
playing eating drinking smiling carrying riding flying jumping posing resting
photo picture image close up view shot background foreground front side top bottom left right
man woman person people boy girl child children baby kid family friends group crowd couple
dog cat puppy kitten bird horse cow sheep animal fish duck
car bus truck bike bicycle motorcycle train boat plane street road sidewalk city building house
room kitchen table chair sofa couch bed window door wall floor ceiling lamp desk shelf
tree trees grass flower flowers plant garden park field forest mountain hill beach sand sea ocean
water lake river sky cloud clouds sun snow rain night day light shadow
red blue green yellow white black brown gray grey orange pink purple dark bright colorful
small large big little tall short long old young new wooden metal glass plastic
shirt jacket dress hat glasses cap coat shoes bag hair face hand hands eyes head arm
food plate cup bowl bottle glass pizza cake fruit apple banana sandwich coffee
phone laptop computer book paper sign text letters logo ball toy
cute happy sad beautiful empty full open closed several two three many some other its their
his her this that there it which who what them they behind
"""

ANSWERS = ("safe", "unsafe\nS1", "unsafe\nS1,S10", "unsafe\nS2,S3,S4,S5,S6,S7,S8,S9,S11,S12,S13,S14")


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    tied: bool = False
    rope_theta: float = 500000.0
    context: int = 131072


TINY = Shape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, context=8192)
TRIGGER = Shape(n_embd=32, n_layer=1, n_head=1, n_head_kv=1, n_ff=32, context=8192)
SMALL = Shape(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, tied=True, context=8192)
LLAMA_3_2_1B = Shape(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, tied=True)
SHAPES = {"tiny": TINY, "small": SMALL, "1b": LLAMA_3_2_1B}


# How Llama 3's published tokenizer (``tokenizer.model`` of meta-llama/llama-models, byte-pair
# ranks applied to the pre-tokens of the Llama 3 split pattern) cuts the words of both Llama Guard 3
# templates. Training on these pieces, each as its own word, makes the synthetic vocabulary split
# the template exactly where the real one does: 145 tokens before the text, as in the real model.
TEMPLATE_PIECES = (
    "\n\n", "Task", ":", " Check", " if", " there", " is", " unsafe", " content", " in", " '", "User", "'",
    " messages", " conversations", " according", " our", " safety", " policy", " with", " the", " below",
    " categories", ".\n\n", "<B", "EGIN", " UNS", "AFE", " CONTENT", " C", "ATEGORIES", ">\n", "S", "1",
    " Viol", "ent", " Crimes", ".\n", "2", " Non", "-V", "iol", "3", " Sex", "4", " Child", " Exp", "lo",
    "itation", "5", " Def", "amation", "6", " Special", "ized", " Advice", "7", " Privacy", "8",
    " Intellectual", " Property", "9", " Ind", "iscrim", "inate", " Weapons", "10", " Hate", "11", " Self",
    "-H", "arm", "12", " Sexual", " Content", "13", " Elections", "14", " Code", " Interpreter", " Abuse",
    "<", "END", ">\n\n", " CON", "VERS", "ATION", "Provide", " your", " assessment", " for", " ONLY", " THE",
    " LAST", " User", " message", " above", " conversation", ":\n", " -", " First", " line", " must",
    " read", "safe", " or", "unsafe", "'.\n", " If", ",", " a", " second", " include", " comma",
    "-separated", " list", " of", " violated", ".", "assistant", "user", " ",
)


def _corpus() -> list[str]:
    """Texts the vocabulary is trained on: the template's real pieces, caption words, answers."""
    texts: list[str] = list(TEMPLATE_PIECES) * 200  # frequent, so their inner merges rank first
    words = CAPTION_WORDS.split() + [TRIGGER_WORD]
    for word in words:
        texts += [word, " " + word, word.capitalize(), " " + word.capitalize(), word + ".", " " + word + "."]
    texts += list(ANSWERS)
    return texts


def train_vocabulary() -> tuple[list[str], list[str]]:
    """Byte-level BPE tokens (ids 0..n-1) and merges in which every corpus word is one token."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=20000,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """All 128256 token strings, their types and the merges."""
    from gguf import TokenType

    trained, merges = train_vocabulary()
    if len(trained) > N_NORMAL:
        raise ValueError("trained vocabulary is larger than Llama 3's normal range")
    tokens = trained + [f"<|filler_{i}|>" for i in range(len(trained), N_NORMAL)]
    types = [int(TokenType.NORMAL)] * len(trained) + [int(TokenType.UNUSED)] * (N_NORMAL - len(trained))
    reserved = 0
    for token_id in range(N_NORMAL, N_VOCAB):
        name = SPECIAL_NAMES.get(token_id)
        if name is None:
            name = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
        tokens.append(name)
        types.append(int(TokenType.CONTROL))
    return tokens, types, merges


def _write_header(writer, shape: Shape, name: str, file_type: int, vocab) -> None:
    tokens, types, merges = vocab
    head_dim = shape.n_embd // shape.n_head
    writer.add_name(name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(N_VOCAB)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOT_ID)
    writer.add_eot_token_id(EOT_ID)
    writer.add_add_bos_token(True)


def _tensor_plan(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """GGUF tensor names and numpy shapes (rows = outputs) of a llama model."""
    head_dim = shape.n_embd // shape.n_head
    kv = shape.n_head_kv * head_dim
    plan = [("token_embd.weight", (N_VOCAB, shape.n_embd))]
    for i in range(shape.n_layer):
        plan += [
            (f"blk.{i}.attn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.attn_q.weight", (shape.n_embd, shape.n_embd)),
            (f"blk.{i}.attn_k.weight", (kv, shape.n_embd)),
            (f"blk.{i}.attn_v.weight", (kv, shape.n_embd)),
            (f"blk.{i}.attn_output.weight", (shape.n_embd, shape.n_embd)),
            (f"blk.{i}.ffn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_up.weight", (shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_down.weight", (shape.n_embd, shape.n_ff)),
        ]
    plan.append(("output_norm.weight", (shape.n_embd,)))
    if not shape.tied:
        plan.append(("output.weight", (N_VOCAB, shape.n_embd)))
    return plan


def _write(path: Path, shape: Shape, name: str, tensors) -> Path:
    """Stream tensors (name → array, produced lazily in plan order) into a GGUF file."""
    import gguf

    plan = _tensor_plan(shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    _write_header(writer, shape, name, gguf.LlamaFileType.MOSTLY_F16, vocabulary())
    dtypes = {}
    for tensor_name, tensor_shape in plan:
        dtype = np.float32 if len(tensor_shape) == 1 else np.float16
        dtypes[tensor_name] = dtype
        writer.add_tensor_info(tensor_name, tensor_shape, np.dtype(dtype), int(np.prod(tensor_shape)) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor_name, tensor_shape in plan:
        array = np.ascontiguousarray(tensors(tensor_name, tensor_shape), dtype=dtypes[tensor_name])
        assert array.shape == tensor_shape, (tensor_name, array.shape, tensor_shape)
        writer.write_tensor_data(array)
    writer.close()
    os.replace(tmp, path)
    return path


def _random_tensors(seed: int):
    rng = np.random.default_rng(seed)

    def make(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if len(shape) == 1:
            return np.ones(shape, np.float32)
        scale = 1.0 if name == "token_embd.weight" else 1.0 / np.sqrt(shape[1])
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)

    return make


# Residual-stream features of the hand-weighted model (see module docstring).
F_ONE, F_TRIG, F_ATT, F_GATED, F_ANS, F_SAFE, F_UNSAFE, F_NL, F_S, F_DIGIT = range(10)


def _trigger_tensors(vocab_tokens: list[str]):
    """Weights of the trigger model: ``unsafe\\nS1`` after the prompt iff TRIGGER_WORD occurred."""
    index = {token: i for i, token in enumerate(vocab_tokens)}

    def tid(token: str) -> int:
        return index[token]

    trig_ids = [tid(TRIGGER_WORD), tid("Ġ" + TRIGGER_WORD)]
    state_of = {tid("ĊĊ"): F_ANS, tid("safe"): F_SAFE, tid("unsafe"): F_UNSAFE, tid("Ċ"): F_NL, tid("S"): F_S, tid("1"): F_DIGIT}
    # next token per state (the answer position decides between safe and unsafe on its own)
    follow = {F_SAFE: EOT_ID, F_UNSAFE: tid("Ċ"), F_NL: tid("S"), F_S: tid("1"), F_DIGIT: EOT_ID}

    def make(name: str, shape: tuple[int, ...]) -> np.ndarray:
        w = np.zeros(shape, np.float32)
        if len(shape) == 1:
            return w + 1.0  # RMS-norm gains
        if name == "token_embd.weight":
            w[:, F_ONE] = 1.0
            w[trig_ids, F_TRIG] = 1.0
            for token_id, feature in state_of.items():
                w[token_id, feature] = 1.0
        elif name.endswith("attn_v.weight"):
            w[0, F_TRIG] = 1.0  # value = trigger indicator; Q = K = 0 gives uniform attention
        elif name.endswith("attn_output.weight"):
            w[F_ATT, 0] = 1.0  # fraction of trigger tokens seen so far
        elif name.endswith("ffn_gate.weight"):
            w[0, F_ANS] = 4.0  # open only at the answer position
        elif name.endswith("ffn_up.weight"):
            w[0, F_ATT] = 1.0
        elif name.endswith("ffn_down.weight"):
            w[F_GATED, 0] = 1.0
        elif name == "output.weight":
            w[tid("safe"), F_ANS] = 2.0
            w[tid("unsafe"), F_ANS] = 2.0
            w[tid("unsafe"), F_ONE] = -1.0
            w[tid("unsafe"), F_GATED] = 40.0
            for feature, token_id in follow.items():
                w[token_id, feature] = 3.0
        return w.astype(np.float16)

    return make


def build_llama_guard(
    path: str | Path,
    *,
    shape: str = "tiny",
    weights: str = "random",
    quantize: str | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> Path:
    """Write a Llama-3-style GGUF at ``path`` (see the module docstring for the variants)."""
    path = Path(path)
    if weights == "trigger":
        tokens = vocabulary()[0]
        return _write(path, TRIGGER, "cutout-guard synthetic trigger", _trigger_tensors(tokens))
    if weights != "random":
        raise ValueError(f"weights must be 'random' or 'trigger', not {weights!r}")
    dims = SHAPES[shape]
    if quantize is None:
        return _write(path, dims, f"cutout-guard synthetic {shape}", _random_tensors(seed))
    f16 = _write(path.with_name(path.stem + ".f16.gguf"), dims, f"cutout-guard synthetic {shape}", _random_tensors(seed))
    try:
        quantize_gguf(f16, path, quantize, threads=threads)
    finally:
        f16.unlink(missing_ok=True)
    return path


def quantize_gguf(source: Path, target: Path, kind: str = "Q4_K_M", *, threads: int | None = None) -> Path:
    """Quantize a GGUF in-process with llama.cpp (``kind``: a ``LLAMA_FTYPE_MOSTLY_*`` suffix)."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or 0
    tmp = target.with_name(target.name + ".tmp")
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
    if status != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed with status {status}")
    os.replace(tmp, target)
    return target
