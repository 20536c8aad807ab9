"""tf-recopt: a faster SavedModel with the same signatures and the same answers.

    import tf_recopt
    report = tf_recopt.optimize("/models/ranker/1", "/models/ranker_opt/1")
    print(report)
    tf_recopt.inspect("/models/ranker/1")      # what each pass would do; writes nothing
    tf_recopt.validate("/models/ranker/1", "/models/ranker_opt/1").ok

    tf_recopt.load_ops()              # before loading a custom-op model
    model = tf.saved_model.load("/models/ranker_opt/1")

Attributes are imported lazily (PEP 562) so `tf-recopt --help` and the CLI's
log settings take effect before TensorFlow is imported.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "optimize": "tf_recopt.api",
    "inspect": "tf_recopt.inspection",
    "validate": "tf_recopt.inspection",
    "load_ops": "tf_recopt.ops._loader",
    "library_path": "tf_recopt.ops._loader",
    "OptimizationReport": "tf_recopt.report",
    "ParityError": "tf_recopt.errors",
    "SavedModelError": "tf_recopt.errors",
    "OpLibraryError": "tf_recopt.errors",
    "RecoptError": "tf_recopt.errors",
}
__all__ = sorted(_EXPORTS) + ["register_all", "__version__"]


def __getattr__(name):
    if name == "register_all":
        name = "load_ops"
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tf_recopt' has no attribute {name!r}")
