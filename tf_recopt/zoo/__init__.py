"""Model zoo: the seed model families as exportable SavedModels.

export(name, path, size="small"|"full") writes a SavedModel with a
`serving_default` signature and a dynamic batch dimension. "full" uses
realistic sizes (benchmarks, `make demo`), "small" keeps tests fast.
"""
from tf_recopt.zoo.registry import MODELS, export

__all__ = ["MODELS", "export"]
