"""The ComfyUI adapters: node classes (one module per model), the host services and tensor conventions.

The only layer that imports ComfyUI modules (through :mod:`.host`, lazily).
"""
