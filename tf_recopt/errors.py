"""Errors users see; each message names the path, signature, node or field at fault."""


class RecoptError(Exception):
    """Base class for tf-recopt errors."""


class SavedModelError(RecoptError, ValueError):
    """The input is not a loadable SavedModel, or lacks a requested signature."""


class OpLibraryError(RecoptError, RuntimeError):
    """The custom-op library is missing or was built for another TensorFlow."""


class ParityError(RecoptError, AssertionError):
    """The optimized model's outputs differ from the original beyond tolerance."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report
