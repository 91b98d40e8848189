"""ComfyUI entry point of the Cutout Guard node pack (ComfyUI loads this folder as a package).

Imported as a lone file instead — pytest does that with a checkout's root whose folder name is
not a Python name, e.g. ``cutout-guard`` — there is no package to load the nodes from, and
nothing is registered.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY
    from .nodes.comfyui.host import register_model_folders

    register_model_folders()

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
