"""Shared core: errors, model files and downloads, image operations, threads, the report format.

Standard library, numpy and Pillow only; no model runtime and no ComfyUI.
"""
