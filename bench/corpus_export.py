"""Exports one DeepCTR / DeepMatch model as a SavedModel, for bench.corpus.

    TF_USE_LEGACY_KERAS=1 PYTHONPATH=<corpus cache> python -m bench.corpus_export NAME OUT

Run in its own process: DeepCTR needs Keras 2 (tf_keras), which cannot share
a process with Keras 3. Features: Criteo's shape (26 sparse ids of
vocabulary 1000, embedding 8; 13 dense floats), plus a 20-long behaviour
sequence for the sequence models. Embedding tables are redrawn from
N(0, 0.5): DeepCTR initialises them with stddev 1e-4, which would hide an
embedding bug behind outputs that barely depend on the tables. Every other
trainable weight gets noise of its own (see _spread), as training would.
"""
import os
import sys

SPARSE, DENSE, VOCAB, DIM, SEQ = 26, 13, 1000, 8, 20
# name -> how its constructor takes the feature columns
PLAIN = ("WDL", "DeepFM", "DCN", "DCNMix", "xDeepFM", "AutoInt", "NFM", "AFM", "PNN", "FNN", "CCPM", "FiBiNET",
         "FLEN", "IFM", "DIFM", "DeepFEFM", "EDCN", "FwFM", "ONN", "FGCNN", "MLR")
MULTITASK = ("SharedBottom", "ESMM", "MMOE", "PLE")
SEQUENCE = ("DIN", "BST", "DIEN", "DSIN")
MODELS = PLAIN + MULTITASK + SEQUENCE


def build(name):
    import tensorflow as tf
    from deepctr import models
    from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat

    sparse = [SparseFeat(f"C{i}", vocabulary_size=VOCAB, embedding_dim=DIM) for i in range(SPARSE)]
    dense = [DenseFeat(f"I{i}", 1) for i in range(DENSE)]
    model_cls = getattr(models, name)
    if name in ("CCPM", "FGCNN", "AFM", "ONN", "FwFM", "IFM", "DIFM", "FLEN", "DeepFEFM"):
        cols = sparse + dense if name not in ("CCPM", "FGCNN", "AFM", "ONN", "FwFM") else sparse
    else:
        cols = sparse + dense
    if name == "FLEN":
        sparse = [SparseFeat(f"C{i}", vocabulary_size=VOCAB, embedding_dim=DIM, group_name=f"g{i % 3}")
                  for i in range(SPARSE)]
        cols = sparse + dense
    if name == "PNN":  # its only feature-column argument is the DNN's
        model = model_cls(cols)
    elif name in PLAIN:
        model = model_cls(cols, cols) if name not in ("CCPM",) else model_cls(cols, cols, conv_kernel_width=(3, 2))
    elif name in MULTITASK:
        model = model_cls(cols, task_types=["binary", "binary"], task_names=["ctr", "cvr"]) if name != "ESMM" \
            else model_cls(cols, task_types=["binary", "binary"], task_names=["ctr", "ctcvr"])
    else:
        behaviour = ["C0", "C1"]
        seq = [VarLenSparseFeat(SparseFeat(f"hist_{f}", vocabulary_size=VOCAB, embedding_dim=DIM, embedding_name=f),
                                maxlen=SEQ, length_name="seq_length") for f in behaviour]
        cols = cols + seq
        if name == "DSIN":
            sess = [VarLenSparseFeat(SparseFeat(f"sess_0_{f}", vocabulary_size=VOCAB, embedding_dim=DIM,
                                                embedding_name=f), maxlen=SEQ) for f in behaviour]
            cols = sparse + dense + sess
            model = model_cls(cols, behaviour, sess_max_count=1)
        elif name == "DIEN":
            model = model_cls(cols, behaviour, gru_type="AUGRU", use_negsampling=False)
        else:
            model = model_cls(cols, behaviour)
    rng = tf.random.Generator.from_seed(0)
    tables = set()
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Embedding):
            layer.embeddings.assign(rng.normal(layer.embeddings.shape, stddev=0.5))
            tables.add(id(layer.embeddings))
    for var in model.trainable_weights:
        if id(var) not in tables and var.dtype.is_floating:
            var.assign_add(rng.normal(var.shape, stddev=_spread(var), dtype=var.dtype))
    return model


def _spread(var):
    """Noise for a dense weight: half its own spread, or 0.05 where it is
    constant (zero biases, unit gains). DeepCTR seeds every initializer
    with 1024, so untrained towers, experts and cross layers of one shape
    start identical; tf2onnx then shares their initializers and ONNX
    Runtime computes one tower for all (ESMM: 5 MatMuls for 8), which no
    trained model allows."""
    import tensorflow as tf
    std = float(tf.math.reduce_std(var))
    return 0.5 * std if std > 0 else 0.05


def main(name, out):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    model = build(name)
    specs = {i.name.split(":")[0]: tf.TensorSpec([None] + i.shape.as_list()[1:], i.dtype, name=i.name.split(":")[0])
             for i in model.inputs}

    @tf.function(input_signature=[specs])
    def serve(features):
        out = model(features, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return {f"output_{i}": o for i, o in enumerate(outs)}
    tf.saved_model.save(model, out, signatures={"serving_default": serve})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
