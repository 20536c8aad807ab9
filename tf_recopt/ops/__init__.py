"""The compiled op library (custom_ops/) and its Python-side helpers."""
from tf_recopt.ops._loader import built_for_tensorflow, library_path, load_ops

__all__ = ["load_ops", "library_path", "built_for_tensorflow"]
