"""Model zoo: the seed model families as exportable SavedModels.

export(name, path, size="small"|"medium"|"full") writes a SavedModel with a
`serving_default` signature and a dynamic batch dimension. "full" uses
realistic sizes (benchmarks, `make demo`); "medium" keeps full's layers
with tables and candidate sets 10x smaller (the peer suite, which must
convert every model with tf2onnx); "small" keeps tests fast.
"""
from tf_recopt.zoo.registry import MODELS, export

__all__ = ["MODELS", "export"]
