"""Image-guard model folders in the layout of ``Falconsai/nsfw_image_detection`` (ViT, labels normal/nsfw).

``build_image_guard(folder)`` writes a tiny ViT classifier with random weights (32² input, a few
kilobytes). ``weights="red"`` sets the weights by hand so the answer is known: unsafe exactly when
most of the image's patches are red (their red channel above the mean of green and blue, by more
than a margin). ``shape="base"`` is the real architecture, ViT-B/16 at 224² (86M parameters), with
random weights, for benchmarks.

How the red model works (hidden size 4, one layer, one head): the patch embedding writes
``[d, -d, 0, 0]`` with ``d`` = (red − (green + blue) / 2 − margin) averaged over the patch; the
layer norm before attention turns each patch into ``±√2`` by the sign of ``d``; attention with
zero queries and keys averages every token (the class token contributes zeros) into the class
token; the MLP and position embeddings are zero; the final layer norm again keeps only the sign, and
the classifier reads it. So ``p_unsafe`` is ``sigmoid(2·√2·gain)`` when red patches outnumber the
others, ``sigmoid(-2·√2·gain)`` when they are fewer, and 0.5 on a tie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

LABELS = {0: "normal", 1: "nsfw"}
RED_MARGIN = 0.5  # in normalised units (pixels −1..1): pure red gives d = 2 − 0.5, white −0.5
RED_GAIN = 3.0  # classifier weight: p_unsafe = sigmoid(±2·√2·3) ≈ 0.9998 / 0.0002


@dataclass(frozen=True)
class Shape:
    image_size: int
    patch_size: int
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int


SHAPES = {
    "tiny": Shape(32, 8, 32, 2, 2, 64),
    "red": Shape(32, 8, 4, 1, 1, 4),
    "base": Shape(224, 16, 768, 12, 12, 3072),  # google/vit-base-patch16-224, as the Falconsai model
}


def preprocessor_config(size: int) -> dict:
    """The published file's keys and values, at ``size``."""
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": size, "width": size},
    }


def build_image_guard(folder: str | Path, *, weights: str = "random", shape: str | None = None, seed: int = 0) -> Path:
    """Write the model folder; ``weights`` is ``random`` or ``red`` (the hand-set model above)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    if weights not in ("random", "red"):
        raise ValueError(f"weights must be 'random' or 'red', got {weights!r}")
    dims = SHAPES[shape or ("red" if weights == "red" else "tiny")]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(
        image_size=dims.image_size,
        patch_size=dims.patch_size,
        hidden_size=dims.hidden_size,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        intermediate_size=dims.intermediate_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=dict(LABELS),
        label2id={v: k for k, v in LABELS.items()},
        problem_type="single_label_classification",
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config).eval()
    if weights == "red":
        _set_red_weights(model, dims)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(dims.image_size), indent=2) + "\n")
    return folder


def _set_red_weights(model, dims: Shape) -> None:
    import torch

    if dims.hidden_size != 4 or dims.layers != 1 or dims.heads != 1:
        raise ValueError("the red model needs hidden size 4, one layer and one head")
    area = dims.patch_size * dims.patch_size
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        projection = model.vit.embeddings.patch_embeddings.projection
        for channel, sign in ((0, 1.0), (1, -1.0)):
            projection.weight[channel, 0] = sign / area
            projection.weight[channel, 1] = -0.5 * sign / area
            projection.weight[channel, 2] = -0.5 * sign / area
            projection.bias[channel] = -RED_MARGIN * sign
        named = dict(model.named_parameters())
        for name, parameter in named.items():
            if "layernorm" in name and name.endswith(".weight"):
                parameter.fill_(1.0)  # the two norms of the layer and the final one
        # transformers 5 names the projections v_proj / o_proj, 4.x value / output.dense
        for suffixes in (("v_proj.weight", "attention.value.weight"), ("o_proj.weight", "attention.output.dense.weight")):
            matches = [p for n, p in named.items() if n.endswith(suffixes)]
            if len(matches) != 1:
                raise RuntimeError(f"cannot find the attention weight {suffixes[0]} in this transformers' ViT")
            matches[0].copy_(torch.eye(4))
        model.classifier.weight[0, 0] = -RED_GAIN
        model.classifier.weight[1, 0] = RED_GAIN
