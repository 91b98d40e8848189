"""Regression: a max_new_tokens beyond the decoder's positions used to crash generation
(IndexError in the position embedding) instead of stopping at the longest caption the model can make."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("transformers")

from cutout_guard.engines.florence2 import Florence2  # noqa: E402
from devtools.synthetic.florence2 import build_florence2  # noqa: E402


def test_max_new_tokens_is_capped_at_the_decoder_positions(tmp_path, caplog):
    model = Florence2.load(build_florence2(tmp_path / "tiny"), precision="fp32", device="cpu")
    limit = model.max_new_tokens_limit
    assert limit == model.model.config.text_config.max_position_embeddings - 1
    rgb = np.random.default_rng(0).random((48, 64, 3)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        caption = model.caption(rgb, max_new_tokens=limit + 200, num_beams=2)
    assert isinstance(caption, str)
    assert f"using {limit}" in caplog.text
