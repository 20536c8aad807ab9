"""The compiled op library (custom_ops/) and its Python-side helpers."""
from tf_recopt.ops._loader import library_path, load_ops

__all__ = ["load_ops", "library_path"]
