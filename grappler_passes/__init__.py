"""Graph rewrites over TensorFlow GraphDefs, run by pipeline.run_pipeline."""
from grappler_passes.graph_view import GraphView, GraphValidityError
from grappler_passes.pass_base import GraphPass, PassContext, PassResult
from grappler_passes.pipeline import (DEFAULT_ORDER, UnknownPassError, available_passes,
                                      resolve_passes, run_pipeline)

__all__ = ["GraphView", "GraphValidityError", "GraphPass", "PassContext", "PassResult",
           "DEFAULT_ORDER", "UnknownPassError", "available_passes", "resolve_passes", "run_pipeline"]
