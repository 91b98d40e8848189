"""Model engines: plain Python + numpy + one runtime each; they know nothing of ComfyUI."""
