"""Models with the real signatures and random or hand-set weights, built on the fly.

For tests, benchmarks and trying the pack without downloading weights. Each builder needs its
format's writer package (``onnx``, ``transformers``/``tokenizers``, ``gguf``), imported when called.
"""
