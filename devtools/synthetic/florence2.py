"""Florence-2 model folders with random weights, in the layout of ``florence-community/Florence-2-*``.

``build_florence2(folder)`` writes a tiny model (a few hundred kilobytes, 64² input) that loads
with transformers' native ``Florence2ForConditionalGeneration`` and ``AutoProcessor``: a BPE
tokenizer trained here with ``tokenizers`` (``<image>`` as the last token, matching the config's
``image_token_id``), ``image_seq_length`` = (size/32)² + 1, and a ``processor_config.json`` with
a ``post_processor_config``. The tokenizer and processor files follow the published files' keys
(``extra_special_tokens`` as a mapping, which transformers 4.x and 5.x both read).

``build_florence2(folder, shape="base")`` builds the real Florence-2-base architecture (DaViT
(128, 256, 512, 1024), BART 6 + 6 layers, d_model 768, vocab padded to 51328, 768² input) with
random weights, for benchmarks: its captions are noise, its cost is the real one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in BART
CORPUS = (
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "What is the text in the image?",
    "a red apple on a white table",
    "a black cat sitting on a wooden chair next to a window",
    "a person wearing a blue jacket standing in front of a building",
    "the image shows a small green car parked on a street with trees",
    "a dog running on the grass in a park on a sunny day",
)


@dataclass(frozen=True)
class Shape:
    size: int  # input side in pixels (a multiple of 32)
    embed_dim: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    num_groups: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    window_size: int
    d_model: int
    layers: int  # encoder and decoder each
    heads: int
    ffn: int
    vocab_size: int | None  # padded model vocabulary; None = the tokenizer's, rounded up to 8
    image_token_id: int | None  # None = right after the trained vocabulary


SHAPES = {
    "tiny": Shape(64, (8, 16, 32, 64), (1, 2, 2, 4), (1, 2, 2, 4), (1, 1, 1, 1), 2, 32, 1, 2, 64, None, None),
    "base": Shape(768, (128, 256, 512, 1024), (4, 8, 16, 32), (4, 8, 16, 32), (1, 1, 9, 1), 12, 768, 6, 12, 3072, 51328, 51289),
}

POST_PROCESSOR_CONFIG = {
    "bboxes": {},
    "description_with_bboxes": {},
    "description_with_bboxes_or_polygons": {},
    "description_with_polygons": {},
    "ocr": {
        "area_threshold": 0.0,
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
    },
    "phrase_grounding": {"banned_grounding_tokens": ["it", "I", "me", "the image", "image", "the", "a", "an"]},
    "polygons": {},
    "pure_text": {},
}

GENERATION_CONFIG = {
    "bos_token_id": 0,
    "decoder_start_token_id": 2,
    "early_stopping": True,
    "eos_token_id": 2,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "no_repeat_ngram_size": 3,
    "num_beams": 3,
    "pad_token_id": 1,
}


def _train_tokenizer(bpe_size: int, pad_to: int | None):
    """A byte-level BPE tokenizer (BART's pre-tokenizer and decoder), optionally padded with unused tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    if pad_to is not None:
        # Unused entries up to the real vocabulary size, as plain vocabulary (no merges reach them).
        data = json.loads(tokenizer.to_str())
        vocab = data["model"]["vocab"]
        next_id = max(vocab.values()) + 1
        while next_id < pad_to:
            vocab[f"<unused_{next_id}>"] = next_id
            next_id += 1
        tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    first = tokenizer.get_vocab_size()
    from tokenizers import AddedToken

    tokenizer.add_special_tokens(
        [AddedToken("<mask>", lstrip=True, normalized=False, special=True), AddedToken("<image>", normalized=False, special=True)]
    )
    return tokenizer, first + 1  # id of <image>


def _tokenizer_config(tokenizer) -> dict:
    added = {}
    for token_id, token in sorted(tokenizer.get_added_tokens_decoder().items()):
        added[str(token_id)] = {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "cls_token": "<s>",
        "eos_token": "</s>",
        "errors": "replace",
        "extra_special_tokens": {"image_token": "<image>"},
        "image_token": "<image>",
        "mask_token": "<mask>",
        "model_max_length": 1024,
        "pad_token": "<pad>",
        "processor_class": "Florence2Processor",
        "sep_token": "</s>",
        "tokenizer_class": "BartTokenizer",
        "trim_offsets": True,
        "unk_token": "<unk>",
    }


def _readable_output(model, tokenizer) -> None:
    """Zero the embedding rows of tokens that are not whole lower-case words, so random weights write words.

    The output head shares these rows, so those tokens score 0 while word tokens score at random;
    end-of-text and the specials keep their rows (captions still end).
    """
    import torch

    keep = {0, 1, 2}
    for token, token_id in tokenizer.get_vocab().items():
        text = tokenizer.decode([token_id])
        if re.fullmatch(r" [a-z]{2,}", text):
            keep.add(token_id)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        mask = torch.zeros(weight.shape[0], dtype=torch.bool)
        mask[sorted(keep)] = True
        weight[~mask] = 0.0


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


LAYOUTS = ("transformers4", "transformers5")


def build_florence2(
    folder: str | Path, *, shape: str = "tiny", seed: int = 0, init_std: float | None = None, layout: str = "transformers4"
) -> Path:
    """Write a Florence-2 model folder (safetensors weights, tokenizer, processor); return it.

    ``layout``: ``transformers4`` writes the image processor to ``preprocessor_config.json`` (as
    the published checkpoints and transformers 4.x do); ``transformers5`` writes it inside
    ``processor_config.json`` under ``image_processor`` and no ``preprocessor_config.json``, as
    ``save_pretrained`` of transformers 5.x does.

    ``init_std`` sets the spread of the random weights; the tiny model's default (0.5) makes
    different images give different captions, and only whole words get non-zero embeddings so
    its captions are readable words (``"the image on the is"``).
    """
    import torch
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    spec = SHAPES[shape]
    if init_std is None:
        init_std = 0.5 if shape == "tiny" else 0.02
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    pad_to = spec.image_token_id - 1 if spec.image_token_id is not None else None
    tokenizer, image_token_id = _train_tokenizer(300, pad_to)
    if spec.image_token_id is not None and image_token_id != spec.image_token_id:
        raise AssertionError(f"<image> landed at {image_token_id}, expected {spec.image_token_id}")
    vocab_size = spec.vocab_size or (tokenizer.get_vocab_size() + 7) // 8 * 8

    seq_len = (spec.size // 32) ** 2 + 1
    text_config = {
        "model_type": "bart",
        "vocab_size": vocab_size,
        "d_model": spec.d_model,
        "encoder_layers": spec.layers,
        "decoder_layers": spec.layers,
        "encoder_attention_heads": spec.heads,
        "decoder_attention_heads": spec.heads,
        "encoder_ffn_dim": spec.ffn,
        "decoder_ffn_dim": spec.ffn,
        "max_position_embeddings": 1024 if shape != "tiny" else 128,
        "init_std": init_std,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_bos_token_id": 0,
        "forced_eos_token_id": 2,
        "scale_embedding": False,
    }
    vision_config = {
        "model_type": "florence_vision",
        "embed_dim": list(spec.embed_dim),
        "num_heads": list(spec.num_heads),
        "num_groups": list(spec.num_groups),
        "depths": list(spec.depths),
        "window_size": spec.window_size,
        "projection_dim": spec.d_model,
        "initializer_range": init_std,
    }
    config = Florence2Config(text_config=text_config, vision_config=vision_config, image_token_id=image_token_id)
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    if shape == "tiny":
        _readable_output(model, tokenizer)
    model.save_pretrained(folder, safe_serialization=True)

    _write_json(folder / "generation_config.json", GENERATION_CONFIG)
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", _tokenizer_config(tokenizer))
    image_processor = {
        "crop_size": {"height": spec.size, "width": spec.size},
        "do_center_crop": False,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "CLIPImageProcessor",
        "image_seq_length": seq_len,
        "image_std": [0.229, 0.224, 0.225],
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"height": spec.size, "width": spec.size},
    }
    processor = {"num_additional_image_tokens": 0, "post_processor_config": POST_PROCESSOR_CONFIG, "processor_class": "Florence2Processor"}
    if layout == "transformers5":
        processor["image_processor"] = image_processor
    else:
        _write_json(folder / "preprocessor_config.json", {**image_processor, "processor_class": "Florence2Processor"})
    _write_json(folder / "processor_config.json", processor)
    return folder
