"""Static shapes and dtypes of a GraphDef's tensors, from TensorFlow's own
shape inference (the graph is imported into a scratch tf.Graph)."""
import tensorflow as tf


def tensor_info(graph_def):
    """tensor name ("node:port") -> (dims list with None where unknown, or
    None for unknown rank; DataType enum). Loads the op library first if
    the graph already holds tf-recopt ops (a re-optimised model)."""
    if any(n.op.startswith("Recopt>") for n in graph_def.node):
        import tf_recopt
        tf_recopt.load_ops()
    info = {}
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        for op in graph.get_operations():
            for port, out in enumerate(op.outputs):
                shape = None if out.shape.rank is None else out.shape.as_list()
                info[f"{op.name}:{port}"] = (shape, out.dtype.as_datatype_enum)
    return info


def _key(tensor):
    return tensor if ":" in tensor else f"{tensor}:0"


def shape_of(info, tensor):
    """Dims of a tensor name (with or without ":0"); None if unknown."""
    return info.get(_key(tensor), (None, None))[0]


def dtype_of(info, tensor):
    return info.get(_key(tensor), (None, None))[1]
