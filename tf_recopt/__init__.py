"""tf-recopt: a faster SavedModel with the same signatures and the same answers.

    import tf_recopt
    report = tf_recopt.optimize("/models/ranker/1", "/models/ranker_opt/1")
    print(report)

    tf_recopt.load_ops()              # before loading a custom-op model
    model = tf.saved_model.load("/models/ranker_opt/1")
"""
from tf_recopt.api import optimize
from tf_recopt.errors import OpLibraryError, ParityError, RecoptError, SavedModelError
from tf_recopt.ops import library_path, load_ops
from tf_recopt.report import OptimizationReport

__version__ = "0.1.0"
register_all = load_ops

__all__ = ["optimize", "load_ops", "register_all", "library_path", "OptimizationReport", "ParityError",
           "SavedModelError", "OpLibraryError", "RecoptError", "__version__"]
