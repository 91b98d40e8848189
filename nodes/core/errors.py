"""Errors the pack raises on purpose. Each message names what is wrong and how to fix it."""


class CutoutGuardError(Exception):
    """Base class: a problem the user can fix (the message says how)."""


class MissingDependency(CutoutGuardError):
    """A runtime package (onnxruntime, llama-cpp-python, ...) is not installed."""


class ModelMissing(CutoutGuardError):
    """A model file is not where it should be and could not be downloaded."""


class ModelCorrupt(CutoutGuardError):
    """A model file exists but is truncated, corrupt or not the expected model."""


class DeviceUnavailable(CutoutGuardError):
    """A GPU was asked for but the installed runtime cannot use one."""


class BadInput(CutoutGuardError):
    """An input (image, batch, option) cannot be processed as given."""
